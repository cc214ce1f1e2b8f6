"""attach-consumer-label: pass consumer labels upstream as headers the upstream can trust.

`headers` maps a header name to `$label`. The header is set from the authenticated
consumer's label, and removed when the label, the labels or the consumer is missing, so a
client-sent copy never reaches the upstream.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from gateway.config.fields import HeaderName
from gateway.context import RequestContext
from gateway.pipeline import Plugin, PluginConf, PluginEnv

LabelRef = Annotated[str, msgspec.Meta(pattern=r"^\$.+\Z")]


class AttachConsumerLabelConf(PluginConf, frozen=True, kw_only=True):
    headers: Annotated[dict[HeaderName, LabelRef], msgspec.Meta(min_length=1)]


class AttachConsumerLabel(Plugin):
    name = "attach-consumer-label"
    priority = 2399
    Conf = AttachConsumerLabelConf

    def __init__(self, conf: AttachConsumerLabelConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.pairs = tuple((n.lower().encode("latin-1"), v[1:]) for n, v in conf.headers.items())
        self.names = frozenset(n for n, _ in self.pairs)

    def before_proxy(self, ctx: RequestContext) -> None:
        headers = ctx.headers
        headers[:] = [h for h in headers if h[0] not in self.names]
        consumer = ctx.consumer
        if consumer is None:
            return
        labels = consumer.label_bytes
        for name, label in self.pairs:
            value = labels.get(label)
            if value is not None:
                headers.append((name, value))
