"""Who the client is, for the failed-authentication limit: the peer's address, or, behind
a proxy the operator trusts, the address that proxy says it forwarded for.

A forwarding header is only as true as whoever wrote it, so it is read only when the
peer is one of `trusted_proxies`, and then from the right: each trusted hop appends the
address it saw, so the first address from the right that is not itself a trusted proxy
is the client. Anything a client put further left is never believed; a value that is not
an address makes the proxy itself the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    """CIDRs or single addresses; ValueError naming a bad one."""
    return tuple(ipaddress.ip_network(value.strip(), strict=False) for value in values)


def _trusted(address: str, proxies: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def client_address(peer: str | None, forwarded: str | None, proxies: tuple[Network, ...]) -> str:
    peer = peer or "unknown"
    if not forwarded or not _trusted(peer, proxies):
        return peer
    for hop in reversed(forwarded.split(",")):
        address = hop.strip()
        try:
            ipaddress.ip_address(address)
        except ValueError:
            return peer
        if not _trusted(address, proxies):
            return address
    return peer
