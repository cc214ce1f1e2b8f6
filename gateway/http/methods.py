"""HTTP method names the config accepts in `methods` lists (APISIX's set)."""

from typing import Literal

HttpMethod = Literal[
    "GET",
    "POST",
    "PUT",
    "DELETE",
    "PATCH",
    "HEAD",
    "OPTIONS",
    "CONNECT",
    "TRACE",
    "PURGE",
]
