"""Who may use the management API: a pure decision per request.

Denial is the default. A request from a loopback address (``127.0.0.0/8``, ``::1``) is
allowed without credentials: whoever can reach it is on the node, where ``haosctl`` reaches
the same control socket. Any other needs ``Authorization: Bearer <token>`` with one of the
tokens configured in ``[management] token_files``; with no tokens configured only loopback is
allowed. Tokens are compared in constant time, each of them every time (the time taken does
not tell which token, or how much of one, matched).
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    status: int  # 200, 401 (no or wrong credentials) or 403 (no credentials would do)
    reason: str


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (the peer's address as the server saw it) is a loopback address."""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False  # not an address (a unix socket peer, a test client's name)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback  # an IPv4 peer of a dual-stack socket
    return address.is_loopback


def bearer(header: str | None) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip().encode("utf-8", "surrogateescape")


def decide(host: str | None, authorization: str | None, tokens: tuple[bytes, ...]) -> Verdict:
    """May a request from ``host`` with the ``Authorization`` header ``authorization`` go on?"""
    if is_loopback(host):
        return Verdict(True, 200, "loopback")
    if not tokens:
        return Verdict(False, 403, "only loopback may use this API: no tokens are configured")
    given = bearer(authorization)
    if given is None:
        return Verdict(False, 401, "a bearer token is required from outside the node")
    matched = False
    for token in tokens:  # every one, always: no early return
        matched |= hmac.compare_digest(given, token)
    if not matched:
        return Verdict(False, 401, "the bearer token is not one of the configured tokens")
    return Verdict(True, 200, "token")
