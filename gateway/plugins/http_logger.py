"""http-logger: each request's log entry posted in batches to a collector, as APISIX's.

The entry is APISIX's (or `log_format`, see `gateway.logentry`, which keeps credentials
out); batches go as one JSON array (`concat_method: json`) or one entry per line
(`new_line`), with `auth_header` as their Authorization, through `gateway.logship`
(APISIX's batch processor fields: `batch_max_size`, `inactive_timeout`, `buffer_duration`,
`max_retry_count`, `retry_delay`). Priority 410, log phase; the request never waits.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from gateway.plugins.loggers import LoggerConf, QueuedLogger

Seconds = Annotated[int, msgspec.Meta(ge=1)]


class HttpLoggerConf(LoggerConf, frozen=True, kw_only=True):
    uri: Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s/?#]+[^\s]*\Z")]
    auth_header: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    timeout: Seconds = 3
    concat_method: Literal["json", "new_line"] = "json"
    ssl_verify: bool = False
    name: Annotated[str, msgspec.Meta(min_length=1)] = "http logger"
    batch_max_size: Annotated[int, msgspec.Meta(ge=1)] = 1000
    inactive_timeout: Seconds = 5
    buffer_duration: Seconds = 60
    max_retry_count: Annotated[int, msgspec.Meta(ge=0)] = 0
    retry_delay: Annotated[int, msgspec.Meta(ge=0)] = 1

    def __repr__(self) -> str:  # the collector's credentials stay out of any output
        return f"HttpLoggerConf(name={self.name!r})"


class HttpLogger(QueuedLogger):
    name = "http-logger"
    priority = 410
    Conf = HttpLoggerConf
