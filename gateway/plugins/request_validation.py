"""request-validation: check the request's headers and body against JSON Schemas, as
APISIX's plugin does.

`header_schema` sees the headers as an object of strings (a repeated header: a list of
them). Names match the schema's top-level `required` and `properties` names whatever their
case, and `_` stands for `-`, as with nginx's header table. `body_schema` sees the body
decoded: form arguments for `application/x-www-form-urlencoded` (a value, a list for a
repeated name, `true` for a name without `=`), JSON otherwise. A JSON body goes upstream
re-encoded from what was checked, the schema's defaults filled in, so that the upstream
cannot read it differently (duplicate keys, say). A refusal is `rejected_code` (400) with
`rejected_msg`, or else the validator's reason, as plain text; an empty body is refused
with `rejected_msg` only. Priority 2800, rewrite: before authentication.

The schemas are compiled into Python functions at load (fastjsonschema: drafts 4, 6 and 7,
as APISIX's validator); a `$ref` must point inside the schema. (ours) A body is read whole
up to 8 MiB; a larger one gets 413.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Annotated, Any
from urllib.parse import unquote_plus

import fastjsonschema
import msgspec

from gateway.context import RequestContext, add_repeated
from gateway.http.replies import Reply, status_reply
from gateway.patterns import Pattern, PatternError
from gateway.pipeline import Plugin, PluginConf, PluginEnv

log = logging.getLogger(__name__)

MAX_BODY = 8 * 1024 * 1024
FORM = b"application/x-www-form-urlencoded"
TEXT_PLAIN = (b"content-type", b"text/plain")

Validator = Callable[[Any], Any]


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def compile_schema(schema: dict[str, Any]) -> Validator:
    """The schema's validator; ValueError for a schema that is not one (or reaches out)."""
    for ref in _refs(schema):
        if not ref.startswith("#"):
            raise ValueError(f"$ref {ref!r} points outside the schema")
    try:
        validator: Validator = fastjsonschema.compile(schema)
    except Exception as exc:  # the library raises whatever its parts raise
        raise ValueError(f"not a valid JSON Schema: {exc}") from None
    # The generated code matches `pattern`s, `patternProperties` and `format`s through
    # this table of `re` patterns: bound each match in time (see `gateway.patterns`).
    table = validator.__globals__["REGEX_PATTERNS"]
    for key, compiled in table.items():
        try:
            table[key] = Pattern(compiled.pattern)
        except PatternError as exc:
            raise ValueError(f"not a valid JSON Schema: pattern {key!r}: {exc}") from None
    return validator


def header_name(name: str) -> str:
    return name.lower().replace("_", "-")


def decode_form(body: bytes) -> dict[str, Any]:
    """Form arguments as nginx's `ngx.decode_args` gives them."""
    args: dict[str, Any] = {}
    for part in body.decode("latin-1").split("&"):
        if not part:
            continue
        raw_name, eq, raw_value = part.partition("=")
        name = unquote_plus(raw_name)
        add_repeated(args, name, unquote_plus(raw_value) if eq else True)
    return args


class RequestValidationConf(PluginConf, frozen=True, kw_only=True):
    header_schema: dict[str, Any] | None = None
    body_schema: dict[str, Any] | None = None
    rejected_code: Annotated[int, msgspec.Meta(ge=200, le=599)] = 400
    rejected_msg: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None

    def __post_init__(self) -> None:
        if self.header_schema is None and self.body_schema is None:
            raise ValueError("needs `header_schema` or `body_schema`")
        for field, schema in (
            ("header_schema", self.header_schema),
            ("body_schema", self.body_schema),
        ):
            if schema is not None:
                try:
                    compile_schema(schema)
                except ValueError as exc:
                    raise ValueError(f"`{field}`: {exc}") from None


class RequestValidation(Plugin):
    name = "request-validation"
    priority = 2800
    Conf = RequestValidationConf

    def __init__(self, conf: RequestValidationConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.code = conf.rejected_code
        self.fixed = self._refusal(conf.rejected_msg) if conf.rejected_msg is not None else None
        self.bare = self.fixed or status_reply(conf.rejected_code)
        self.too_large = status_reply(413)
        self.check_headers: Validator | None = None
        self.spelled: dict[str, str] = {}
        if conf.header_schema is not None:
            self.check_headers = compile_schema(conf.header_schema)
            named = [
                *conf.header_schema.get("required", ()),
                *conf.header_schema.get("properties", ()),
            ]
            for name in named:
                if isinstance(name, str) and header_name(name) != name:
                    self.spelled.setdefault(header_name(name), name)
        self.check_body: Validator | None = None
        if conf.body_schema is not None:
            self.check_body = compile_schema(conf.body_schema)
        else:
            self.rewrite = self._rewrite_headers  # type: ignore[method-assign,assignment]

    def _refusal(self, text: str) -> Reply:
        return Reply(self.code, [TEXT_PLAIN], text.encode())

    def _refuse(self, reason: str) -> Reply:
        if self.fixed is not None:
            return self.fixed
        return self._refusal(reason)

    def _headers(self, ctx: RequestContext) -> dict[str, Any]:
        headers: dict[str, Any] = {}
        spelled = self.spelled
        for raw_name, raw_value in ctx.headers:
            name = raw_name.decode("latin-1")
            add_repeated(headers, spelled.get(name, name), raw_value.decode("latin-1"))
        return headers

    def _rewrite_headers(self, ctx: RequestContext) -> Reply | None:
        assert self.check_headers is not None
        try:
            self.check_headers(self._headers(ctx))
        except fastjsonschema.JsonSchemaValueException as exc:
            log.info("request-validation: headers refused: %s", exc.message)
            return self._refuse(exc.message)
        return None

    async def rewrite(self, ctx: RequestContext) -> Reply | None:
        if self.check_headers is not None and (refused := self._rewrite_headers(ctx)):
            return refused
        assert self.check_body is not None
        body = ctx.body
        if body is None:
            body = await ctx.request_body.read_whole(MAX_BODY)
            if body is None:
                return self.too_large
            ctx.body = body
        if not body:
            return self.bare
        content_type = ctx.header(b"content-type") or b""
        is_form = content_type.partition(b";")[0].strip().lower() == FORM
        if is_form:
            data: Any = decode_form(body)
        else:
            try:
                data = msgspec.json.decode(body)
            except msgspec.DecodeError as exc:
                return self._refuse(f"invalid JSON: {exc}")
        try:
            self.check_body(data)
        except fastjsonschema.JsonSchemaValueException as exc:
            log.info("request-validation: body refused: %s", exc.message)
            return self._refuse(exc.message)
        if not is_form:
            ctx.body = msgspec.json.encode(data)
        return None
