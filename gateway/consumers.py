"""Consumers and what an authentication plugin attaches to a request.

A `Consumer` is built once per config: its username, labels, group, and the instances of its
non-auth plugins (the group's, overridden by its own). A `Credential` is one way to
authenticate as a consumer; auth plugins index credentials at config load and, per request,
set `ctx.consumer` and `ctx.credential`. Pure: no IO.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.pipeline import Plugin


class Consumer:
    """A caller known to the gateway."""

    __slots__ = ("custom_id", "group_id", "label_bytes", "plugins", "username", "username_bytes")

    def __init__(
        self,
        username: str,
        labels: dict[str, str],
        group_id: str | None,
        plugins: dict[str, Plugin | None],
    ) -> None:
        self.username = username
        self.username_bytes = username.encode()
        # Header values as APISIX sends a label: its UTF-8 bytes.
        self.label_bytes = {name: value.encode() for name, value in labels.items()}
        self.group_id = group_id
        self.custom_id = self.label_bytes.get("custom_id") or None
        # Policies merged over a route's (group's, then the consumer's own); None: the
        # plugin is turned off by a `_meta.disable` conf at this level.
        self.plugins = plugins

    def __repr__(self) -> str:
        return f"Consumer({self.username!r})"


class Credential:
    """One credential of a consumer; `id` is None for the legacy form (an auth plugin placed
    directly in the consumer's `plugins`)."""

    __slots__ = ("consumer", "id", "id_bytes")

    def __init__(self, credential_id: str | None, consumer: Consumer) -> None:
        self.id = credential_id
        self.id_bytes = credential_id.encode() if credential_id else None
        self.consumer = consumer

    def __repr__(self) -> str:
        return f"Credential({self.id!r} of {self.consumer.username!r})"


class ConsumerTable:
    """Every consumer by username, and each auth plugin's credential index by plugin name."""

    def __init__(self) -> None:
        self.by_name: dict[str, Consumer] = {}
        self.indexes: dict[str, Any] = {}

    def index(self, plugin_name: str) -> Any:
        """The index an auth plugin built for its credentials (None when there are none)."""
        return self.indexes.get(plugin_name)
