"""real-ip: take the client's address from a header a trusted proxy sets, as APISIX's
plugin (and nginx's realip module) do.

Priority 23000, the first rewrite hook: every later plugin (limit-count keys, ip-restriction,
chash on `remote_addr`), the access log and the upstream's `X-Real-IP` / `X-Forwarded-For`
see the address it sets. Route matching on `remote_addrs` has already used the peer's.

`source` is a request variable (`http_x_real_ip`, `arg_ip`, ...). For
`http_x_forwarded_for` it is the last address of the last such header or, with
`recursive`, the last one that is not itself in `trusted_addresses`. A value that is not an
address (`ip`, `ip:port`, `[ipv6]:port` or a bare IPv6 address) changes nothing.
**(ours, stricter)** `trusted_addresses` is required: APISIX without it lets any client
choose its address, which the gateway never does (SPEC: client-sent forwarding headers are
never trusted). List the proxies in front of the gateway (`0.0.0.0/0` and `::/0` to trust
every peer, knowingly).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

import msgspec

from gateway.addresses import NetworkSet
from gateway.context import RequestContext
from gateway.pipeline import Plugin, PluginConf, PluginEnv
from gateway.variables import getter, known

XFF = b"x-forwarded-for"
_SEPARATOR = re.compile(r",\s*")
# `ip:port` or `[ipv6]:port`, `[ipv6]`.
_WITH_PORT = re.compile(r"^(?:\[([0-9A-Fa-f:.]+)\]|([0-9.]+))(?::([0-9]{1,5}))?\Z")


class RealIpConf(PluginConf, frozen=True, kw_only=True):
    source: Annotated[str, msgspec.Meta(min_length=1)]
    trusted_addresses: Annotated[list[str], msgspec.Meta(min_length=1)] | None = None
    recursive: bool = False

    def __post_init__(self) -> None:
        if self.trusted_addresses is None:
            raise ValueError(
                "needs `trusted_addresses`, the proxies whose header is believed "
                "(without it any client could choose its address)"
            )
        for entry in self.trusted_addresses:
            try:
                NetworkSet([entry])
            except ValueError:
                raise ValueError(f"invalid ip address: {entry}") from None
        if not known(self.source):
            raise ValueError(f"unknown variable {self.source!r} as `source`")


def parse_address(text: str) -> tuple[str, int | None] | None:
    """(address, port or None) from `text`, or None when it is not one."""
    text = text.strip()
    try:
        return str(ipaddress.ip_address(text)), None
    except ValueError:
        pass
    m = _WITH_PORT.match(text)
    if m is None:
        return None
    try:
        address = ipaddress.ip_address(m[1] or m[2])
    except ValueError:
        return None
    if m[1] is not None and address.version != 6:
        return None
    port = int(m[3]) if m[3] is not None else None
    if port is not None and not 1 <= port <= 65535:
        return None
    return str(address), port


class RealIp(Plugin):
    name = "real-ip"
    priority = 23000
    Conf = RealIpConf

    def __init__(self, conf: RealIpConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.trusted = NetworkSet(conf.trusted_addresses or ())
        self.forwarded_for = conf.source == "http_x_forwarded_for"
        self.recursive = conf.recursive
        self.read = getter(conf.source)

    def rewrite(self, ctx: RequestContext) -> None:
        if ctx.remote_addr not in self.trusted:
            return
        value = self._forwarded_for(ctx) if self.forwarded_for else self.read(ctx)
        if not value:
            return
        parsed = parse_address(value)
        if parsed is None:
            return
        ctx.remote_addr, port = parsed
        if port is not None:
            ctx.remote_port = port

    def _forwarded_for(self, ctx: RequestContext) -> str | None:
        last = None
        for name, value in ctx.headers:
            if name == XFF:
                last = value
        if last is None:
            return None
        addresses = _SEPARATOR.split(last.decode("latin-1").strip())
        if self.recursive:
            for address in reversed(addresses[1:]):
                if address not in self.trusted:
                    return address
            return addresses[0]
        return addresses[-1]
