"""Route `vars` expressions, case by case after lua-resty-expr's behaviour."""

from __future__ import annotations

import re
from typing import Any

import pytest

from gateway.context import RequestContext
from gateway.expr import compile_vars


def ctx(
    target: bytes = b"/",
    headers: list[tuple[bytes, bytes]] | None = None,
    method: bytes = b"GET",
    remote: str = "127.0.0.1",
    host: bytes = b"api.example.com",
) -> RequestContext:
    c = RequestContext(method, target, headers or [], b"1.1", remote, 50000, 9080, 0.0)
    c.host = host
    return c


def holds(rule: Any, request: RequestContext) -> bool:
    return compile_vars(rule)(request)


@pytest.mark.parametrize(
    ("rule", "request_", "expected"),
    [
        ([["arg_name", "==", "json"]], ctx(b"/?name=json"), True),
        ([["arg_name", "==", "json"]], ctx(b"/?name=xml"), False),
        ([["arg_name", "==", "json"]], ctx(b"/"), False),
        ([["arg_name", "json"]], ctx(b"/?name=json"), True),
        ([["arg_name", "!", "==", "json"]], ctx(b"/?name=xml"), True),
        ([["arg_name", "!", "==", "json"]], ctx(b"/?name=json"), False),
        ([["arg_name", "~=", "json"]], ctx(b"/"), True),
        ([["arg_debug", "==", None]], ctx(b"/"), True),
        ([["arg_debug", "==", None]], ctx(b"/?debug=1"), False),
        ([["arg_age", ">", 18]], ctx(b"/?age=20"), True),
        ([["arg_age", ">", 18]], ctx(b"/?age=18"), False),
        ([["arg_age", ">=", "18"]], ctx(b"/?age=18"), True),
        ([["arg_age", "<", 18]], ctx(b"/?age=abc"), False),
        ([["arg_age", "<=", 18]], ctx(b"/"), False),
        ([["arg_age", "==", 20]], ctx(b"/?age=20.0"), True),
        ([["arg_age", "==", 20]], ctx(b"/?age=0x14"), True),
        ([["arg_age", "==", 20]], ctx(b"/?age=twenty"), False),
        ([["arg_age", "~=", 20]], ctx(b"/?age=twenty"), True),
        ([["arg_age", "~=", 20]], ctx(b"/?age=20"), False),
        ([["arg_age", "==", "20"]], ctx(b"/?age=20.0"), False),
        ([["http_x_canary", "==", "1"]], ctx(headers=[(b"x-canary", b"1")]), True),
        ([["http_X_Canary", "==", "1"]], ctx(headers=[(b"x-canary", b"1")]), True),
        ([["http_x_canary", "==", "1"]], ctx(), False),
        ([["uri", "~~", "^/api/v[0-9]+/"]], ctx(b"/api/v2/users"), True),
        ([["uri", "~~", "^/api/v[0-9]+/"]], ctx(b"/api/vx/users"), False),
        ([["http_user_agent", "~*", "curl"]], ctx(headers=[(b"user-agent", b"CURL/8")]), True),
        ([["http_user_agent", "~~", "curl"]], ctx(headers=[(b"user-agent", b"CURL/8")]), False),
        ([["http_user_agent", "~~", "curl"]], ctx(), False),
        ([["request_method", "in", ["GET", "HEAD"]]], ctx(method=b"HEAD"), True),
        ([["request_method", "IN", ["GET", "HEAD"]]], ctx(method=b"POST"), False),
        ([["cookie_ab", "==", "b"]], ctx(headers=[(b"cookie", b"x=1; ab=b")]), True),
        ([["host", "==", "api.example.com"]], ctx(), True),
        ([["remote_addr", "ipmatch", ["10.0.0.0/8", "127.0.0.1"]]], ctx(), True),
        ([["remote_addr", "ipmatch", "10.0.0.0/8"]], ctx(), False),
        ([], ctx(), True),
    ],
)
def test_rules(rule: Any, request_: RequestContext, expected: bool) -> None:
    assert holds(rule, request_) is expected


def test_every_rule_of_a_list_must_hold() -> None:
    rule = [["arg_a", "==", "1"], ["arg_b", "==", "2"]]
    assert holds(rule, ctx(b"/?a=1&b=2"))
    assert not holds(rule, ctx(b"/?a=1&b=3"))
    assert not holds(rule, ctx(b"/?b=2"))


@pytest.mark.parametrize(
    ("target", "expected"),
    [(b"/?a=1", True), (b"/?b=1", True), (b"/?a=1&b=1", True), (b"/?c=1", False)],
)
def test_logical_expressions(target: bytes, expected: bool) -> None:
    either = ["OR", ["arg_a", "==", "1"], ["arg_b", "==", "1"]]
    assert holds(either, ctx(target)) is expected
    assert holds(["!OR", ["arg_a", "==", "1"], ["arg_b", "==", "1"]], ctx(target)) is not expected
    assert holds([either], ctx(target)) is expected
    assert holds(["or", ["arg_a", "==", "1"], ["arg_b", "==", "1"]], ctx(target)) is expected


def test_nested_logic() -> None:
    rule = [
        ["AND", ["arg_x", "==", "1"], ["OR", ["arg_y", "==", "1"], ["arg_z", "==", "1"]]],
        ["!AND", ["arg_q", "==", "1"], ["arg_r", "==", "1"]],
        [["arg_x", "~~", "^[0-9]$"], ["arg_x", "!", "~~", "^0$"]],
    ]
    assert holds(rule, ctx(b"/?x=1&z=1&q=1"))
    assert not holds(rule, ctx(b"/?x=1&z=1&q=1&r=1"))
    assert not holds(rule, ctx(b"/?x=1"))


@pytest.mark.parametrize(
    ("rule", "says"),
    [
        ({"arg_a": "1"}, "must be a list"),
        (["arg_a", "==", "1"], "wrap a single rule"),
        ([["arg_a", "===", "1"]], "unknown operator '==='"),
        ([["arg_a", "!", "===", "1"]], "unknown operator"),
        ([["arg_a", "x", "==", "1"]], "vars[0]: a rule is"),
        ([["arg_a", "==", "1", "2", "3"]], "a rule is"),
        ([["nonsense_var", "==", "1"]], "unknown variable 'nonsense_var'"),
        ([[1, "==", "1"]], "unknown variable"),
        ([["arg_a", "~~", "(unclosed"]], "bad regular expression"),
        ([["arg_a", "~~", 1]], "a regular expression"),
        ([["arg_a", ">", "many"]], "a number to compare with"),
        ([["arg_a", "in", "GET"]], "`in` takes a list"),
        ([["remote_addr", "ipmatch", ["10.0.0.0/33"]]], "`ipmatch`"),
        ([["arg_a", "has", "x"]], "unknown operator 'has'"),
        (["OR", ["arg_a", "==", "1"]], "OR needs at least two rules"),
        ([["arg_a", "==", "1"], "arg_b"], "vars[1]: expected a rule"),
        ([["OR", ["arg_a", "==", "1"], ["arg_b", "=", "1"]]], "vars[0][2]: unknown operator"),
    ],
)
def test_bad_rules_are_refused_naming_where(rule: Any, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        compile_vars(rule)
