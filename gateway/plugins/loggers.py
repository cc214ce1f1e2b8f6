"""What file-logger and http-logger share: the conf fields of an APISIX logger and the log
hook that builds each request's entry (`gateway.logentry`) for the plugin's `emit`."""

from __future__ import annotations

from typing import Any, Literal

from gateway.context import RequestContext
from gateway.expr import compile_vars
from gateway.logentry import SecretNames, custom_format, full_entry
from gateway.pipeline import Plugin, PluginConf, PluginEnv


class LoggerConf(PluginConf, frozen=True, kw_only=True):
    log_format: dict[str, Any] | None = None
    # APISIX's body options would hold bodies the gateway streams: only `false` is taken.
    include_req_body: Literal[False] = False
    include_resp_body: Literal[False] = False
    match: list[Any] | None = None

    def __post_init__(self) -> None:
        if self.match is not None:
            compile_vars(self.match)


class LoggerPlugin(Plugin):
    """A plugin that writes one entry per request it is on (`match` rules holding)."""

    def __init__(self, conf: LoggerConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.now = env.now
        secrets: SecretNames = env.secrets or SecretNames()
        self.match = compile_vars(conf.match) if conf.match is not None else None
        if conf.log_format is not None:
            self.entry = custom_format(conf.log_format, secrets)
        else:
            hostname = env.hostname
            self.entry = lambda ctx, now: full_entry(ctx, now, hostname, secrets)

    def log(self, ctx: RequestContext) -> None:
        if self.match is not None and not self.match(ctx):
            return
        self.emit(self.entry(ctx, self.now()))

    def emit(self, entry: dict[str, Any]) -> None:
        raise NotImplementedError
