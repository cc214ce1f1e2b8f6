"""batch-requests: several requests in one POST, each served by the gateway as if the
client had sent it, their answers back as one JSON array (APISIX's plugin, served by
public-api at `/apisix/batch-requests`).

The body is `{"pipeline": [{"method", "path", "query", "headers", "body"}, ...], "query",
"headers", "timeout"}`. Each sub-request takes the batch's `headers` and `query` where it
has none of its own, and the batch request's own headers but its `Content-*` and
hop-by-hop ones (so its Host routes it, and its key authenticates it). Every sub-request is
checked before any is sent, then they run one after another, each on a connection of its
own served in this process from the client's address (APISIX sends them to its own port
from 127.0.0.1): route rules, authentication and limits apply as to any request. Each
answer is `{"status", "reason", "headers", "body"}`; one that takes longer than `timeout`
ms is `{"status": 504, "reason": "upstream timeout"}`. **(ours)** Once the client has
closed its connection, the items not yet sent are not sent.

Bounded: the batch body by `plugin_metadata` `max_body_size` (1 MiB; 413 past it), its
items by `max_pipeline_items` (1000), and **(ours)** the answers' bodies together by
`MAX_ANSWERS` (past it an answer is `{"status": 502, "reason": "response too large"}`).
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import quote

import h11
import msgspec

from gateway.context import RequestContext
from gateway.http.replies import Header, Reply, error_msg, json_reply, status_reply
from gateway.subrequest import exchange

URI = b"/apisix/batch-requests"
DEFAULT_MAX_BODY = 1024 * 1024
DEFAULT_MAX_ITEMS = 1000
MAX_ANSWERS = 16 * 1024 * 1024
CLIENT_GONE = status_reply(499)  # nginx's "client closed the connection", for the log
# Not passed on from the batch request: its framing and connection handling.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"expect",
    }
)

Scalar = str | int | float | bool
HeaderValue = str | int | float | list[str]


class Item(msgspec.Struct, kw_only=True):
    version: float = 1.1
    method: Literal[
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE"
    ] = "GET"
    path: Annotated[str, msgspec.Meta(min_length=1)]
    query: dict[str, Scalar | list[Scalar]] | None = None
    headers: dict[str, HeaderValue] | None = None
    body: str | None = None
    ssl_verify: bool = False  # APISIX's field; sub-requests never leave the process


class Batch(msgspec.Struct, kw_only=True):
    query: dict[str, Scalar | list[Scalar]] | None = None
    headers: dict[str, HeaderValue] | None = None
    timeout: Annotated[int, msgspec.Meta(ge=1)] = 30000
    pipeline: Annotated[list[Item], msgspec.Meta(min_length=1)]


class BadBatch(Exception):
    """The batch cannot be run as sent (400)."""


def _arg(key: str, value: Scalar) -> str | None:
    """One `key=value` as ngx.encode_args writes it: `true` is the key alone, `false` none."""
    if value is True:
        return quote(key, safe="")
    if value is False:
        return None
    return f"{quote(key, safe='')}={quote(str(value), safe='')}"


def _target(item: Item, common: dict[str, Scalar | list[Scalar]] | None) -> bytes:
    query = dict(common or {})
    query.update(item.query or {})
    args = []
    for key, value in query.items():
        for one in value if isinstance(value, list) else [value]:
            arg = _arg(key, one)
            if arg is not None:
                args.append(arg)
    target = item.path
    if args:
        target += ("&" if "?" in target else "?") + "&".join(args)
    try:
        return target.encode("ascii")
    except UnicodeEncodeError:
        raise BadBatch(f"path {item.path!r} is not ASCII (percent-encode it)") from None


def _lines(headers: dict[str, HeaderValue] | None) -> dict[bytes, list[bytes]]:
    """Header lines by lower-cased name, but the framing ones the gateway writes itself."""
    out: dict[bytes, list[bytes]] = {}
    for name, value in (headers or {}).items():
        key = name.lower().encode("latin-1", "replace")
        if key in _HOP_BY_HOP or key == b"content-length":
            continue
        values = value if isinstance(value, list) else [value]
        out[key] = [str(v).encode("latin-1", "replace") for v in values]
    return out


def sub_requests(batch: Batch, outer: list[Header]) -> list[tuple[Item, h11.Connection, bytes]]:
    """Each item as the bytes of its request (with `Connection: close`) and the h11 client
    that wrote them, to read the answer; raises BadBatch naming the item when one cannot be
    a request."""
    common = _lines(batch.headers)
    passed = [(n, v) for n, v in outer if not n.startswith(b"content-") and n not in _HOP_BY_HOP]
    out = []
    for index, item in enumerate(batch.pipeline):
        try:
            if item.version not in (1.0, 1.1):
                raise BadBatch("version must be 1.0 or 1.1")
            own = _lines(item.headers)
            headers = [(n, v) for n, values in own.items() for v in values]
            headers += [(n, v) for n, values in common.items() if n not in own for v in values]
            taken = own.keys() | common.keys()
            headers += [(n, v) for n, v in passed if n not in taken]
            body = item.body.encode() if item.body is not None else b""
            if body or item.method in ("POST", "PUT", "PATCH"):
                headers.append((b"content-length", str(len(body)).encode()))
            headers.append((b"connection", b"close"))
            conn = h11.Connection(h11.CLIENT)
            request = h11.Request(
                method=item.method, target=_target(item, batch.query), headers=headers
            )
            data = conn.send(request) or b""
            if body:
                data += conn.send(h11.Data(data=body)) or b""
            data += conn.send(h11.EndOfMessage()) or b""
        except (BadBatch, h11.LocalProtocolError) as exc:
            raise BadBatch(f"pipeline[{index}]: {exc}") from None
        out.append((item, conn, data))
    return out


async def run(ctx: RequestContext, max_body: int, max_items: int) -> Reply:
    """The batch request's answer."""
    body = ctx.body
    if body is None:
        body = await ctx.request_body.read_whole(max_body)
    if body is None:
        length = ctx.request_body.length
        what = f"request size {length}" if length else "request body"
        return error_msg(413, f"{what} is greater than the maximum size {max_body} allowed")
    if not body:
        return error_msg(400, "no request body, you should give at least one pipeline setting")
    try:
        batch = msgspec.json.decode(body, type=Batch)
    except msgspec.ValidationError as exc:
        return error_msg(400, f"bad request body: {exc}")
    except msgspec.DecodeError as exc:
        return error_msg(400, f"invalid request body: {exc}")
    if len(batch.pipeline) > max_items:
        return error_msg(
            400, f"bad request body: {len(batch.pipeline)} pipeline items, at most {max_items}"
        )
    try:
        requests = sub_requests(batch, ctx.headers)
    except BadBatch as exc:
        return error_msg(400, f"bad request body: {exc}")
    answers = []
    room = MAX_ANSWERS
    for item, conn, data in requests:
        if ctx.connection.client_gone():
            return CLIENT_GONE  # nobody would read the answers: the rest is not sent
        answer, size = await exchange(ctx.connection, conn, item.method, data, batch.timeout, room)
        room -= size
        answers.append(answer)
    return json_reply(200, answers)
