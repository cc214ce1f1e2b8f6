"""request-id: an id on every request, as APISIX's plugin gives it.

Priority 12015, rewrite: a request without `header_name` (or with it empty) gets one, which
the upstream receives; a client's own id is kept. With `include_in_response` the client
gets it back on every answer of the route, the gateway's own included, unless the
upstream's answer carries a non-empty id of its own.

Algorithms: `uuid` (version 4), `nanoid` (21 URL-safe characters), `ksuid` (27 base62
characters: a seconds timestamp and 128 random bits, sortable by time), `range_id`
(`length` characters drawn from `char_set`). Ids identify requests; they are not secrets,
so `range_id` draws from a fast non-cryptographic generator, as APISIX's `math.random`.
"""

from __future__ import annotations

import random
import secrets
import uuid
from collections.abc import Callable
from typing import Annotated, Literal

import msgspec

from gateway.config.fields import HeaderName
from gateway.context import RequestContext
from gateway.pipeline import Conf, Header, Plugin, PluginConf, PluginEnv

NANOID_ALPHABET = "_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
KSUID_EPOCH = 1_400_000_000
# APISIX's default set (its `GKL` for `JKL` kept, so ids look the same).
DEFAULT_CHAR_SET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIGKLMNOPQRSTUVWXYZ0123456789"


class RangeId(Conf, frozen=True, kw_only=True):
    length: Annotated[int, msgspec.Meta(ge=6)] = 16
    # Printable ASCII only: the id goes into heads as it is.
    char_set: Annotated[str, msgspec.Meta(min_length=6, pattern=r"^[\x21-\x7e]+\Z")] = (
        DEFAULT_CHAR_SET
    )


class RequestIdConf(PluginConf, frozen=True, kw_only=True):
    header_name: HeaderName = "X-Request-Id"
    include_in_response: bool = True
    algorithm: Literal["uuid", "nanoid", "range_id", "ksuid"] = "uuid"
    range_id: RangeId = msgspec.field(default_factory=RangeId)


def _uuid() -> bytes:
    return str(uuid.uuid4()).encode()


def _nanoid() -> bytes:
    return "".join([secrets.choice(NANOID_ALPHABET) for _ in range(21)]).encode()


def _ksuid(now: float) -> bytes:
    value = (int(now) - KSUID_EPOCH) << 128 | int.from_bytes(secrets.token_bytes(16))
    digits = []
    while value:
        value, digit = divmod(value, 62)
        digits.append(BASE62[digit])
    return "".join(reversed(digits)).rjust(27, "0").encode()


def _range_id(conf: RangeId) -> Callable[[], bytes]:
    draw = random.Random().choices
    chars, length = conf.char_set, conf.length
    return lambda: "".join(draw(chars, k=length)).encode()


class RequestId(Plugin):
    name = "request-id"
    priority = 12015
    Conf = RequestIdConf

    def __init__(self, conf: RequestIdConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.header = conf.header_name.lower().encode()
        if conf.algorithm == "range_id":
            self.generate = _range_id(conf.range_id)
        elif conf.algorithm == "ksuid":
            clock = env.now  # the wall clock, injected
            self.generate = lambda: _ksuid(clock())
        else:
            self.generate = _nanoid if conf.algorithm == "nanoid" else _uuid
        if conf.include_in_response:
            # A function of the header's name only: a bound method kept on the plugin
            # would hold it in a reference cycle (freed by the collector, not on reload).
            self.header_filter = _give_back(self.header)

    def rewrite(self, ctx: RequestContext) -> None:
        if ctx.header(self.header):
            return
        ctx.remove_header(self.header)  # an empty one is replaced
        ctx.headers.append((self.header, self.generate()))


def _give_back(name: bytes) -> Callable[[RequestContext, int, list[Header]], None]:
    """The header filter: the request's id on the answer, unless the upstream set one."""

    def give_back(ctx: RequestContext, status: int, headers: list[Header]) -> None:
        for n, v in headers:
            if n == name and v:
                return  # the upstream's own id
        request_id = ctx.header(name)
        if request_id:
            headers[:] = [h for h in headers if h[0] != name]
            headers.append((name, request_id))

    return give_back
