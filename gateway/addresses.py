"""Client addresses against lists of IP addresses and CIDR networks (route `remote_addrs`,
the `ipmatch` operator of route `vars`). Pure."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(entries: Sequence[str]) -> tuple[Network, ...]:
    """Addresses or CIDR networks (`10.0.0.0/8`, `::1`); raises ValueError."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def in_networks(remote: str | None, nets: tuple[Network, ...]) -> bool:
    """Whether the address `remote` is in one of `nets`; an IPv4-mapped IPv6 address counts
    as its IPv4 address, text that is not an address is in none."""
    if remote is None:
        return False
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in net for net in nets)
