"""mocking: answer for an API that is not built yet, as APISIX's plugin does.

`response_example` (with `$variables`) or, without one, data made up from
`response_schema` (a JSON schema: objects with their properties, arrays of 1 to 3 items
or `minItems` to `maxItems`, strings, numbers, integers and booleans, a property's
`example` used as it is), encoded as JSON (or as `<data>` XML when `content_type` names
XML). `response_status`, `content_type`, `response_headers`, `delay` seconds, and an
`X-Mock-By` header unless `with_mock_header` is false. Priority 10900, access.
"""

from __future__ import annotations

import json
import random
import string
from typing import Annotated, Any
from xml.sax.saxutils import escape

import msgspec

from gateway.config.fields import TOKEN
from gateway.context import RequestContext
from gateway.http.replies import Header, Reply
from gateway.pipeline import Plugin, PluginConf, PluginEnv
from gateway.template import config_template

MOCK_BY = (b"x-mock-by", b"trio-gateway")
_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean"})


def _check_schema(schema: Any, where: str = "response_schema") -> None:
    if not isinstance(schema, dict):
        raise ValueError(f"{where} must be an object")
    kind = schema.get("type", "object")
    if kind not in _TYPES:
        raise ValueError(f"{where}.type must be one of {', '.join(sorted(_TYPES))}")
    if kind == "object":
        properties = schema.get("properties", {})
        if not isinstance(properties, dict):
            raise ValueError(f"{where}.properties must be an object")
        for name, prop in properties.items():
            _check_schema(prop, f"{where}.properties.{name}")
    elif kind == "array":
        _check_schema(schema.get("items", {"type": "string"}), f"{where}.items")


class MockingConf(PluginConf, frozen=True, kw_only=True):
    delay: Annotated[float, msgspec.Meta(ge=0)] = 0
    response_status: Annotated[int, msgspec.Meta(ge=100, le=599)] = 200
    content_type: Annotated[str, msgspec.Meta(pattern=r"^[\x20-\x7e]+\Z")] = (
        "application/json;charset=utf8"
    )
    response_example: str | None = None
    response_schema: dict[str, Any] | None = None
    with_mock_header: bool = True
    response_headers: (
        Annotated[
            dict[Annotated[str, msgspec.Meta(pattern=TOKEN)], str | int | float],
            msgspec.Meta(min_length=1),
        ]
        | None
    ) = None

    def __post_init__(self) -> None:
        if self.response_example is None and self.response_schema is None:
            raise ValueError("takes `response_example` or `response_schema`")
        if self.response_schema is not None:
            _check_schema(self.response_schema)


def made_up(schema: dict[str, Any]) -> Any:
    """A value of the shape `schema` describes, its `example`s used as they are."""
    if "example" in schema:
        return schema["example"]
    kind = schema.get("type", "object")
    if kind == "object":
        return {name: made_up(prop) for name, prop in schema.get("properties", {}).items()}
    if kind == "array":
        low = int(schema.get("minItems", 1))
        high = max(low, int(schema.get("maxItems", 3)))
        items = schema.get("items", {"type": "string"})
        return [made_up(items) for _ in range(random.randint(low, high))]
    if kind == "string":
        return "".join(random.choices(string.ascii_letters, k=random.randint(1, 10)))
    if kind == "integer":
        return random.randint(0, 100)
    if kind == "number":
        return round(random.uniform(0, 100), 2)
    return random.random() < 0.5


def _xml(value: Any, tag: str) -> str:
    if isinstance(value, dict):
        inner = "".join(_xml(v, k) for k, v in value.items())
    elif isinstance(value, list):
        return "".join(_xml(v, tag) for v in value)
    else:
        inner = escape(json.dumps(value) if isinstance(value, bool) else str(value))
    return f"<{tag}>{inner}</{tag}>"


class Mocking(Plugin):
    name = "mocking"
    priority = 10900
    Conf = MockingConf

    def __init__(self, conf: MockingConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.sleep = env.limits.sleep
        self.delay = conf.delay
        self.status = conf.response_status
        self.example = (
            config_template(conf.response_example) if conf.response_example is not None else None
        )
        self.schema = conf.response_schema
        self.xml = "xml" in conf.content_type.lower()
        headers: list[Header] = [(b"content-type", conf.content_type.encode())]
        if conf.with_mock_header:
            headers.append(MOCK_BY)
        for name, value in (conf.response_headers or {}).items():
            headers.append((name.lower().encode(), str(value).encode()))
        self.headers = headers

    async def access(self, ctx: RequestContext) -> Reply:
        if self.example is not None:
            body = self.example.render(ctx).encode("latin-1")
        else:
            assert self.schema is not None
            data = made_up(self.schema)
            body = (_xml(data, "data") if self.xml else json.dumps(data)).encode()
        if self.delay > 0:
            await self.sleep(self.delay)
        return Reply(self.status, list(self.headers), body)
