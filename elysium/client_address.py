"""The address a request comes from, as the per-address rate limits count it."""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network, ip_address

from flask import request

# An IPv6 address's network part: one home or phone line is given a whole /64 and picks any
# address in it, so the full address would give each new address a fresh limit.
IPV6_CLIENT_PREFIX = 64


def client_address() -> str:
    """The client's address (``request.remote_addr``, which ``ProxyFix`` sets from
    ``X-Forwarded-For`` behind the proxy): an IPv4 address as it is, an IPv6 one as its /64
    (``2001:db8:0:1::/64``), and an IPv4 address written as IPv6 (``::ffff:192.0.2.1``) as the
    IPv4 one. Every limit per address keys on this, never on ``remote_addr`` itself."""
    address = request.remote_addr or "127.0.0.1"
    try:
        parsed = ip_address(_without_port(address))
    except ValueError:
        return address
    if not isinstance(parsed, IPv6Address):
        return str(parsed)
    if parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    network = IPv6Network((int(parsed), IPV6_CLIENT_PREFIX), strict=False)  # no %zone
    return str(network)


def _without_port(address: str) -> str:
    """The address without the port some proxies write after it in ``X-Forwarded-For``
    (``203.0.113.5:50123``, ``[2001:db8::1]:50123``): each new connection's port would
    otherwise be a fresh budget of every limit."""
    if address.startswith("["):
        return address[1:].partition("]")[0]
    if address.count(":") == 1:
        return address.partition(":")[0]
    return address
