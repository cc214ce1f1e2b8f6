"""file-logger: one JSON line per request of the route in a file, as APISIX's plugin.

The line is APISIX's log entry or the route's `log_format` (see `gateway.logentry`, which
also keeps credentials out); `match` chooses the requests (rules as a route's `vars`).
Priority 399, log phase. The file is opened for each line (appending): a rotated file is
started anew, and nothing stays open across reloads.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import msgspec

from gateway.context import RequestContext
from gateway.pipeline import PluginEnv
from gateway.plugins.loggers import LoggerConf, LoggerPlugin

log = logging.getLogger("gateway")
_encode = msgspec.json.Encoder().encode


class FileLoggerConf(LoggerConf, frozen=True, kw_only=True):
    path: Annotated[str, msgspec.Meta(min_length=1)]


class FileLogger(LoggerPlugin):
    name = "file-logger"
    priority = 399
    Conf = FileLoggerConf

    def __init__(self, conf: FileLoggerConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.path = conf.path
        self._failed = False

    def emit(self, entry: dict[str, Any], ctx: RequestContext, now: float) -> None:
        try:
            with open(self.path, "ab", buffering=0) as f:
                f.write(_encode(entry) + b"\n")
        except OSError as exc:
            if not self._failed:  # said once: a full disk must not flood the error log
                self._failed = True
                log.error("file-logger cannot write %s: %s", self.path, exc.strerror)
