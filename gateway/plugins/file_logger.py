"""file-logger: one JSON line per request of the route in a file, as APISIX's plugin.

The line is APISIX's log entry or the route's `log_format` (see `gateway.logentry`, which
also keeps credentials out). `match`: only requests its rules hold for (rules as a route's
`vars`). APISIX's `include_req_body` and `include_resp_body` would hold bodies the gateway
streams: only `false` is taken. Priority 399, log phase. The file is opened for each line
(appending): a rotated file is started anew, and nothing stays open across reloads.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

import msgspec

from gateway.context import RequestContext
from gateway.expr import compile_vars
from gateway.logentry import SecretNames, custom_format, full_entry
from gateway.pipeline import Plugin, PluginConf, PluginEnv

log = logging.getLogger("gateway")
_encode = msgspec.json.Encoder().encode


class FileLoggerConf(PluginConf, frozen=True, kw_only=True):
    path: Annotated[str, msgspec.Meta(min_length=1)]
    log_format: dict[str, Any] | None = None
    include_req_body: Literal[False] = False
    include_resp_body: Literal[False] = False
    match: list[Any] | None = None

    def __post_init__(self) -> None:
        if self.match is not None:
            compile_vars(self.match)


class FileLogger(Plugin):
    name = "file-logger"
    priority = 399
    Conf = FileLoggerConf

    def __init__(self, conf: FileLoggerConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.path = conf.path
        self.now = env.now
        self.secrets: SecretNames = env.secrets or SecretNames()
        self.match = compile_vars(conf.match) if conf.match is not None else None
        self.custom = (
            custom_format(conf.log_format, self.secrets) if conf.log_format is not None else None
        )
        self.hostname = env.hostname
        self._failed = False

    def log(self, ctx: RequestContext) -> None:
        if self.match is not None and not self.match(ctx):
            return
        now = self.now()
        entry = (
            self.custom(ctx, now)
            if self.custom is not None
            else full_entry(ctx, now, self.hostname, self.secrets)
        )
        try:
            # Opened per line, appending: nothing is held across reloads, and a file that
            # log rotation moved away is started anew at once (one write, no buffering).
            with open(self.path, "ab", buffering=0) as f:
                f.write(_encode(entry) + b"\n")
        except OSError as exc:
            if not self._failed:  # said once: a full disk must not flood the error log
                self._failed = True
                log.error("file-logger cannot write %s: %s", self.path, exc.strerror)
