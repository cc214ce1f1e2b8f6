"""Regular expressions from the config, matched against what clients send.

Python's `re` has no bound on backtracking: `(a|aa)+$` searched in thirty-six `a` and a `!`
holds the interpreter for seconds, and each character more multiplies that by 1.6, while
the worker serves no one else. APISIX's PCRE stops at its match limit and fails the match;
here every config pattern is compiled with the `regex` module (which also sidesteps many
such cases, `^(\\w+\\s?)*$` among them) and each match gets a time budget: past it
`PatternTimeout` is raised, and the request is answered 500, as nginx answers a failed
PCRE match in its config (see `downstream`). The gateway's own patterns stay `re`: they
are written not to backtrack.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

import regex

# Per match against a request's path, headers or variables (PCRE's default limit of ten
# million steps is about this long), and against a whole response body (up to 8 MiB).
REQUEST_BUDGET: Final = 0.1
BODY_BUDGET: Final = 1.0

IGNORECASE: Final = regex.IGNORECASE
MULTILINE: Final = regex.MULTILINE
DOTALL: Final = regex.DOTALL
VERBOSE: Final = regex.VERBOSE
Match = regex.Match


class PatternTimeout(Exception):
    """A config pattern ran past its time budget on one input."""


class PatternError(ValueError):
    """A config pattern that does not compile."""


class Pattern:
    """A compiled config pattern whose matches are bounded in time."""

    __slots__ = ("_budget", "_compiled", "source")

    def __init__(self, source: str, flags: int = 0, budget: float = REQUEST_BUDGET) -> None:
        try:
            self._compiled = regex.compile(source, flags)
        except regex.error as exc:
            raise PatternError(str(exc)) from None
        self.source = source
        self._budget = budget

    def search(self, text: str) -> regex.Match[str] | None:
        try:
            return self._compiled.search(text, timeout=self._budget)
        except TimeoutError:
            raise PatternTimeout(self._overrun()) from None

    def match(self, text: str) -> regex.Match[str] | None:
        try:
            return self._compiled.match(text, timeout=self._budget)
        except TimeoutError:
            raise PatternTimeout(self._overrun()) from None

    def fullmatch(self, text: str) -> regex.Match[str] | None:
        try:
            return self._compiled.fullmatch(text, timeout=self._budget)
        except TimeoutError:
            raise PatternTimeout(self._overrun()) from None

    def sub(
        self, replacement: str | Callable[[regex.Match[str]], str], text: str, count: int = 0
    ) -> str:
        try:
            return self._compiled.sub(replacement, text, count=count, timeout=self._budget)
        except TimeoutError:
            raise PatternTimeout(self._overrun()) from None

    def _overrun(self) -> str:
        return f"the pattern {self.source!r} ran past {self._budget:g} s on one input"


def any_of(patterns: Iterable[str], what: str, flags: int = 0) -> Pattern:
    """One pattern matching where any of `patterns` does (APISIX joins such lists with
    `|`); ValueError naming the first one that does not compile."""
    patterns = list(patterns)
    for source in patterns:
        try:
            regex.compile(source, flags)
        except regex.error as exc:
            raise ValueError(f"invalid {what} {source!r}: {exc}") from None
    return Pattern("|".join(f"(?:{p})" for p in patterns), flags)
