"""Config errors: (JSON snippet, expected `$.path`), and what a valid config compiles to."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import msgspec
import pytest

from gateway.config.load import parse
from gateway.errors import ConfigErrors
from gateway.runtime import compile_config

UP = {"nodes": {"127.0.0.1:8080": 1}}


def route(**extra: Any) -> dict[str, Any]:
    return {"id": "r", "uri": "/a", "upstream": UP, **extra}


def cred(username: str, cred_id: str, plugin: str, conf: dict[str, Any]) -> dict[str, Any]:
    return {"username": username, "credentials": [{"id": cred_id, "plugins": {plugin: conf}}]}


def on_route(plugin: str, conf: dict[str, Any], field: str = "") -> tuple[dict[str, Any], str]:
    """A case: `conf` for `plugin` on a route, refused at that plugin's `field`."""
    path = f"$.routes[0].plugins.{plugin}" + (f".{field}" if field else "")
    return {"routes": [route(plugins={plugin: conf})]}, path


def on_upstream(fields: dict[str, Any], field: str = "") -> tuple[dict[str, Any], str]:
    """A case: a route's inline upstream of one node with `fields`, refused at `field`."""
    path = "$.routes[0].upstream" + (f".{field}" if field else "")
    return {"routes": [route(upstream={"nodes": {"h:1": 1}, **fields})]}, path


def labelled(labels: dict[str, str]) -> dict[str, Any]:
    return {"consumers": [{"username": "a", "labels": labels}]}


CASES: list[tuple[dict[str, Any], str]] = [
    ({"routes": [route(uri=None)]}, "$.routes[0]"),
    ({"routes": [route(uri="no-slash")]}, "$.routes[0].uri"),
    ({"routes": [route(methods=["FETCH"])]}, "$.routes[0].methods[0]"),
    ({"routes": [route(priority="high")]}, "$.routes[0].priority"),
    ({"routes": [route(hosts=["bad host"])]}, "$.routes[0].hosts[0]"),
    ({"routes": [route(plugins={"no-such-plugin": {}})]}, "$.routes[0].plugins"),
    (
        {"routes": [route(plugins={"proxy-rewrite": {"hide_credential": True}})]},
        "$.routes[0].plugins.proxy-rewrite",
    ),
    (
        {"routes": [route(plugins={"proxy-rewrite": {"regex_uri": ["(", "/x"]}})]},
        "$.routes[0].plugins.proxy-rewrite",
    ),
    ({"routes": [route(upstream={"nodes": {"no-port": 1}})]}, "$.routes[0].upstream"),
    # Weight 0 takes a node out of the rotation; one of them must stay in it.
    ({"routes": [route(upstream={"nodes": {"h:1": 0, "h:2": 0}})]}, "$.routes[0].upstream"),
    # chash needs a key that names what it hashes.
    on_upstream({"type": "chash"}),
    on_upstream({"type": "chash", "key": "nope"}),
    on_upstream({"type": "chash", "hash_on": "header", "key": "x user"}),
    on_upstream({"type": "chash", "hash_on": "vars_combinations", "key": "no-vars"}),
    on_upstream({"type": "chash", "hash_on": "ip"}, "hash_on"),
    # Health checks: passive ones need active ones; probes are plain HTTP or TCP.
    on_upstream({"checks": {"passive": {}}}, "checks"),
    on_upstream(
        {"checks": {"active": {"healthy": {"interval": 0.01}}}}, "checks.active.healthy.interval"
    ),
    on_upstream({"checks": {"active": {"type": "grpc"}}}, "checks.active.type"),
    on_upstream(
        {"checks": {"active": {"unhealthy": {"http_statuses": [99]}}}},
        "checks.active.unhealthy.http_statuses[0]",
    ),
    (
        {"upstreams": [{"id": "u", "nodes": [{"host": "h", "port": 1, "weight": 0}]}]},
        "$.upstreams[0]",
    ),
    (
        {"routes": [route(upstream={"nodes": {"h:1": 1}, "timeout": {"read": 0}})]},
        "$.routes[0].upstream.timeout.read",
    ),
    (
        {"routes": [route(upstream={"nodes": {"h:1": 1}, "pass_host": "rewrite"})]},
        "$.routes[0].upstream",
    ),
    (
        {"routes": [route(upstream={"nodes": {"h:1": 1}, "scheme": "gopher"})]},
        "$.routes[0].upstream.scheme",
    ),
    ({"routes": [route(upstream=None, upstream_id="nope")]}, "$.routes[0].upstream_id"),
    ({"routes": [route(service_id="nope")]}, "$.routes[0].service_id"),
    ({"routes": [route(), route()]}, "$.routes[1].id"),
    ({"upstreams": [{"nodes": {"h:1": 1}}]}, "$.upstreams[0]"),
    ({"upstreams": [{"id": "u", **UP}, {"id": "u", **UP}]}, "$.upstreams[1].id"),
    ({"services": [{"id": "s", "upstream_id": "x"}]}, "$.services[0].upstream_id"),
    ({"server": {"workers": 0}}, "$.server.workers"),
    ({"server": {"listen": ["127.0.0.1:99999"]}}, "$.server"),
    ({"server": {"limits": {"max_headers": 0}}}, "$.server.limits.max_headers"),
    ({"global_rules": [{"id": "g"}]}, "$.global_rules[0]"),
    ({"consumers": [{"username": "bad name!"}]}, "$.consumers[0].username"),
    ({"consumers": [{"username": "a", "group_id": "none"}]}, "$.consumers[0].group_id"),
    ({"unknown": 1}, "$"),
    # What a header, a realm or a host cannot carry is refused at load, never per request.
    on_route("key-auth", {"header": "日本"}, "header"),
    on_route("key-auth", {"realm": 'a"b'}, "realm"),
    on_route("basic-auth", {"realm": "a\r\nX: 1"}, "realm"),
    on_route("jwt-auth", {"header": "a b"}, "header"),
    on_route("jwt-auth", {"cookie": "a;b"}, "cookie"),
    on_route("jwt-auth", {"realm": "\u0000"}, "realm"),
    on_route("hmac-auth", {"signed_headers": ["日本"]}, "signed_headers[0]"),
    on_route("hmac-auth", {"realm": "a\\b"}, "realm"),
    on_route("openid-connect", {"public_key": "k", "realm": "a\nb"}, "realm"),
    on_route("openid-connect", {"public_key": "k", "token_header": "a b"}, "token_header"),
    on_route("proxy-rewrite", {"host": "日本"}, "host"),
    # cors: APISIX's rules, and nothing that would break the response head.
    on_route("cors", {"allow_credential": True}),
    on_route("cors", {"allow_credential": True, "allow_origins": "**", "allow_methods": "*"}),
    on_route("cors", {"allow_origins": "app.example"}, "allow_origins"),
    on_route("cors", {"allow_origins": "https://a.example,"}, "allow_origins"),
    on_route("cors", {"allow_origins": "https://a.example\r\nSet-Cookie: x=1"}, "allow_origins"),
    on_route("cors", {"allow_methods": "GET\r\nSet-Cookie: x=1"}, "allow_methods"),
    on_route("cors", {"expose_headers": "X-A\n"}, "expose_headers"),
    on_route("cors", {"max_age": "5"}, "max_age"),
    on_route("cors", {"allow_origins_by_regex": ["("]}),
    on_route("cors", {"allow_origins_by_regex": []}, "allow_origins_by_regex"),
    on_route("cors", {"allow_origins_by_regex": ["a", "a"]}),
    on_route("cors", {"timing_allow_origins_by_regex": [""]}, "timing_allow_origins_by_regex[0]"),
    # Plugin metadata is not part of the config: refused rather than never matching.
    on_route("cors", {"allow_origins_by_metadata": []}, "allow_origins_by_metadata"),
    on_route(
        "limit-count",
        {"count": 1, "time_window": 1, "redis_keepalive_timeout": 999},
        "redis_keepalive_timeout",
    ),
    on_route(
        "limit-count",
        {"count": 1, "time_window": 1, "redis_keepalive_pool": 0},
        "redis_keepalive_pool",
    ),
    on_route("limit-count", {"count": 1, "time_window": 1, "redis_ssl": "yes"}, "redis_ssl"),
    # APISIX 3.16's rules and variable amounts: one form or the other, keys that can run.
    on_route("limit-count", {"count": 1}),
    on_route("limit-count", {"count": "ten", "time_window": 1}, "count"),
    on_route("limit-count", {"count": "0", "time_window": 1}, "count"),
    on_route(
        "limit-count",
        {"count": 1, "time_window": 1, "rules": [{"count": 1, "time_window": 1, "key": "$http_a"}]},
    ),
    on_route("limit-count", {"rules": []}, "rules"),
    on_route(
        "limit-count", {"rules": [{"count": 1, "time_window": 1, "key": "fixed"}]}, "rules[0]"
    ),
    on_route(
        "limit-count",
        {"rules": [{"count": 1, "time_window": 1, "key": "$http_x", "header_prefix": "a b"}]},
        "rules[0].header_prefix",
    ),
    ({"routes": [route(plugin_config_id="nope")]}, "$.routes[0].plugin_config_id"),
    (
        {"plugin_configs": [{"id": "p", "plugins": {}}, {"id": "p", "plugins": {}}]},
        "$.plugin_configs[1].id",
    ),
    ({"plugin_configs": [{"id": "p"}]}, "$.plugin_configs[0]"),
    (
        {"plugin_configs": [{"id": "p", "plugins": {"key-auth": {"x": 1}}}]},
        "$.plugin_configs[0].plugins.key-auth",
    ),
    # real-ip: (ours) only from trusted proxies, never from any client.
    on_route("real-ip", {"source": "http_x_forwarded_for"}),
    on_route("real-ip", {"trusted_addresses": ["10.0.0.0/8"]}),
    on_route("real-ip", {"source": "http_x", "trusted_addresses": ["10.0.0.0/33"]}),
    on_route("real-ip", {"source": "nonsense", "trusted_addresses": ["::1"]}),
    on_route("real-ip", {"source": "", "trusted_addresses": ["::1"]}, "source"),
    # limit-req: APISIX's required fields and bounds.
    on_route("limit-req", {"rate": 1, "burst": 0}),
    on_route("limit-req", {"rate": 0, "burst": 0, "key": "remote_addr"}, "rate"),
    on_route("limit-req", {"rate": 1, "burst": -1, "key": "remote_addr"}, "burst"),
    on_route("limit-req", {"rate": 1, "burst": 0, "key": "x", "key_type": "constant"}, "key_type"),
    on_route("limit-req", {"rate": 1, "burst": 0, "key": "no_such_var"}),
    on_route("limit-req", {"rate": 1, "burst": 0, "key": "remote_addr", "policy": "redis"}),
    (
        {
            "server": {"workers": 2},
            "routes": [route(plugins={"limit-req": {"rate": 1, "burst": 0, "key": "remote_addr"}})],
        },
        "$.routes[0].plugins.limit-req.policy",
    ),
    on_route("request-id", {"algorithm": "snowflake"}, "algorithm"),
    on_route("request-id", {"header_name": "X Id"}, "header_name"),
    on_route("request-id", {"algorithm": "range_id", "range_id": {"length": 0}}, "range_id.length"),
    on_route(
        "request-id",
        {"algorithm": "range_id", "range_id": {"char_set": "a\n"}},
        "range_id.char_set",
    ),
    on_route("limit-conn", {"conn": 1, "burst": 0, "key": "remote_addr"}),
    on_route(
        "limit-conn",
        {"conn": 0, "burst": 0, "default_conn_delay": 0.1, "key": "remote_addr"},
        "conn",
    ),
    on_route(
        "limit-conn",
        {"conn": 1, "burst": 0, "default_conn_delay": 0, "key": "remote_addr"},
        "default_conn_delay",
    ),
    on_route("response-rewrite", {"status_code": 199}, "status_code"),
    on_route("response-rewrite", {"body": "not base64!", "body_base64": True}),
    on_route("response-rewrite", {"headers": {"add": ["no-colon"]}}),
    on_route("response-rewrite", {"headers": {"set": {"X-A": "a\r\nB: c"}}}),
    on_route("response-rewrite", {"filters": []}, "filters"),
    on_route("response-rewrite", {"filters": [{"regex": "a"}]}, "filters[0]"),
    on_route("response-rewrite", {"filters": [{"regex": "(", "replace": "b"}]}),
    on_route("response-rewrite", {"filters": [{"regex": "a", "replace": "$host"}]}),
    on_route("response-rewrite", {"filters": [{"regex": "a", "replace": "b", "options": "q"}]}),
    on_route("response-rewrite", {"body": "x", "filters": [{"regex": "a", "replace": "b"}]}),
    on_route("response-rewrite", {"vars": [["status", "===", 1]]}),
    on_upstream({"scheme": "grpc"}, "scheme"),
    on_route("workflow", {"rules": [{"actions": [["proxy-rewrite", {}]]}]}, "rules[0]"),
    on_route("workflow", {"rules": [{"actions": [["return", {"code": 700}]]}]}, "rules[0]"),
    on_route(
        "workflow",
        {"rules": [{"actions": [["return", {"code": 403}], ["return", {"code": 401}]]}]},
        "rules[0].actions",
    ),
    on_route(
        "workflow",
        {"rules": [{"case": [["arg_a", "===", "1"]], "actions": [["return", {"code": 403}]]}]},
        "rules[0]",
    ),
    on_route("workflow", {"rules": [{"actions": [["limit-count", {"count": 1}]]}]}, "rules[0]"),
    ({"plugin_metadata": [{"id": "proxy-rewrite"}]}, "$.plugin_metadata[0].id"),
    ({"plugin_metadata": [{"id": "cors", "log_format": {}}]}, "$.plugin_metadata[0]"),
    ({"plugin_metadata": [{"id": "file-logger", "allow_origins": {}}]}, "$.plugin_metadata[0]"),
    (
        {"plugin_metadata": [{"id": "cors", "allow_origins": {"k": "no scheme"}}]},
        "$.plugin_metadata[0].allow_origins[...]",
    ),
    (
        {"plugin_metadata": [{"id": "http-logger", "log_format": []}]},
        "$.plugin_metadata[0].log_format",
    ),
    (
        {"plugin_metadata": [{"id": "file-logger"}, {"id": "file-logger"}]},
        "$.plugin_metadata[1].id",
    ),
    on_upstream({"scheme": "https", "tls": {"client_cert": "x"}}, "tls.client_cert"),
    on_upstream({"scheme": "https", "tls": {"client_cert_id": "1"}}, "tls"),
    on_upstream({"scheme": "http", "tls": {"verify": True}}),
    on_upstream({"scheme": "https", "checks": {"active": {"type": "http"}}}),
    # redirect: exactly one of uri, regex_uri and http_to_https, as APISIX's schema.
    on_route("redirect", {}),
    on_route("redirect", {"uri": "/a", "http_to_https": True}),
    on_route("redirect", {"uri": "/a", "regex_uri": ["^/b", "/c"]}),
    on_route("redirect", {"http_to_https": True, "append_query_string": True}),
    on_route("redirect", {"regex_uri": ["(", "/x"]}),
    on_route("redirect", {"regex_uri": ["^/a"]}, "regex_uri"),
    on_route("redirect", {"uri": "/"}, "uri"),
    on_route("redirect", {"uri": "/a", "ret_code": 199}, "ret_code"),
    on_route("redirect", {"uri": "/a", "ret_code": 600}, "ret_code"),
    # traffic-split: upstreams named must exist; APISIX's bounds.
    (
        {
            "routes": [
                route(
                    plugins={
                        "traffic-split": {
                            "rules": [{"weighted_upstreams": [{"upstream_id": "nowhere"}]}]
                        }
                    }
                )
            ]
        },
        "$.routes[0].plugins.traffic-split.rules[0].weighted_upstreams[0].upstream_id",
    ),
    (
        {
            "consumers": [
                {
                    "username": "c",
                    "plugins": {
                        "traffic-split": {
                            "rules": [
                                {"weighted_upstreams": [{"weight": 1}, {"upstream_id": "nowhere"}]}
                            ]
                        }
                    },
                }
            ]
        },
        "$.consumers[0].plugins.traffic-split.rules[0].weighted_upstreams[1].upstream_id",
    ),
    on_route(
        "traffic-split",
        {
            "rules": [
                {"weighted_upstreams": [{"upstream_id": "u", "upstream": {"nodes": {"a:1": 1}}}]}
            ]
        },
        "rules[0].weighted_upstreams[0]",
    ),
    on_route(
        "traffic-split",
        {"rules": [{"weighted_upstreams": [{"upstream": {"nodes": {"a:1": 1}, "type": "x"}}]}]},
        "rules[0].weighted_upstreams[0].upstream.type",
    ),
    on_route(
        "traffic-split",
        {"rules": [{"weighted_upstreams": [{"weight": -1}]}]},
        "rules[0].weighted_upstreams[0].weight",
    ),
    on_route(
        "traffic-split", {"rules": [{"weighted_upstreams": []}]}, "rules[0].weighted_upstreams"
    ),
    on_route(
        "traffic-split",
        {"rules": [{"weighted_upstreams": [{"weight": 1}] * 21}]},
        "rules[0].weighted_upstreams",
    ),
    on_route(
        "traffic-split",
        {"rules": [{"match": [{"vars": [["no_such_var", "==", "1"]]}]}]},
        "rules[0].match[0]",
    ),
    # prometheus: plugin_attr as APISIX's config.yaml has it.
    on_route("prometheus", {"prefer_name": "yes"}, "prefer_name"),
    (
        {"plugin_attr": {"prometheus": {"metric_prefix": "bad-prefix"}}},
        "$.plugin_attr.prometheus.metric_prefix",
    ),
    (
        {"plugin_attr": {"prometheus": {"export_addr": {"port": 0}}}},
        "$.plugin_attr.prometheus.export_addr.port",
    ),
    ({"routes": [{"id": "r", "uri": "/a", "plugins": {"cors": {}}}]}, "$.routes[0]"),
    ({"plugin_attr": {"zipkin": {}}}, "$.plugin_attr"),
    # client-control: a byte count.
    on_route("client-control", {"max_body_size": -1}, "max_body_size"),
    on_route("client-control", {"max_body_size": "1m"}, "max_body_size"),
    # opentelemetry: APISIX's schema; plugin_attr.opentelemetry as its config.yaml has it.
    on_route("opentelemetry", {"sampler": {"name": "sometimes"}}, "sampler.name"),
    on_route(
        "opentelemetry", {"sampler": {"options": {"fraction": 2}}}, "sampler.options.fraction"
    ),
    on_route("opentelemetry", {"additional_attributes": [""]}, "additional_attributes[0]"),
    (
        {"plugin_attr": {"opentelemetry": {"collector": {"address": "not an address"}}}},
        "$.plugin_attr.opentelemetry.collector.address",
    ),
    (
        {"plugin_attr": {"opentelemetry": {"trace_id_source": "uuid"}}},
        "$.plugin_attr.opentelemetry.trace_id_source",
    ),
    (
        {"plugin_attr": {"opentelemetry": {"batch_span_processor": {"batch_timeout": 0}}}},
        "$.plugin_attr.opentelemetry.batch_span_processor.batch_timeout",
    ),
    ({"plugin_attr": {"opentelemetry": {"set_ngx_var": True}}}, "$.plugin_attr.opentelemetry"),
    # zipkin: APISIX's schema, span version 2 only.
    on_route("zipkin", {"sample_ratio": 1}, ""),
    on_route(
        "zipkin", {"endpoint": "http://z:9411/api/v2/spans", "sample_ratio": 0}, "sample_ratio"
    ),
    on_route(
        "zipkin",
        {"endpoint": "http://z:9411/api/v2/spans", "sample_ratio": 1, "span_version": 1},
        "span_version",
    ),
    on_route("zipkin", {"endpoint": "z:9411", "sample_ratio": 1}, "endpoint"),
    # proxy-cache: APISIX's schema.
    on_route("proxy-cache", {"cache_strategy": "redis"}, "cache_strategy"),
    on_route("proxy-cache", {"cache_method": ["PUT"]}, "cache_method[0]"),
    on_route("proxy-cache", {"cache_http_status": [199]}, "cache_http_status[0]"),
    on_route("proxy-cache", {"cache_bypass": ["arg_x"]}, "cache_bypass[0]"),
    on_route("proxy-cache", {"cache_ttl": 0}, "cache_ttl"),
    # tcp-logger, udp-logger: APISIX's schemas.
    on_route("tcp-logger", {"port": 5140}, ""),
    on_route("tcp-logger", {"host": "h", "port": 70000}, "port"),
    on_route("udp-logger", {"host": "h", "port": 514, "timeout": 0}, "timeout"),
    # gzip: APISIX's schema.
    on_route("gzip", {"types": []}, "types"),
    on_route("gzip", {"types": "text/html"}, "types"),
    on_route("gzip", {"comp_level": 10}, "comp_level"),
    on_route("gzip", {"min_length": 0}, "min_length"),
    on_route("gzip", {"http_version": 2}),
    on_route("gzip", {"buffers": {"number": 0}}, "buffers.number"),
    # request-validation: at least one schema, each a valid JSON Schema.
    on_route("request-validation", {}),
    on_route("request-validation", {"body_schema": []}, "body_schema"),
    on_route("request-validation", {"body_schema": {"type": "nope"}}),
    on_route("request-validation", {"header_schema": {"pattern": "("}}),
    on_route("request-validation", {"header_schema": {}, "rejected_code": 600}, "rejected_code"),
    on_route("request-validation", {"header_schema": {}, "rejected_msg": ""}, "rejected_msg"),
    # uri-blocker, ua-restriction, referer-restriction: APISIX's schemas, regexes compiled.
    on_route("uri-blocker", {}),
    on_route("uri-blocker", {"block_rules": []}, "block_rules"),
    on_route("uri-blocker", {"block_rules": ["("]}),
    on_route("uri-blocker", {"block_rules": ["a"], "rejected_code": 199}, "rejected_code"),
    on_route("ua-restriction", {}),
    on_route("ua-restriction", {"allowlist": ["a"], "denylist": ["b"]}),
    on_route("ua-restriction", {"denylist": ["["]}),
    on_route("ua-restriction", {"denylist": ["a"], "message": ""}, "message"),
    on_route("referer-restriction", {}),
    on_route("referer-restriction", {"whitelist": ["a.example"], "blacklist": ["b.example"]}),
    on_route("referer-restriction", {"whitelist": ["not a host"]}, "whitelist[0]"),
    # fault-injection: abort or delay, APISIX's bounds.
    on_route("fault-injection", {}),
    on_route("fault-injection", {"abort": {"body": "x"}}, "abort"),
    on_route("fault-injection", {"abort": {"http_status": 199}}, "abort.http_status"),
    on_route("fault-injection", {"delay": {"duration": -1}}, "delay.duration"),
    on_route("fault-injection", {"delay": {"duration": 1, "percentage": 101}}, "delay.percentage"),
    on_route(
        "fault-injection", {"abort": {"http_status": 500, "vars": [["arg_a", "==", "1"]]}}, "abort"
    ),
    on_route(
        "fault-injection", {"abort": {"http_status": 500, "headers": {"a:b": "c"}}}, "abort.headers"
    ),
    # api-breaker: APISIX's bounds.
    on_route("api-breaker", {}),
    on_route("api-breaker", {"break_response_code": 502, "max_breaker_sec": 2}, "max_breaker_sec"),
    on_route(
        "api-breaker",
        {"break_response_code": 502, "unhealthy": {"http_statuses": [404]}},
        "unhealthy.http_statuses[0]",
    ),
    on_route(
        "api-breaker",
        {"break_response_code": 502, "break_response_headers": [{"key": "X", "value": "a\nb"}]},
        "break_response_headers[0].value",
    ),
    # mocking: an example or a schema.
    on_route("mocking", {}),
    on_route("mocking", {"response_example": "x", "response_status": 99}, "response_status"),
    on_route("mocking", {"response_schema": {"type": "tuple"}}),
    on_route(
        "mocking", {"response_example": "x", "response_headers": {"a b": "c"}}, "response_headers"
    ),
    # file-logger: a path; bodies are streamed, never held for a log.
    on_route("file-logger", {}),
    on_route("file-logger", {"path": "/tmp/x.log", "include_req_body": "yes"}, "include_req_body"),
    on_route(
        "file-logger", {"path": "/tmp/x.log", "max_resp_body_bytes": 0}, "max_resp_body_bytes"
    ),
    on_route("file-logger", {"path": "/tmp/x.log", "include_req_body_expr": [["nope", "==", 1]]}),
    on_route("file-logger", {"path": "/tmp/x.log", "match": [["no_such_var", "==", 1]]}),
    # http-logger: an http(s) URI and APISIX's batch bounds.
    on_route("http-logger", {}),
    on_route("http-logger", {"uri": "ftp://logs.example/x"}, "uri"),
    on_route("http-logger", {"uri": "http://l.example", "batch_max_size": 0}, "batch_max_size"),
    on_route(
        "http-logger", {"uri": "http://l.example", "include_resp_body": 1}, "include_resp_body"
    ),
    on_route("http-logger", {"uri": "http://l.example", "concat_method": "csv"}, "concat_method"),
    # forward-auth: an http(s) URI, APISIX's bounds.
    on_route("forward-auth", {}),
    on_route("forward-auth", {"uri": "auth.example/check"}, "uri"),
    on_route(
        "forward-auth", {"uri": "http://a.example", "request_method": "PUT"}, "request_method"
    ),
    on_route("forward-auth", {"uri": "http://a.example", "timeout": 0}, "timeout"),
    on_route(
        "forward-auth",
        {"uri": "http://a.example", "upstream_headers": ["a b"]},
        "upstream_headers[0]",
    ),
    # proxy-mirror: an http(s) host without a path; APISIX's bounds.
    on_route("proxy-mirror", {}),
    on_route("proxy-mirror", {"host": "http://m.example/x"}, "host"),
    on_route("proxy-mirror", {"host": "grpc://m.example"}, "host"),
    on_route("proxy-mirror", {"host": "http://m.example", "path": "x"}, "path"),
    on_route("proxy-mirror", {"host": "http://m.example", "sample_ratio": 0}, "sample_ratio"),
    # opa: a host and a policy.
    on_route("opa", {"host": "http://opa.example"}),
    on_route("opa", {"host": "opa.example", "policy": "p"}, "host"),
    on_route("opa", {"host": "http://opa.example", "policy": "p", "timeout": 0}, "timeout"),
    # csrf: a key.
    on_route("csrf", {}),
    on_route("csrf", {"key": "k", "expires": 0}, "expires"),
    on_route("csrf", {"key": "k", "name": "bad name"}, "name"),
    # ip-restriction: exactly one list, of addresses or CIDRs.
    on_route("ip-restriction", {}),
    on_route("ip-restriction", {"whitelist": ["10.0.0.1"], "blacklist": ["10.0.0.2"]}),
    on_route("ip-restriction", {"whitelist": []}, "whitelist"),
    on_route("ip-restriction", {"whitelist": ["10.0.0.0/33"]}),
    on_route("ip-restriction", {"blacklist": ["example.com"]}),
    on_route("ip-restriction", {"blacklist": ["::1"], "response_code": 401}, "response_code"),
    on_route("ip-restriction", {"blacklist": ["::1"], "message": ""}, "message"),
    on_route("proxy-rewrite", {"host": "a\r\nb"}, "host"),
    on_route("proxy-rewrite", {"headers": {"set": {"X-A": "a\r\nX-B: 1"}}}),
    on_route("proxy-rewrite", {"headers": {"X A": "1"}}),
    on_route("proxy-rewrite", {"headers": {"remove": ["a:b"]}}),
    on_route("limit-count", {"count": 1, "time_window": 1, "key": "http_日本"}),
    ({"routes": [route(upstream={"nodes": {"日本:80": 1}})]}, "$.routes[0].upstream"),
    ({"routes": [route(upstream={"nodes": {"a\r\nb:80": 1}})]}, "$.routes[0].upstream"),
    (
        {"upstreams": [{"id": "u", "nodes": [{"host": "a b", "port": 1}]}]},
        "$.upstreams[0].nodes[0].host",
    ),
    (
        {"routes": [route(upstream={**UP, "pass_host": "rewrite", "upstream_host": "日本"})]},
        "$.routes[0].upstream.upstream_host",
    ),
    (
        {"routes": [route(upstream={**UP, "pass_host": "rewrite", "upstream_host": "a\r\nb"})]},
        "$.routes[0].upstream.upstream_host",
    ),
    # A route's uri is a path: no query or fragment, no climb above the root, good escapes.
    ({"routes": [route(uri="/a?b=1")]}, "$.routes[0]"),
    ({"routes": [route(uri="/a#b")]}, "$.routes[0]"),
    ({"routes": [route(remote_addrs=["10.0.0.0/33"])]}, "$.routes[0]"),
    ({"routes": [route(remote_addrs=["host.example"])]}, "$.routes[0]"),
    ({"routes": [route(remote_addrs=[])]}, "$.routes[0].remote_addrs"),
    ({"routes": [route(vars=[["arg_a", "===", "1"]])]}, "$.routes[0]"),
    ({"routes": [route(vars={"arg_a": "1"})]}, "$.routes[0].vars"),
    ({"routes": [route(remote_addr="1.2.3.4", remote_addrs=["1.2.3.4"])]}, "$.routes[0]"),
    ({"routes": [route(uri="/../a")]}, "$.routes[0]"),
    ({"routes": [route(uri=None, uris=["/ok", "/a%zz"])]}, "$.routes[0]"),
    # A pattern's end is the string's end: a trailing line break is no part of a name.
    ({"consumers": [{"username": "bob\n"}]}, "$.consumers[0].username"),
    ({"routes": [route(id="r\n")]}, "$.routes[0].id"),
    ({"routes": [route(hosts=["a.example\n"])]}, "$.routes[0].hosts[0]"),
    ({"routes": [route(upstream={"nodes": {"h:80\n": 1}})]}, "$.routes[0].upstream"),
    on_route("key-auth", {"header": "apikey\n"}, "header"),
    on_route("key-auth", {"realm": "key\n"}, "realm"),
    on_route("proxy-rewrite", {"headers": {"X-A": "v\n"}}),
    (labelled({"team": "v\n"}), "$.consumers[0].labels[...]"),
    # Labels as APISIX's: 1 to 64 characters without whitespace, at most 16 of them.
    (labelled({"team": "a\r\nb"}), "$.consumers[0].labels[...]"),
    (labelled({"custom_id": "a b"}), "$.consumers[0].labels[...]"),
    (labelled({"team": ""}), "$.consumers[0].labels[...]"),
    (labelled({"team": "x" * 65}), "$.consumers[0].labels[...]"),
    (
        {"consumers": [{"username": "a", "labels": {f"l{i}": "v" for i in range(17)}}]},
        "$.consumers[0].labels",
    ),
    ({"routes": [route(labels={"a": "b c"})]}, "$.routes[0].labels[...]"),
    # consumers and credentials
    ({"consumers": [{"username": "a"}, {"username": "a"}]}, "$.consumers[1].username"),
    (
        {
            "consumers": [
                cred("a", "c1", "key-auth", {"key": "k1"}),
                cred("b", "c1", "key-auth", {"key": "k2"}),
            ]
        },
        "$.consumers[1].credentials[0].id",
    ),
    (
        {
            "consumers": [
                cred("a", "c1", "key-auth", {"key": "same"}),
                cred("b", "c2", "key-auth", {"key": "same"}),
            ]
        },
        "$.consumers[1].credentials[0].plugins.key-auth",
    ),
    (
        {
            "consumers": [
                cred("a", "c1", "key-auth", {"key": "same"}),
                cred(
                    "b",
                    "c2",
                    "key-auth",
                    {"key_hash": "sha256:" + hashlib.sha256(b"same").hexdigest()},
                ),
            ]
        },
        "$.consumers[1].credentials[0].plugins.key-auth",
    ),
    (
        {
            "consumers": [
                {"username": "a", "plugins": {"key-auth": {"key": "same"}}},
                cred("b", "c2", "key-auth", {"key": "same"}),
            ]
        },
        "$.consumers[1].credentials[0].plugins.key-auth",
    ),
    (
        {
            "consumers": [
                cred("a", "c1", "basic-auth", {"username": "u", "password": "1"}),
                cred("b", "c2", "basic-auth", {"username": "u", "password": "2"}),
            ]
        },
        "$.consumers[1].credentials[0].plugins.basic-auth",
    ),
    (
        {
            "consumers": [
                cred("a", "c1", "jwt-auth", {"key": "j", "secret": "s" * 32}),
                cred("b", "c2", "jwt-auth", {"key": "j", "secret": "t" * 32}),
            ]
        },
        "$.consumers[1].credentials[0].plugins.jwt-auth",
    ),
    (
        {
            "consumers": [
                cred("a", "c1", "hmac-auth", {"key_id": "h", "secret_key": "1"}),
                cred("b", "c2", "hmac-auth", {"key_id": "h", "secret_key": "2"}),
            ]
        },
        "$.consumers[1].credentials[0].plugins.hmac-auth",
    ),
    (
        {"consumers": [cred("a", "c1", "proxy-rewrite", {"uri": "/x"})]},
        "$.consumers[0].credentials[0].plugins",
    ),
    (
        {"consumers": [{"username": "a", "credentials": [{"id": "c", "plugins": {}}]}]},
        "$.consumers[0].credentials[0].plugins",
    ),
    (
        {
            "consumers": [
                {
                    "username": "a",
                    "credentials": [
                        {
                            "id": "c",
                            "plugins": {
                                "key-auth": {"key": "k"},
                                "basic-auth": {"username": "u", "password": "p"},
                            },
                        }
                    ],
                }
            ]
        },
        "$.consumers[0].credentials[0].plugins",
    ),
    (
        {"consumers": [cred("a", "c1", "key-auth", {})]},
        "$.consumers[0].credentials[0].plugins.key-auth",
    ),
    (
        {"consumers": [cred("a", "c1", "key-auth", {"key": ""})]},
        "$.consumers[0].credentials[0].plugins.key-auth.key",
    ),
    (
        {"consumers": [cred("a", "c1", "key-auth", {"key_hash": "md5:abc"})]},
        "$.consumers[0].credentials[0].plugins.key-auth.key_hash",
    ),
    (
        {"consumers": [cred("a", "c1", "jwt-auth", {"key": "j"})]},
        "$.consumers[0].credentials[0].plugins.jwt-auth",
    ),
    (
        {"consumers": [cred("a", "c1", "jwt-auth", {"key": "j", "algorithm": "RS256"})]},
        "$.consumers[0].credentials[0].plugins.jwt-auth",
    ),
    (
        {
            "consumers": [
                cred(
                    "a", "c1", "jwt-auth", {"key": "j", "algorithm": "RS256", "public_key": "nope"}
                )
            ]
        },
        "$.consumers[0].credentials[0].plugins.jwt-auth",
    ),
    (
        {
            "consumers": [
                cred("a", "c1", "jwt-auth", {"key": "j", "secret": "s", "algorithm": "none"})
            ]
        },
        "$.consumers[0].credentials[0].plugins.jwt-auth.algorithm",
    ),
    (
        {"consumer_groups": [{"id": "g", "plugins": {"key-auth": {}}}]},
        "$.consumer_groups[0].plugins",
    ),
    (
        {"routes": [route(plugins={"multi-auth": {"auth_plugins": [{"key-auth": {}}]}})]},
        "$.routes[0].plugins.multi-auth.auth_plugins",
    ),
    (
        {
            "routes": [
                route(
                    plugins={
                        "multi-auth": {"auth_plugins": [{"key-auth": {}}, {"proxy-rewrite": {}}]}
                    }
                )
            ]
        },
        "$.routes[0].plugins.multi-auth",
    ),
    (
        {
            "routes": [
                route(
                    plugins={
                        "multi-auth": {
                            "auth_plugins": [
                                {"key-auth": {"hide_credential": True}},
                                {"basic-auth": {}},
                            ]
                        }
                    }
                )
            ]
        },
        "$.routes[0].plugins.multi-auth",
    ),
    (
        {"routes": [route(plugins={"hmac-auth": {"clock_skew": 0}})]},
        "$.routes[0].plugins.hmac-auth.clock_skew",
    ),
    (
        {"routes": [route(plugins={"jwt-auth": {"claims_to_verify": ["iat"]}})]},
        "$.routes[0].plugins.jwt-auth.claims_to_verify[0]",
    ),
    # policies
    (
        {
            "server": {"workers": 2},
            "routes": [route(plugins={"limit-count": {"count": 1, "time_window": 1}})],
        },
        "$.routes[0].plugins.limit-count.policy",
    ),
    (
        {
            "server": {"workers": 2},
            "consumers": [
                {"username": "a", "plugins": {"limit-count": {"count": 1, "time_window": 1}}}
            ],
        },
        "$.consumers[0].plugins.limit-count.policy",
    ),
    (
        {"routes": [route(plugins={"limit-count": {"count": 0, "time_window": 1}})]},
        "$.routes[0].plugins.limit-count.count",
    ),
    ({"routes": [route(plugins={"limit-count": {"count": 1}})]}, "$.routes[0].plugins.limit-count"),
    (
        {
            "routes": [
                route(plugins={"limit-count": {"count": 1, "time_window": 1, "policy": "redis"}})
            ]
        },
        "$.routes[0].plugins.limit-count",
    ),
    (
        {"routes": [route(plugins={"limit-count": {"count": 1, "time_window": 1, "key": "nope"}})]},
        "$.routes[0].plugins.limit-count",
    ),
    (
        {
            "routes": [
                route(
                    plugins={
                        "limit-count": {"count": 1, "time_window": 1, "window_type": "rolling"}
                    }
                )
            ]
        },
        "$.routes[0].plugins.limit-count.window_type",
    ),
    (
        {"routes": [route(plugins={"consumer-restriction": {}})]},
        "$.routes[0].plugins.consumer-restriction",
    ),
    (
        {"routes": [route(plugins={"consumer-restriction": {"type": "host", "whitelist": ["a"]}})]},
        "$.routes[0].plugins.consumer-restriction.type",
    ),
    (
        {"routes": [route(plugins={"attach-consumer-label": {"headers": {"X-Team": "team"}}})]},
        "$.routes[0].plugins.attach-consumer-label.headers[...]",
    ),
    # openid-connect
    (
        {
            "routes": [
                route(
                    plugins={"openid-connect": {"discovery": "http://idp/x", "bearer_only": False}}
                )
            ]
        },
        "$.routes[0].plugins.openid-connect",
    ),
    (
        {"routes": [route(plugins={"openid-connect": {"client_id": "a"}})]},
        "$.routes[0].plugins.openid-connect",
    ),
    (
        {"routes": [route(plugins={"openid-connect": {"discovery": "ftp://idp/x"}})]},
        "$.routes[0].plugins.openid-connect.discovery",
    ),
    (
        {
            "routes": [
                route(
                    plugins={
                        "openid-connect": {
                            "providers": [{"discovery": "http://a/x"}, {"client_id": "b"}]
                        }
                    }
                )
            ]
        },
        "$.routes[0].plugins.openid-connect",
    ),
    (
        {
            "routes": [
                route(plugins={"openid-connect": {"discovery": "http://a/x", "mode": "some"}})
            ]
        },
        "$.routes[0].plugins.openid-connect.mode",
    ),
    (
        {
            "routes": [
                route(plugins={"openid-connect": {"discovery": "http://a/x", "public_key": "nope"}})
            ]
        },
        "$.routes[0].plugins.openid-connect",
    ),
    # anonymous_consumer must name a consumer, on a route or in a multi-auth entry.
    (
        {"routes": [route(plugins={"key-auth": {"anonymous_consumer": "nobody"}})]},
        "$.routes[0].plugins.key-auth.anonymous_consumer",
    ),
    (
        {
            "routes": [
                route(
                    plugins={
                        "multi-auth": {
                            "auth_plugins": [
                                {"key-auth": {}},
                                {"jwt-auth": {"anonymous_consumer": "nobody"}},
                            ]
                        }
                    }
                )
            ]
        },
        "$.routes[0].plugins.multi-auth.auth_plugins[1].jwt-auth.anonymous_consumer",
    ),
    # APISIX's `_meta`: `disable` and `filter` are taken.
    (
        {"routes": [route(plugins={"key-auth": {"_meta": {"priority": 1}}})]},
        "$.routes[0].plugins.key-auth._meta",
    ),
    on_route("key-auth", {"_meta": {"filter": [["arg_a", "===", "1"]]}}, "_meta"),
    (
        {
            "consumers": [
                cred(
                    "a",
                    "a-1",
                    "key-auth",
                    {"key": "k", "_meta": {"filter": [["arg_a", "==", "1"]]}},
                )
            ]
        },
        "$.consumers[0].credentials[0].plugins.key-auth._meta.filter",
    ),
]


@pytest.mark.parametrize(("snippet", "path"), CASES)
def test_bad_config_names_the_path(snippet: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigErrors) as info:
        parse(json.dumps(snippet).encode())
    assert any(e.path == path for e in info.value.errors), str(info.value)


def test_invalid_json_is_reported() -> None:
    with pytest.raises(ConfigErrors, match="invalid JSON"):
        parse(b"{not json")


@pytest.mark.parametrize("where", ["desc", "vars"])
def test_json_nested_too_deeply_is_a_config_error(where: str) -> None:
    """Not a traceback from the decoder, nor from walking nested `vars` rules."""
    depth = 100_000 if where == "desc" else 600
    nested = '["OR", ' * depth + '["arg_a", "==", "1"]' + ', ["arg_b", "==", "1"]]' * depth
    text = '{"routes": [{"id": "r", "uri": "/a", "upstream": {"nodes": {"h:1": 1}}, "%s": %s}]}'
    with pytest.raises(ConfigErrors, match="nested too deeply"):
        parse((text % (where, nested if where == "vars" else "[" + nested + "]")).encode())


def test_env_references_are_resolved_and_never_literal() -> None:
    snippet = {"routes": [route(plugins={"proxy-rewrite": {"host": "$env://BACKEND_HOST"}})]}
    config = parse(json.dumps(snippet).encode(), environ={"BACKEND_HOST": "svc.internal"})
    assert config.routes[0].plugins.proxy_rewrite.host == "svc.internal"
    with pytest.raises(ConfigErrors) as info:
        parse(json.dumps(snippet).encode(), environ={})
    assert info.value.errors[0].path == "$.routes[0].plugins.proxy-rewrite.host"


def test_env_references_as_apisix_writes_them() -> None:
    """`$ENV://` in any case, `$env://NAME/key` for a key of a JSON object held by the
    variable, and standalone apisix.yaml's `${{NAME}}` / `${{NAME:=default}}` anywhere in a
    string (a value that is then all number or true/false becomes one, as in APISIX)."""
    snippet = {
        "routes": [
            route(
                uri="${{ PREFIX }}/*",
                plugins={
                    "proxy-rewrite": {"host": "$ENV://BACKEND_HOST"},
                    "limit-count": {"count": "${{LIMIT:=7e1}}", "time_window": "${{WINDOW}}"},
                    "key-auth": {"hide_credentials": "${{HIDE:= true }}"},
                },
            )
        ],
        "consumers": [
            {"username": "jack", "plugins": {"key-auth": {"key": "$env://SECRETS/jack"}}}
        ],
    }
    environ = {
        "BACKEND_HOST": "svc.internal",
        "PREFIX": "/api",
        "WINDOW": "60",
        "SECRETS": '{"jack": "jack-key"}',
    }
    config = parse(json.dumps(snippet).encode(), environ=environ)
    plugins = config.routes[0].plugins
    assert config.routes[0].uri == "/api/*"
    assert plugins.proxy_rewrite.host == "svc.internal"
    assert (plugins.limit_count.count, plugins.limit_count.time_window) == (70, 60)
    assert plugins.key_auth.hide_credentials is True
    assert config.consumers[0].plugins.key_auth.key == "jack-key"


@pytest.mark.parametrize(
    ("value", "environ", "fault"),
    [
        ("${{WINDOW}}", {}, "environment variable 'WINDOW' is not set"),
        ("$env://SECRETS/jill", {"SECRETS": '{"jack": "x"}'}, "no key 'jill'"),
        ("$env://SECRETS/jack", {"SECRETS": "hunter2-not-json"}, "not a JSON object"),
        # APISIX's secret managers (Vault, AWS, GCP) are not here: never a literal key.
        ("$secret://vault/1/jack/key", {}, "$secret://"),
    ],
)
def test_unresolvable_references_are_errors_without_values(
    value: str, environ: dict[str, str], fault: str
) -> None:
    snippet = {
        "routes": [route()],
        "consumers": [{"username": "jack", "plugins": {"key-auth": {"key": value}}}],
    }
    with pytest.raises(ConfigErrors) as info:
        parse(json.dumps(snippet).encode(), environ=environ)
    error = info.value.errors[0]
    assert error.path == "$.consumers[0].plugins.key-auth.key"
    assert fault in error.message
    assert "hunter2" not in str(info.value)


def test_defaults_follow_apisix() -> None:
    config = parse(json.dumps({"routes": [route()]}).encode())
    upstream = config.routes[0].upstream
    assert (upstream.timeout.connect, upstream.timeout.send, upstream.timeout.read) == (60, 60, 60)
    assert (
        upstream.keepalive_pool.size,
        upstream.keepalive_pool.idle_timeout,
        upstream.keepalive_pool.requests,
    ) == (320, 60, 1000)
    assert upstream.pass_host == "pass"
    assert config.server.workers == 1
    assert config.server.shutdown_timeout == 30
    assert config.server.limits.max_headers == 100


def test_compile_merges_service_and_route_plugins_after_global_rules() -> None:
    snippet = {
        "global_rules": [{"id": "g", "plugins": {"proxy-rewrite": {"host": "global"}}}],
        "services": [{"id": "s", "upstream": UP, "plugins": {"proxy-rewrite": {"host": "svc"}}}],
        "routes": [{"id": "r", "uri": "/a", "service_id": "s"}],
    }
    runtime = compile_config(parse(json.dumps(snippet).encode()))
    compiled = runtime.router.match(b"GET", b"/a", b"")
    assert compiled is not None
    hosts = [p.conf.host for p in compiled.chain.plugins]
    assert hosts == ["global", "svc"]


def test_shipped_config_is_valid() -> None:
    from tests.helpers import ROOT

    parse((ROOT / "config.json").read_bytes())


def test_http_logger_conf_never_shows_its_credentials() -> None:
    from gateway.plugins.http_logger import HttpLoggerConf

    conf = msgspec.convert(
        {"uri": "http://u:pw@l.example/x", "auth_header": "Bearer t0ken"}, HttpLoggerConf
    )
    assert "t0ken" not in repr(conf)
    assert "pw" not in repr(conf)


def test_admin_api_timestamps_are_taken_on_every_resource() -> None:
    """A config exported from APISIX's Admin API carries `create_time` / `update_time`
    on each resource."""
    stamps = {"create_time": 1700000000, "update_time": 1700000100}
    upstream = {"id": "u", "nodes": {"127.0.0.1:1": 1}, **stamps}
    config = {
        "routes": [{"id": "r", "uri": "/*", "upstream_id": "u", "service_id": "s",
                    "plugin_config_id": "pc", **stamps}],
        "services": [{"id": "s", **stamps}],
        "upstreams": [upstream],
        "plugin_configs": [{"id": "pc", "plugins": {}, **stamps}],
        "global_rules": [{"id": "g", "plugins": {}, **stamps}],
        "consumer_groups": [{"id": "cg", "plugins": {}, **stamps}],
        "consumers": [{"username": "c", "group_id": "cg", **stamps, "credentials": [
            {"id": "k", "plugins": {"key-auth": {"key": "k"}}, **stamps}]}],
    }  # fmt: skip
    compile_config(parse(json.dumps(config).encode()))
    config["routes"][0]["update_time"] = "yesterday"
    with pytest.raises(ConfigErrors, match=r"\$\.routes\[0\]\.update_time"):
        compile_config(parse(json.dumps(config).encode()))
