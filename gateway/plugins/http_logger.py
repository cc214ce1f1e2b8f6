"""http-logger: each request's log entry posted in batches to a collector, as APISIX's.

The entry is APISIX's (or `log_format`, see `gateway.logentry`, which keeps credentials
out); batches go as one JSON array (`concat_method: json`) or one entry per line
(`new_line`), with `auth_header` as their Authorization, through `gateway.logship`
(APISIX's batch processor fields: `batch_max_size`, `inactive_timeout`, `buffer_duration`,
`max_retry_count`, `retry_delay`). Priority 410, log phase; the request never waits.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from gateway.context import RequestContext
from gateway.expr import compile_vars
from gateway.logentry import SecretNames, custom_format, full_entry
from gateway.pipeline import Plugin, PluginConf, PluginEnv

Seconds = Annotated[int, msgspec.Meta(ge=1)]


class HttpLoggerConf(PluginConf, frozen=True, kw_only=True):
    uri: Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s/?#]+[^\s]*\Z")]
    auth_header: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    timeout: Seconds = 3
    log_format: dict[str, Any] | None = None
    include_req_body: Literal[False] = False
    include_resp_body: Literal[False] = False
    concat_method: Literal["json", "new_line"] = "json"
    ssl_verify: bool = False
    name: Annotated[str, msgspec.Meta(min_length=1)] = "http logger"
    batch_max_size: Annotated[int, msgspec.Meta(ge=1)] = 1000
    inactive_timeout: Seconds = 5
    buffer_duration: Seconds = 60
    max_retry_count: Annotated[int, msgspec.Meta(ge=0)] = 0
    retry_delay: Annotated[int, msgspec.Meta(ge=0)] = 1
    match: list[Any] | None = None

    def __post_init__(self) -> None:
        if self.match is not None:
            compile_vars(self.match)

    def __repr__(self) -> str:  # the collector's credentials stay out of any output
        return f"HttpLoggerConf(name={self.name!r})"


class HttpLogger(Plugin):
    name = "http-logger"
    priority = 410
    Conf = HttpLoggerConf

    def __init__(self, conf: HttpLoggerConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.queue = env.loggers.queue(env.scope, conf)
        self.now = env.now
        self.secrets: SecretNames = env.secrets or SecretNames()
        self.hostname = env.hostname
        self.match = compile_vars(conf.match) if conf.match is not None else None
        self.custom = (
            custom_format(conf.log_format, self.secrets) if conf.log_format is not None else None
        )

    def log(self, ctx: RequestContext) -> None:
        if self.match is not None and not self.match(ctx):
            return
        now = self.now()
        self.queue.push(
            self.custom(ctx, now)
            if self.custom is not None
            else full_entry(ctx, now, self.hostname, self.secrets)
        )
