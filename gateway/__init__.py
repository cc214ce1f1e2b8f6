"""trio-gateway: an HTTP/1.1 API gateway on trio and h11 with an APISIX-compatible config."""

__version__ = "0.1.0"
