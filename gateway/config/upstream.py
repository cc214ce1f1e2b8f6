"""The upstream's config shape, apart from `model` so that plugins may hold an upstream
(traffic-split's weighted upstreams) without importing the plugin registry."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

from gateway import variables
from gateway.config.fields import HOST, TOKEN, Host, HostHeader, Id, Labels, Port, Seconds
from gateway.config.health import Checks
from gateway.config.ssl import Pem, check_pair
from gateway.pipeline import Conf, Resource
from gateway.template import Template

_HOST_PORT = re.compile(rf"^({HOST}):([0-9]{{1,5}})\Z")


def split_host_port(text: str, *, allow_port_zero: bool = False) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port); raises ValueError naming the problem.

    Port 0 (any free port) is allowed for listen addresses only.
    """
    m = _HOST_PORT.match(text)
    if m is None:
        raise ValueError(
            "expected `host:port`, the host an ASCII name or an IP address (IPv6 as"
            f" `[::1]:port`), got {text!r}"
        )
    port = int(m.group(2))
    if not (0 if allow_port_zero else 1) <= port <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    return m.group(1).strip("[]"), port


class Timeout(Conf, frozen=True, kw_only=True):
    connect: Seconds = 60.0
    send: Seconds = 60.0
    read: Seconds = 60.0


class KeepalivePool(Conf, frozen=True, kw_only=True):
    size: Annotated[int, msgspec.Meta(ge=0)] = 320
    idle_timeout: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    requests: Annotated[int, msgspec.Meta(ge=1)] = 1000


class Node(Conf, frozen=True, kw_only=True):
    host: Host
    port: Port = 80
    weight: Annotated[int, msgspec.Meta(ge=0)] = 1
    priority: int = 0  # APISIX: lower priorities stand in while every higher node is out


def _check_hash_key(hash_on: str, key: str | None) -> None:
    """APISIX's rules for a `chash` upstream's `key`, by what it hashes on."""
    if hash_on == "consumer":
        return
    if not key:
        raise ValueError(f"a chash upstream hashing on {hash_on} needs `key`")
    if hash_on == "vars" and not variables.known(key):
        raise ValueError(f"chash key {key!r} is not a variable (e.g. `remote_addr`, `arg_id`)")
    if hash_on == "header" and re.fullmatch(TOKEN, key) is None:
        raise ValueError(f"chash key {key!r} is not a header name")
    if hash_on == "vars_combinations":
        names = Template(key).variable_names
        if not names or not all(variables.known(name) for name in names):
            raise ValueError(f"chash key {key!r} must combine known `$variables`")


class UpstreamTls(Conf, frozen=True, kw_only=True):
    """APISIX's upstream `tls`: `verify` the upstream's certificate, and the gateway's own
    (`client_cert`, `client_key`: PEM text) for an upstream that asks for one. APISIX's
    `client_cert_id` (an `ssls` entry of type client) is refused by name: give the pair
    here, from the environment (`$env://NAME`) to keep the key out of the file."""

    verify: bool = False
    client_cert: Pem | None = None
    client_key: Pem | None = None

    def __post_init__(self) -> None:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("`client_cert` and `client_key` go together")
        if self.client_cert is not None and self.client_key is not None:
            check_pair(self.client_cert, self.client_key, "`client_cert` and `client_key`")

    @property
    def client_pair(self) -> tuple[str, str] | None:
        if self.client_cert is None or self.client_key is None:
            return None
        return self.client_cert, self.client_key


class Upstream(Resource, frozen=True, kw_only=True):
    id: Id | None = None
    name: str | None = None
    desc: str | None = None
    labels: Labels = {}
    nodes: dict[str, Annotated[int, msgspec.Meta(ge=0)]] | list[Node]
    type: Literal["roundrobin", "chash", "least_conn", "ewma"] = "roundrobin"
    hash_on: Literal["vars", "header", "cookie", "consumer", "vars_combinations"] = "vars"
    key: str | None = None
    scheme: Literal["http", "https"] = "http"
    tls: UpstreamTls | None = None
    timeout: Timeout = msgspec.field(default_factory=Timeout)
    keepalive_pool: KeepalivePool = msgspec.field(default_factory=KeepalivePool)
    pass_host: Literal["pass", "node", "rewrite"] = "pass"
    upstream_host: HostHeader | None = None
    retries: Annotated[int, msgspec.Meta(ge=0)] | None = None
    retry_timeout: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    checks: Checks | None = None

    def __post_init__(self) -> None:
        if not self.nodes:
            raise ValueError("an upstream needs at least one node")
        if isinstance(self.nodes, dict):
            for address in self.nodes:
                split_host_port(address)
        if not any(weight > 0 for _, _, weight, _ in self.node_list()):
            raise ValueError("an upstream needs a node with a weight above 0")
        if self.pass_host == "rewrite" and not self.upstream_host:
            raise ValueError("pass_host `rewrite` needs `upstream_host`")
        if self.type == "chash":
            _check_hash_key(self.hash_on, self.key)
        if self.tls is not None and self.scheme != "https":
            raise ValueError("`tls` applies to `scheme: https`")
        active = self.checks.active if self.checks is not None else None
        if self.scheme == "https" and active is not None and active.type == "http":
            raise ValueError(
                "active `http` checks would probe an https upstream in plain text: "
                "use `type: https` (or `tcp`)"
            )

    def node_list(self) -> list[tuple[str, int, int, int]]:
        """(host, port, weight, priority) for every node, in config order."""
        if isinstance(self.nodes, dict):
            return [(*split_host_port(a), w, 0) for a, w in self.nodes.items()]
        return [(n.host, n.port, n.weight, n.priority) for n in self.nodes]
