"""Config patterns: compiled with `regex`, each match bounded in time (gateway.patterns)."""

from __future__ import annotations

import pytest

from gateway.patterns import (
    BODY_BUDGET,
    REQUEST_BUDGET,
    Pattern,
    PatternError,
    PatternTimeout,
    any_of,
)

HOSTILE = "a" * 40 + "!"  # `(a|aa)+$` tries about 1.6**40 ways before it gives up


def test_each_match_is_bounded() -> None:
    pattern = Pattern("(a|aa)+$")
    assert pattern.search("baa") is not None
    for match in (pattern.search, pattern.fullmatch, lambda text: pattern.sub("x", text)):
        with pytest.raises(PatternTimeout, match=r"'\(a\|aa\)\+\$' ran past 0.1 s"):
            match(HOSTILE)


def test_cases_that_re_backtracks_on_are_fast_here() -> None:
    """`regex` sidesteps many catastrophic cases outright (`re` takes a minute on each)."""
    assert Pattern(r"^(\w+\s?)*$").search("a" * 30 + "!") is None
    assert Pattern(r"(.*)/admin/(.*)").search("a" * 8000) is None


def test_pcre_syntax_and_errors() -> None:
    """APISIX's patterns are PCRE's: `(?<name>...)`, possessive and atomic groups."""
    assert Pattern(r"^/(?<v>v\d++)/(?>users)$").fullmatch("/v2/users")["v"] == "v2"  # type: ignore[index]
    with pytest.raises(PatternError):
        Pattern("(unclosed")
    with pytest.raises(ValueError, match="invalid rule '\\[a'"):
        any_of(["ok", "[a"], "rule")
    assert REQUEST_BUDGET < BODY_BUDGET
