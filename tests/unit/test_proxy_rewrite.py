from __future__ import annotations

import time
from typing import Any

import msgspec
import pytest

from gateway.consumers import ConsumerTable
from gateway.context import RequestContext
from gateway.pipeline import PluginEnv
from gateway.plugins.proxy_rewrite import ProxyRewrite, ProxyRewriteConf


def ctx(
    target: bytes = b"/api/users/42?full=1", headers: list[tuple[bytes, bytes]] | None = None
) -> RequestContext:
    return RequestContext(
        b"GET", target, headers or [(b"host", b"h")], b"1.1", "10.0.0.1", 5000, 9080, 0.0
    )


def plugin(**conf: Any) -> ProxyRewrite:
    return ProxyRewrite(
        msgspec.convert(conf, ProxyRewriteConf), PluginEnv(ConsumerTable(), time.time)
    )


def test_uri_wins_over_regex_and_keeps_query() -> None:
    c = ctx()
    plugin(uri="/fixed", regex_uri=["^/api/(.*)", "/$1"]).rewrite(c)
    assert c.upstream_uri == b"/fixed?full=1"


def test_regex_uri_first_matching_pair_wins() -> None:
    c = ctx()
    plugin(
        regex_uri=["^/nomatch", "/x", "^/api/(\\w+)/(\\d+)", "/$2/$1", "^/api", "/late"]
    ).rewrite(c)
    assert c.upstream_uri == b"/42/users?full=1"


def test_regex_uri_without_match_leaves_uri() -> None:
    c = ctx(b"/other")
    plugin(regex_uri=["^/api/(.*)", "/$1"]).rewrite(c)
    assert c.upstream_uri is None


def test_uri_variables() -> None:
    c = ctx(b"/a?name=bob")
    plugin(uri="/users/$arg_name/$remote_addr").rewrite(c)
    assert c.upstream_uri == b"/users/bob/10.0.0.1?name=bob"


def test_header_actions_run_add_remove_set() -> None:
    c = ctx(headers=[(b"host", b"h"), (b"x-a", b"old"), (b"x-gone", b"1"), (b"x-s", b"old")])
    plugin(
        headers={"add": {"X-A": "new"}, "remove": ["X-Gone"], "set": {"X-S": "$http_host"}}
    ).rewrite(c)
    assert c.headers == [(b"host", b"h"), (b"x-a", b"old"), (b"x-a", b"new"), (b"x-s", b"h")]


def test_plain_headers_object_means_set() -> None:
    c = ctx(headers=[(b"host", b"h"), (b"x-s", b"old")])
    plugin(headers={"X-S": "new"}).rewrite(c)
    assert c.headers == [(b"host", b"h"), (b"x-s", b"new")]


def test_method_and_host() -> None:
    c = ctx()
    plugin(method="POST", host="backend").rewrite(c)
    assert (c.upstream_method, c.upstream_host) == (b"POST", b"backend")


@pytest.mark.parametrize(
    "conf",
    [
        {"regex_uri": ["^/a"]},
        {"regex_uri": ["(", "/x"]},
        {"uri": "relative"},
        {"method": "FETCH"},
        {"headers": {"set": {"x": 1}}},
        {"nope": 1},
    ],
)
def test_bad_confs_are_refused(conf: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(conf, ProxyRewriteConf)
