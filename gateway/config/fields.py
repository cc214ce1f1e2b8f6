"""Field types for config values that end up in an HTTP head: header and cookie names,
header values, realms, host names, labels.

What a head cannot carry (a line break, a space in a name, a quote inside a quoted string)
is refused when the config loads, with the field's path, rather than failing each request.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

# RFC 9110 token: a header name (and RFC 6265's cookie name).
TOKEN = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+\Z"
HeaderName = Annotated[str, msgspec.Meta(pattern=TOKEN)]
# A header value: no control characters but tab (RFC 9110 field-value). Text outside ASCII
# goes out as its UTF-8 bytes.
HEADER_TEXT = re.compile(r"^[^\x00-\x08\x0a-\x1f\x7f]*\Z")
HeaderText = Annotated[str, msgspec.Meta(pattern=HEADER_TEXT.pattern)]
# Sent inside `realm="..."`: no quote or backslash either.
Realm = Annotated[str, msgspec.Meta(min_length=1, pattern=r'^[^\x00-\x1f\x7f"\\]+\Z')]
# An ASCII host name or IP address (a name outside ASCII is written as IDNA punycode).
HOST = r"[A-Za-z0-9._-]+|\[[0-9A-Za-z:.%]+\]"
Host = Annotated[str, msgspec.Meta(pattern=rf"^({HOST}|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.%]*)\Z")]
# A Host header's value: host, or host:port.
HostHeader = Annotated[str, msgspec.Meta(pattern=rf"^({HOST})(:[0-9]{{1,5}})?\Z")]
# APISIX's labels: each value 1 to 64 characters without whitespace, at most 16 labels.
LabelValue = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[^\s\x00-\x1f\x7f]+\Z")
]
Labels = Annotated[dict[str, LabelValue], msgspec.Meta(max_length=16)]

# A consumer's name (APISIX's pattern), also where a plugin names one (`anonymous_consumer`).
Username = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=r"^[a-zA-Z0-9_-]+\Z")]

# A resource's id (APISIX's pattern).
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_.-]+\Z")]

Seconds = Annotated[float, msgspec.Meta(gt=0)]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
