"""Loggers for log stores, as APISIX's plugins of the same names: each request's entry
(APISIX's, or `log_format` / `plugin_metadata`; see `plugins.loggers`, which keeps
credentials out) goes in batches through `gateway.logship` (APISIX's batch processor
fields), in the document each store takes:

- `loki-logger` (414): `POST <endpoint>/loki/api/v1/push`, `{"streams": [{"stream":
  labels, "values": [[ns, line], ...]}]}`; `log_labels` values may hold `$variables`,
  read per request (entries with other labels go in another stream of the same push);
  `tenant_id` as `X-Scope-OrgID`. `timeout` in ms.
- `elasticsearch-logger` (413): `POST <endpoint>/_bulk`, NDJSON of a `create` line
  (`field.index`, `field.type`) and the entry per request; `auth` as HTTP Basic; a status
  other than 200 fails the batch.
- `splunk-hec-logging` (409): `POST endpoint.uri` with `Authorization: Splunk <token>`
  (and `endpoint.channel`), one HEC event per request: `{"time", "host", "source":
  "apache-apisix-splunk-hec-logging", "sourcetype": "_json", "event": entry}`.
- `clickhouse-logger` (398): `POST <endpoint>` of `INSERT INTO <logtable> FORMAT
  JSONEachRow` and the entries, as `user` / `password` (`X-ClickHouse-User` / `-Key`) in
  `database`.

With several `endpoint_addrs`, each batch goes to one picked at random, as in APISIX.
Credentials (passwords, tokens) are never in an error line nor a conf's repr.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable
from typing import Annotated, Any

import msgspec

from gateway.config.fields import HeaderText
from gateway.context import RequestContext
from gateway.logentry import started_at
from gateway.logship import BatchQueue
from gateway.pipeline import Conf, PluginEnv
from gateway.plugins.loggers import LoggerConf, QueuedLogger
from gateway.template import Template

_encode = msgspec.json.Encoder().encode
Positive = Annotated[int, msgspec.Meta(ge=1)]
Endpoint = Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s/?#]+[^\s?#]*[^/\s?#]\Z")]
Endpoints = Annotated[list[Endpoint], msgspec.Meta(min_length=1)]
Secret = Annotated[str, msgspec.Meta(min_length=1)]


class CollectorConf(LoggerConf, frozen=True, kw_only=True):
    """APISIX's batch processor fields, as each of these plugins has them."""

    batch_max_size: Positive = 1000
    inactive_timeout: Positive = 5
    buffer_duration: Positive = 60
    max_retry_count: Annotated[int, msgspec.Meta(ge=0)] = 0
    retry_delay: Annotated[int, msgspec.Meta(ge=0)] = 1

    def __repr__(self) -> str:  # credentials stay out of any output
        return f"{type(self).__name__}(name={getattr(self, 'name', '')!r})"


class EitherAddressConf(CollectorConf, frozen=True, kw_only=True):
    """A conf with APISIX's older `endpoint_addr` beside `endpoint_addrs`."""

    endpoint_addr: Endpoint | None = None
    endpoint_addrs: Endpoints | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.endpoint_addr is None) == (self.endpoint_addrs is None):
            raise ValueError("takes exactly one of `endpoint_addr` and `endpoint_addrs`")

    @property
    def addresses(self) -> list[str]:
        return [self.endpoint_addr] if self.endpoint_addr else list(self.endpoint_addrs or [])


class CollectorQueue(BatchQueue):
    """A queue posting to one of the conf's `addresses` (picked per batch) + `path`."""

    path = ""

    def endpoint(self) -> str:
        return str(random.choice(self.conf.addresses)) + self.path


# --- loki-logger ------------------------------------------------------------------------


class LokiLoggerConf(CollectorConf, frozen=True, kw_only=True):
    endpoint_addrs: Endpoints
    endpoint_uri: Annotated[str, msgspec.Meta(pattern=r"^/")] = "/loki/api/v1/push"
    tenant_id: HeaderText | None = None
    log_labels: dict[str, Annotated[str, msgspec.Meta(min_length=1)]] = msgspec.field(
        default_factory=lambda: {"job": "apisix"}
    )
    ssl_verify: bool = False
    timeout: Annotated[int, msgspec.Meta(ge=1, le=60000)] = 3000
    keepalive: bool = True
    keepalive_timeout: Annotated[int, msgspec.Meta(ge=1000)] = 60000
    keepalive_pool: Positive = 5
    name: str = "loki logger"

    @property
    def addresses(self) -> list[str]:
        return list(self.endpoint_addrs)


class LokiQueue(CollectorQueue):
    label = "loki-logger"

    def __init__(self, conf: LokiLoggerConf) -> None:
        super().__init__(conf)
        self.path = conf.endpoint_uri

    def timeout_s(self) -> float:
        return float(self.conf.timeout) / 1000

    def request_headers(self) -> list[tuple[str, str]]:
        headers = [("content-type", "application/json")]
        if self.conf.tenant_id is not None:
            headers.append(("x-scope-orgid", self.conf.tenant_id))
        return headers

    def accepted(self, status: int) -> bool:
        return status < 300

    def body(self, batch: list[Any]) -> bytes:
        streams: dict[tuple[tuple[str, str], ...], list[list[str]]] = {}
        for labels, when, entry in batch:
            streams.setdefault(labels, []).append([when, _encode(entry).decode()])
        return _encode(
            {
                "streams": [
                    {"stream": dict(labels), "values": values} for labels, values in streams.items()
                ]
            }
        )


class LokiLogger(QueuedLogger):
    name = "loki-logger"
    priority = 414
    Conf = LokiLoggerConf
    queue_kind = LokiQueue

    def __init__(self, conf: LokiLoggerConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        # Each label's value: fixed text, or read from the request (`$var`, `${var}` in
        # text); an absent variable leaves the label's text as written, as in APISIX.
        self.labels: list[tuple[str, Callable[[RequestContext], str]]] = [
            (name, _label_value(value)) for name, value in conf.log_labels.items()
        ]

    def queued(self, entry: dict[str, Any], ctx: RequestContext, now: float) -> Any:
        labels = tuple((name, value(ctx)) for name, value in self.labels)
        start_ns = round(started_at(ctx, now) * 1000) * 1_000_000
        if "route_id" not in entry:
            entry["route_id"] = "no-matched"
        return labels, str(start_ns), entry


def _label_value(text: str) -> Callable[[RequestContext], str]:
    template = Template(text)
    return lambda ctx: template.render(ctx) or text


# --- elasticsearch-logger ---------------------------------------------------------------


class EsField(Conf, frozen=True, kw_only=True):
    index: Annotated[str, msgspec.Meta(min_length=1)]
    type: str | None = None


class EsAuth(Conf, frozen=True, kw_only=True):
    username: Secret
    password: Secret


class ElasticsearchLoggerConf(EitherAddressConf, frozen=True, kw_only=True):
    field: EsField
    auth: EsAuth | None = None
    timeout: Positive = 10
    ssl_verify: bool = True
    name: str = "elasticsearch-logger"


class ElasticsearchQueue(CollectorQueue):
    label = "elasticsearch-logger"
    path = "/_bulk"

    def __init__(self, conf: ElasticsearchLoggerConf) -> None:
        super().__init__(conf)
        action: dict[str, str] = {"_index": conf.field.index}
        if conf.field.type is not None:
            action["_type"] = conf.field.type
        self.action = _encode({"create": action}) + b"\n"
        self.headers = [("content-type", "application/x-ndjson")]
        if conf.auth is not None:
            pair = f"{conf.auth.username}:{conf.auth.password}".encode()
            self.headers.append(("authorization", "Basic " + base64.b64encode(pair).decode()))

    def request_headers(self) -> list[tuple[str, str]]:
        return self.headers

    def accepted(self, status: int) -> bool:
        return status == 200

    def body(self, batch: list[Any]) -> bytes:
        action = self.action
        return b"".join(action + _encode(entry) + b"\n" for entry in batch)


class ElasticsearchLogger(QueuedLogger):
    name = "elasticsearch-logger"
    priority = 413
    Conf = ElasticsearchLoggerConf
    queue_kind = ElasticsearchQueue


# --- splunk-hec-logging -----------------------------------------------------------------


class SplunkEndpoint(Conf, frozen=True, kw_only=True):
    uri: Endpoint
    token: Secret
    channel: HeaderText | None = None
    timeout: Positive = 10
    keepalive: bool = True
    keepalive_timeout: Positive = 60000
    keepalive_pool: Positive = 5


class SplunkHecLoggingConf(CollectorConf, frozen=True, kw_only=True):
    endpoint: SplunkEndpoint
    ssl_verify: bool = True
    name: str = "splunk-hec-logging"


class SplunkQueue(CollectorQueue):
    label = "splunk-hec-logging"

    def __init__(self, conf: SplunkHecLoggingConf) -> None:
        super().__init__(conf)
        self.headers = [
            ("content-type", "application/json"),
            ("authorization", "Splunk " + conf.endpoint.token),
        ]
        if conf.endpoint.channel is not None:
            self.headers.append(("x-splunk-request-channel", conf.endpoint.channel))

    def endpoint(self) -> str:
        return str(self.conf.endpoint.uri)

    def timeout_s(self) -> float:
        return float(self.conf.endpoint.timeout)

    def request_headers(self) -> list[tuple[str, str]]:
        return self.headers

    def body(self, batch: list[Any]) -> bytes:
        return b"".join(_encode(event) for event in batch)


class SplunkHecLogging(QueuedLogger):
    name = "splunk-hec-logging"
    priority = 409
    Conf = SplunkHecLoggingConf
    queue_kind = SplunkQueue

    def __init__(self, conf: SplunkHecLoggingConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.host = env.hostname

    def queued(self, entry: dict[str, Any], ctx: RequestContext, now: float) -> Any:
        return {
            "time": round(started_at(ctx, now), 3),
            "host": self.host,
            "source": "apache-apisix-splunk-hec-logging",
            "sourcetype": "_json",
            "event": entry,
        }


# --- clickhouse-logger ------------------------------------------------------------------


class ClickhouseLoggerConf(EitherAddressConf, frozen=True, kw_only=True):
    user: HeaderText = ""
    password: HeaderText = ""
    database: HeaderText = ""
    logtable: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_.]*\Z")]
    timeout: Positive = 3
    ssl_verify: bool = True
    name: str = "clickhouse logger"


class ClickhouseQueue(CollectorQueue):
    label = "clickhouse-logger"

    def __init__(self, conf: ClickhouseLoggerConf) -> None:
        super().__init__(conf)
        self.headers = [
            ("content-type", "application/json"),
            ("x-clickhouse-user", conf.user),
            ("x-clickhouse-key", conf.password),
            ("x-clickhouse-database", conf.database),
        ]
        self.insert = f"INSERT INTO {conf.logtable} FORMAT JSONEachRow ".encode()

    def request_headers(self) -> list[tuple[str, str]]:
        return self.headers

    def accepted(self, status: int) -> bool:
        return status < 300

    def body(self, batch: list[Any]) -> bytes:
        return self.insert + b" ".join(_encode(entry) for entry in batch)


class ClickhouseLogger(QueuedLogger):
    name = "clickhouse-logger"
    priority = 398
    Conf = ClickhouseLoggerConf
    queue_kind = ClickhouseQueue
