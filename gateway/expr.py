"""APISIX's `vars` expressions (lua-resty-expr): conditions on request variables.

A route's `vars` is a list of rules that must all hold, or a logical expression:
`[["arg_name", "==", "json"], ["http_x_canary", "~~", "^1$"]]`,
`["OR", ["arg_a", "==", "1"], ["!AND", ...]]`. A rule is `[variable, operator, value]`, or
`[variable, "!", operator, value]` for its negation, or `[variable, value]` for `==`; a
list of rules inside a list is one more AND. Operators, as lua-resty-expr's: `==` and `~=`
(numeric when the value is a number: a variable that is not a number is never `==` it and
always `~=` it), `>`, `>=`, `<`, `<=` (numeric), `~~` and `~*` (a regex search, the second
ignoring case), `in` (one of a list), `ipmatch` (an address in one of a list of IPs or CIDR
networks). An absent variable is JSON `null`: `["arg_debug", "==", null]` holds when there
is no `debug` argument. **(ours, stricter)** What APISIX would let silently never match is
refused at load: an unknown variable, a non-numeric bound, `in` without a list.

Compiled once at load into one callable; a bad rule raises ValueError naming where it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from gateway.addresses import NetworkSet
from gateway.context import RequestContext
from gateway.patterns import IGNORECASE, Pattern, PatternError
from gateway.variables import getter, known

Check = Callable[[RequestContext], bool]
Test = Callable[[str | None], bool]

_LOGICAL = frozenset(("AND", "OR", "!AND", "!OR"))


def compile_vars(rule: Any) -> Check:
    """The check for a `vars` value; raises ValueError."""
    if not isinstance(rule, list):
        raise ValueError("`vars` must be a list of rules or a logical expression")
    if rule and _is_logical(rule[0]):
        return _logical(rule, "")
    if rule and not isinstance(rule[0], list):
        raise ValueError("`vars` must be a list of rules: wrap a single rule in brackets")
    return _all(rule, "")


def compile_any(expressions: list[Any]) -> Check:
    """Holds when any of several `vars` values does (none of an empty list); raises
    ValueError naming the one that is bad."""
    checks = []
    for i, expression in enumerate(expressions):
        try:
            checks.append(compile_vars(expression))
        except ValueError as exc:
            raise ValueError(f"[{i}]: {exc}") from None
    if len(checks) == 1:
        return checks[0]
    return lambda ctx: any(check(ctx) for check in checks)


def _is_logical(word: Any) -> bool:
    return isinstance(word, str) and word.upper() in _LOGICAL


def _all(items: list[Any], where: str) -> Check:
    checks = [_expression(item, f"{where}[{i}]") for i, item in enumerate(items)]
    if not checks:
        return lambda ctx: True
    if len(checks) == 1:
        return checks[0]
    return lambda ctx: all(check(ctx) for check in checks)


def _expression(item: Any, where: str) -> Check:
    if not isinstance(item, list) or not item:
        raise ValueError(f'vars{where}: expected a rule such as ["arg_name", "==", "v"]')
    if _is_logical(item[0]):
        return _logical(item, where)
    if isinstance(item[0], list):
        return _all(item, where)
    return _rule(item, where)


def _logical(item: list[Any], where: str) -> Check:
    operator, *operands = item
    operator = operator.upper()
    if len(operands) < 2:
        raise ValueError(f"vars{where}: {operator} needs at least two rules")
    checks = [_expression(sub, f"{where}[{i + 1}]") for i, sub in enumerate(operands)]
    negate = operator.startswith("!")
    if operator.endswith("AND"):
        return lambda ctx: all(check(ctx) for check in checks) is not negate
    return lambda ctx: any(check(ctx) for check in checks) is not negate


def _rule(item: list[Any], where: str) -> Check:
    if len(item) == 4 and item[1] == "!":
        name, _, operator, value = item
        negate = True
    elif len(item) == 3:
        name, operator, value = item
        negate = False
    elif len(item) == 2:
        (name, value), operator, negate = item, "==", False
    else:
        raise ValueError(
            f"vars{where}: a rule is [variable, operator, value] or"
            ' [variable, "!", operator, value]'
        )
    if not isinstance(name, str) or not known(name):
        raise ValueError(f"vars{where}: unknown variable {name!r}")
    if isinstance(operator, str):
        operator = operator.lower()
    if not isinstance(operator, str) or operator not in _OPERATORS:
        raise ValueError(
            f"vars{where}: unknown operator {operator!r} (one of {', '.join(_OPERATORS)})"
        )
    try:
        test = _OPERATORS[operator](value)
    except ValueError as exc:
        raise ValueError(f"vars{where}: {exc}") from None
    read = getter(name)
    if negate:
        return lambda ctx: not test(read(ctx))
    return lambda ctx: test(read(ctx))


def _number(text: str | None) -> float | None:
    """Lua's `tonumber` of a variable: decimal or hexadecimal, spaces around allowed."""
    if text is None:
        return None
    text = text.strip()
    try:
        if text[:2].lower() in ("0x", "-0", "+0") and "x" in text[:3].lower():
            return float(int(text, 16))
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(value: Any) -> Test:
    if _is_number(value):
        return lambda var: (n := _number(var)) is not None and n == value
    return lambda var: var == value


def _not_equal(value: Any) -> Test:
    if _is_number(value):
        return lambda var: (n := _number(var)) is None or n != value
    return lambda var: var != value


def _numeric(compare: Callable[[float, float], bool]) -> Callable[[Any], Test]:
    def make(value: Any) -> Test:
        if _is_number(value):
            bound = float(value)
        elif isinstance(value, str) and _number(value) is not None:
            bound = _number(value)  # type: ignore[assignment]
        else:
            raise ValueError(f"a number to compare with, got {value!r}")
        return lambda var: (n := _number(var)) is not None and compare(n, bound)

    return make


def _regex(flags: int) -> Callable[[Any], Test]:
    def make(value: Any) -> Test:
        if not isinstance(value, str):
            raise ValueError(f"a regular expression, got {value!r}")
        try:
            pattern = Pattern(value, flags)
        except PatternError as exc:
            raise ValueError(f"bad regular expression {value!r}: {exc}") from None
        return lambda var: var is not None and pattern.search(var) is not None

    return make


def _in(value: Any) -> Test:
    if not isinstance(value, list):
        raise ValueError(f"`in` takes a list, got {value!r}")
    choices = tuple(value)
    return lambda var: var is not None and any(var == choice for choice in choices)


def _ipmatch(value: Any) -> Test:
    addresses = [value] if isinstance(value, str) else value
    if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
        raise ValueError(f"`ipmatch` takes an address or a list of them, got {value!r}")
    try:
        nets = NetworkSet(addresses)
    except ValueError as exc:
        raise ValueError(f"`ipmatch`: {exc}") from None
    return lambda var: var in nets


_OPERATORS: dict[str, Callable[[Any], Test]] = {
    "==": _equal,
    "~=": _not_equal,
    ">": _numeric(lambda a, b: a > b),
    ">=": _numeric(lambda a, b: a >= b),
    "<": _numeric(lambda a, b: a < b),
    "<=": _numeric(lambda a, b: a <= b),
    "~~": _regex(0),
    "~*": _regex(IGNORECASE),
    "in": _in,
    "ipmatch": _ipmatch,
}
