"""Health-check config shapes: an upstream's `checks`, with APISIX's fields and defaults."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from gateway.config.fields import HEADER_TEXT, TOKEN, HostHeader, Port, Seconds
from gateway.pipeline import Conf

Count = Annotated[int, msgspec.Meta(ge=0, le=254)]  # 0: that rule never applies
# `Name: value`, as a probe sends it.
HeaderLine = Annotated[
    str, msgspec.Meta(pattern=TOKEN.removesuffix(r"\Z") + ":" + HEADER_TEXT.pattern[1:])
]
Statuses = Annotated[
    tuple[Annotated[int, msgspec.Meta(ge=200, le=599)], ...], msgspec.Meta(min_length=1)
]


# Between two probes of a node: APISIX takes whole seconds from 1; fractions down to 0.1.
Interval = Annotated[float, msgspec.Meta(ge=0.1)]


class ActiveHealthy(Conf, frozen=True, kw_only=True):
    interval: Interval = 1.0
    successes: Count = 2
    http_statuses: Statuses = (200, 302)


class ActiveUnhealthy(Conf, frozen=True, kw_only=True):
    interval: Interval = 1.0
    http_statuses: Statuses = (429, 404, 500, 501, 502, 503, 504, 505)
    http_failures: Count = 5
    tcp_failures: Count = 2
    timeouts: Count = 3


class ActiveCheck(Conf, frozen=True, kw_only=True):
    """APISIX's `checks.active`: probes each node on its own."""

    type: Literal["http", "https", "tcp"] = "http"
    timeout: Seconds = 1.0
    concurrency: Annotated[int, msgspec.Meta(ge=1)] = 10
    host: HostHeader | None = None
    port: Port | None = None
    http_path: Annotated[str, msgspec.Meta(pattern=r"^/[\x21-\x7e]*\Z")] = "/"
    req_headers: list[HeaderLine] = []
    https_verify_certificate: bool = True
    healthy: ActiveHealthy = msgspec.field(default_factory=ActiveHealthy)
    unhealthy: ActiveUnhealthy = msgspec.field(default_factory=ActiveUnhealthy)


class PassiveHealthy(Conf, frozen=True, kw_only=True):
    http_statuses: Statuses = (*range(200, 209), 226, *range(300, 309))
    successes: Count = 5


class PassiveUnhealthy(Conf, frozen=True, kw_only=True):
    http_statuses: Statuses = (429, 500, 503)
    http_failures: Count = 5
    tcp_failures: Count = 2
    timeouts: Count = 7


class PassiveCheck(Conf, frozen=True, kw_only=True):
    """APISIX's `checks.passive`: judges nodes by the proxied requests' outcomes."""

    type: Literal["http", "tcp"] = "http"
    healthy: PassiveHealthy = msgspec.field(default_factory=PassiveHealthy)
    unhealthy: PassiveUnhealthy = msgspec.field(default_factory=PassiveUnhealthy)


class Checks(Conf, frozen=True, kw_only=True):
    """APISIX's `checks`: `active` is required, as there (a node that passive checks take
    out would otherwise never come back)."""

    active: ActiveCheck
    passive: PassiveCheck | None = None
