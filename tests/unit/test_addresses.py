"""NetworkSet: addresses and CIDR networks, answered as `ipaddress` membership would."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.addresses import NetworkSet, networks

ENTRIES = ["10.0.0.0/8", "192.168.1.7", "172.16.5.0/24", "0.0.0.0/0", "2001:db8::/32", "::1"]


@pytest.mark.parametrize(
    ("entries", "remote", "inside"),
    [
        (["192.168.1.7"], "192.168.1.7", True),
        (["192.168.1.7"], "192.168.1.8", False),
        (["192.168.1.7/32"], "192.168.1.7", True),
        (["10.0.0.0/8"], "10.255.1.2", True),
        (["10.0.0.0/8"], "11.0.0.1", False),
        (["10.1.2.3/8"], "10.9.9.9", True),  # host bits set: the network, as APISIX's
        (["0.0.0.0/0"], "203.0.113.9", True),
        (["0.0.0.0/0"], "::1", False),
        (["::/0"], "::1", True),
        (["::1"], "::1", True),
        (["2001:db8::/32"], "2001:db8:ffff::1", True),
        (["2001:db8::/32"], "2001:db9::1", False),
        # An IPv4-mapped client is its IPv4 address.
        (["127.0.0.1"], "::ffff:127.0.0.1", True),
        (["127.0.0.0/8"], "::ffff:127.9.9.9", True),
        (["127.0.0.1"], "not an address", False),
        (["127.0.0.1"], None, False),
    ],
)
def test_membership(entries: list[str], remote: str | None, inside: bool) -> None:
    assert (remote in NetworkSet(entries)) is inside


def test_bad_entry_is_refused() -> None:
    for entry in ("10.0.0.0/33", "1.2.3", "example.com", "::1/129"):
        with pytest.raises(ValueError, match=r"\S"):
            NetworkSet([entry])


def test_empty_set_is_false() -> None:
    assert not NetworkSet([])
    assert NetworkSet(["::1"])


addresses = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.ip_addresses(v=4).map(lambda a: f"::ffff:{a}"),
)
cidrs = st.one_of(
    st.tuples(st.ip_addresses(v=4), st.integers(0, 32)),
    st.tuples(st.ip_addresses(v=6), st.integers(0, 128)),
).map(lambda t: f"{t[0]}/{t[1]}")


@given(
    st.lists(st.one_of(cidrs, addresses.filter(lambda a: "::ffff:" not in a)), max_size=8),
    addresses,
)
def test_same_answer_as_ipaddress(entries: list[str], remote: str) -> None:
    address = ipaddress.ip_address(remote)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    expected = any(address in net for net in networks(entries))
    assert (remote in NetworkSet(entries)) is expected
