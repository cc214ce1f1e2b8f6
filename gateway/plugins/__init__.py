"""The plugin registry: every plugin the config may name, in one explicit tuple."""

from __future__ import annotations

from gateway.pipeline import Plugin
from gateway.plugins.api_breaker import ApiBreaker
from gateway.plugins.attach_consumer_label import AttachConsumerLabel
from gateway.plugins.basic_auth import BasicAuth
from gateway.plugins.client_control import ClientControl
from gateway.plugins.collector_loggers import (
    ClickhouseLogger,
    ElasticsearchLogger,
    LokiLogger,
    SplunkHecLogging,
)
from gateway.plugins.consumer_restriction import ConsumerRestriction
from gateway.plugins.cors import Cors
from gateway.plugins.csrf import Csrf
from gateway.plugins.datadog import Datadog
from gateway.plugins.fault_injection import FaultInjection
from gateway.plugins.file_logger import FileLogger
from gateway.plugins.forward_auth import ForwardAuth
from gateway.plugins.gzip import Gzip
from gateway.plugins.hmac_auth import HmacAuth
from gateway.plugins.http_logger import HttpLogger
from gateway.plugins.ip_restriction import IpRestriction
from gateway.plugins.jwe_decrypt import JweDecrypt
from gateway.plugins.jwt_auth import JwtAuth
from gateway.plugins.key_auth import KeyAuth
from gateway.plugins.ldap_auth import LdapAuth
from gateway.plugins.limit_conn import LimitConn
from gateway.plugins.limit_count import LimitCount
from gateway.plugins.limit_req import LimitReq
from gateway.plugins.mocking import Mocking
from gateway.plugins.multi_auth import MultiAuth
from gateway.plugins.opa import Opa
from gateway.plugins.openid_connect import OpenIdConnect
from gateway.plugins.opentelemetry import OpenTelemetry
from gateway.plugins.prometheus import Prometheus
from gateway.plugins.proxy_cache import ProxyCache
from gateway.plugins.proxy_mirror import ProxyMirror
from gateway.plugins.proxy_rewrite import ProxyRewrite
from gateway.plugins.public_api import PublicApi
from gateway.plugins.real_ip import RealIp
from gateway.plugins.redirect import Redirect
from gateway.plugins.referer_restriction import RefererRestriction
from gateway.plugins.request_id import RequestId
from gateway.plugins.request_validation import RequestValidation
from gateway.plugins.response_rewrite import ResponseRewrite
from gateway.plugins.socket_loggers import Syslog, TcpLogger, UdpLogger
from gateway.plugins.traffic_split import TrafficSplit
from gateway.plugins.ua_restriction import UaRestriction
from gateway.plugins.uri_blocker import UriBlocker
from gateway.plugins.workflow import Workflow
from gateway.plugins.zipkin import Zipkin

PLUGINS: tuple[type[Plugin], ...] = (
    RealIp,
    ClientControl,
    RequestId,
    Zipkin,
    OpenTelemetry,
    FaultInjection,
    Mocking,
    Cors,
    UaRestriction,
    RefererRestriction,
    IpRestriction,
    UriBlocker,
    Csrf,
    RequestValidation,
    MultiAuth,
    OpenIdConnect,
    LdapAuth,
    HmacAuth,
    BasicAuth,
    JwtAuth,
    JweDecrypt,
    KeyAuth,
    ForwardAuth,
    Opa,
    ConsumerRestriction,
    AttachConsumerLabel,
    ProxyCache,
    ProxyMirror,
    Gzip,
    ProxyRewrite,
    Redirect,
    TrafficSplit,
    PublicApi,
    Prometheus,
    Datadog,
    LokiLogger,
    ElasticsearchLogger,
    HttpLogger,
    SplunkHecLogging,
    TcpLogger,
    Syslog,
    UdpLogger,
    FileLogger,
    ClickhouseLogger,
    ResponseRewrite,
    Workflow,
    ApiBreaker,
    LimitConn,
    LimitCount,
    LimitReq,
)

BY_NAME: dict[str, type[Plugin]] = {p.name: p for p in PLUGINS}
