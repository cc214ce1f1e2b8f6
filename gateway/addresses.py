"""Client addresses against lists of IP addresses and CIDR networks (route `remote_addrs`,
the `ipmatch` operator of route `vars`, ip-restriction). Pure.

A `NetworkSet` answers in time that does not grow with the list: single addresses are a
set of their texts, and networks are sets of masked integers, one per prefix length, so a
blacklist of thousands of entries costs a few lookups per request.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(entries: Sequence[str]) -> tuple[Network, ...]:
    """Addresses or CIDR networks (`10.0.0.0/8`, `::1`); raises ValueError."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


class NetworkSet:
    """Addresses and CIDR networks, IPv4 and IPv6; raises ValueError for an entry that is
    neither. An IPv4-mapped IPv6 client counts as its IPv4 address; text that is not an
    address is in no set."""

    __slots__ = ("exact", "v4", "v6")

    def __init__(self, entries: Sequence[str]) -> None:
        exact: set[str] = set()
        v4: dict[int, set[int]] = {}
        v6: dict[int, set[int]] = {}
        for net in networks(entries):
            if net.prefixlen == net.max_prefixlen:
                exact.add(str(net.network_address))
            by_length = v4 if net.version == 4 else v6
            by_length.setdefault(net.prefixlen, set()).add(int(net.network_address))
        self.exact = frozenset(exact)
        # (prefix length, mask, masked networks), longest prefixes first.
        self.v4 = _masks(v4, 32)
        self.v6 = _masks(v6, 128)

    def __bool__(self) -> bool:
        return bool(self.v4 or self.v6)

    def __contains__(self, remote: str | None) -> bool:
        if remote is None:
            return False
        if remote in self.exact:  # the common case, without parsing the address
            return True
        try:
            address = ipaddress.ip_address(remote)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        value = int(address)
        for mask, masked in self.v4 if address.version == 4 else self.v6:
            if value & mask in masked:
                return True
        return False


def _masks(by_length: dict[int, set[int]], bits: int) -> tuple[tuple[int, frozenset[int]], ...]:
    full = (1 << bits) - 1
    return tuple(
        (full ^ ((1 << (bits - length)) - 1), frozenset(masked))
        for length, masked in sorted(by_length.items(), reverse=True)
    )
