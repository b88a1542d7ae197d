"""AddressPolicy: the deny list and its exceptions, over every address form."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.transport.connect import AddressPolicy
from homeserver.config.federation import DEFAULT_IP_RANGE_BLACKLIST

DEFAULT = AddressPolicy(DEFAULT_IP_RANGE_BLACKLIST)


class AddressPolicyTests:
    """Which addresses outbound federation may reach."""

    @pytest.mark.parametrize(
        "address",
        ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "10.0.0.1", "172.16.5.4", "192.168.0.1", "169.254.169.254",
         "100.64.0.1", "0.0.0.0", "::", "fe80::1", "fd00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "224.0.0.1",
         "255.255.255.255", "64:ff9b::7f00:1", "not an ip", ""],
    )
    def test_default_refuses(self, address: str) -> None:
        """Loopback, private, link-local, reserved, mapped and NAT64 forms, and non-IPs are refused."""
        assert not DEFAULT.allows(address)

    @pytest.mark.parametrize("address", ["1.1.1.1", "8.8.8.8", "2001:4860:4860::8888", "[2606:4700::1111]"])
    def test_default_allows_public(self, address: str) -> None:
        """Public addresses pass."""
        assert DEFAULT.allows(address)

    def test_whitelist_punches_holes(self) -> None:
        """127.0.0.0/8 whitelisted: IPv4 loopback passes; its IPv4-mapped form stays refused (both forms must
        pass, and ::ffff:0:0/96 is deny-listed); ::1 and private ranges stay refused."""
        policy = AddressPolicy(DEFAULT_IP_RANGE_BLACKLIST, ["127.0.0.0/8"])
        assert policy.allows("127.0.0.1")
        assert not policy.allows("::ffff:127.0.0.1")
        assert AddressPolicy(DEFAULT_IP_RANGE_BLACKLIST, ["127.0.0.0/8", "::ffff:127.0.0.0/104"]).allows("::ffff:127.0.0.1")
        assert not policy.allows("::1")
        assert not policy.allows("10.0.0.1")

    @given(st.ip_addresses())
    def test_matches_the_networks(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
        """An address is refused exactly when it (or the IPv4 address it maps) is in a deny-listed network."""
        nets = [ipaddress.ip_network(n) for n in DEFAULT_IP_RANGE_BLACKLIST]
        forms = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            forms.append(address.ipv4_mapped)
        denied = any(f in n for f in forms for n in nets if n.version == f.version)
        assert DEFAULT.allows(str(address)) is not denied
