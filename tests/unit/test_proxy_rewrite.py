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


def test_regex_uri_substitutes_the_match_only() -> None:
    """As APISIX's `ngx.re.sub`: the first match is replaced by the template, the rest of
    the path stays."""
    c = ctx()
    plugin(regex_uri=["^/api/", "/v2/"]).rewrite(c)
    assert c.upstream_uri == b"/v2/users/42?full=1"
    c = ctx()
    plugin(regex_uri=["users/(\\d)", "people/$1$1"]).rewrite(c)
    assert c.upstream_uri == b"/api/people/442?full=1"


def test_regex_uri_without_match_leaves_uri() -> None:
    c = ctx(b"/other")
    plugin(regex_uri=["^/api/(.*)", "/$1"]).rewrite(c)
    assert c.upstream_uri is None


def test_uri_variables() -> None:
    c = ctx(b"/a?name=bob")
    plugin(uri="/users/$arg_name/$remote_addr").rewrite(c)
    assert c.upstream_uri == b"/users/bob/10.0.0.1?name=bob"


def test_new_uri_is_made_safe_for_the_request_line() -> None:
    """As APISIX's `uri_safe_encode`: what a request target cannot carry (a space, a quote,
    a control or non-ASCII byte, from the config or a variable) is percent-encoded;
    reserved characters and existing escapes stay."""
    c = ctx(b"/api/x?q=a%20b")
    plugin(uri='/new path/$arg_q/"é"/a%2Fb;c=d:@!$&\'()*+,~').rewrite(c)
    assert c.upstream_uri == b"/new%20path/a%20b/%22%C3%A9%22/a%2Fb;c=d:@!$&'()*+,~?q=a%20b"


def test_a_new_uri_escapes_a_header_variable_byte_by_byte() -> None:
    """A request header's bytes (`$http_x`) are escaped as the bytes they are; text from the
    config as its UTF-8 bytes."""
    c = ctx(headers=[(b"host", b"h"), (b"x-in", b"caf\xe9")])
    plugin(uri="/u/$http_x_in/é").rewrite(c)
    assert c.upstream_uri == b"/u/caf%E9/%C3%A9?full=1"


def test_use_real_request_uri_unsafe_sends_the_target_as_it_came() -> None:
    """It takes precedence over `uri` and `regex_uri`, and skips the normalisation."""
    c = RequestContext(
        b"GET", b"/api/x?y=1", [], b"1.1", "10.0.0.1", 5000, 9080, 0.0, b"/api/./x?y=1"
    )
    plugin(use_real_request_uri_unsafe=True, uri="/ignored").rewrite(c)
    assert c.upstream_uri == b"/api/./x?y=1"
    plugin(headers={"X-Original": "$request_uri", "X-Uri": "$uri"}).rewrite(c)
    assert c.header(b"x-original") == b"/api/./x?y=1"  # nginx's $request_uri: as sent
    assert c.header(b"x-uri") == b"/api/x"


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


def test_arg_variables_are_the_arguments_as_sent() -> None:
    """nginx's and APISIX's `$arg_name` is the argument as the client sent it, escapes
    and all: an escaped CR LF cannot become a line break, an escaped `/` or `..` cannot
    become a path step, and an escape outside Latin-1 cannot stop the request."""
    c = ctx(b"/a?name=%E6%97%A5%0D%0AX-Evil:%201&dir=..%2F..%2Fadmin&p=a+b")
    plugin(
        uri="/files/$arg_dir/x", headers={"X-Name": "$arg_name", "X-P": "$arg_p$arg_none"}
    ).rewrite(c)
    assert c.header(b"x-name") == b"%E6%97%A5%0D%0AX-Evil:%201"
    assert c.header(b"x-p") == b"a+b"
    assert c.upstream_uri is not None
    assert c.upstream_uri.startswith(b"/files/..%2F..%2Fadmin/x?")


def test_header_values_from_the_config_are_sent_as_utf8() -> None:
    """As APISIX sends a config string: its UTF-8 bytes (a request's own bytes, from
    `$http_*`, go on as they came)."""
    c = ctx(headers=[(b"host", b"h"), (b"x-in", b"caf\xe9")])
    plugin(headers={"X-Team": "チーム-$http_x_in", "X-Plain": "café"}).rewrite(c)
    assert c.header(b"x-team") == "チーム-".encode() + b"caf\xe9"
    assert c.header(b"x-plain") == "café".encode()


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
