"""Which webhook URLs the gateway may call: none that reach the operator's own network.

A project admin names the URL, so an unchecked one would let a tenant make the gateway
POST to its loopback, link-local metadata service or private network (SSRF). Every
address the host resolves to must be globally routable; the check runs when the webhook
is registered and again before each attempt, since DNS may change in between. What it
cannot rule out is DNS answering differently between that check and httpx's own lookup
a moment later (rebinding); redirects are never followed. `make dev` allows private
addresses (`FERRUMDECK_WEBHOOK_ALLOW_PRIVATE=true`), since its receivers are local.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

_RESOLVE_SECONDS = 3.0


class RefusedAddress(Exception):
    """The URL's host resolves to an address deliveries may not go to, or to none."""


async def check_url(url: str, *, allow_private: bool) -> None:
    if allow_private:
        return
    parts = urlsplit(url)
    host = parts.hostname
    if host is None:
        raise RefusedAddress("the URL has no host")
    try:
        # Resolution runs in the loop's thread pool; a slow resolver must not hold a
        # request, or a pool thread, for long.
        async with asyncio.timeout(_RESOLVE_SECONDS):
            found = await asyncio.get_running_loop().getaddrinfo(
                host,
                parts.port or (443 if parts.scheme == "https" else 80),
                type=socket.SOCK_STREAM,
            )
    except TimeoutError:
        raise RefusedAddress(f"cannot resolve {host!r} within {_RESOLVE_SECONDS:.0f}s") from None
    except (OSError, UnicodeError) as exc:
        raise RefusedAddress(f"cannot resolve {host!r}: {exc}") from None
    for *_, sockaddr in found:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if not address.is_global:
            raise RefusedAddress(
                f"{host!r} resolves to {address}, which is not a public address "
                "(the operator may allow private ones: FERRUMDECK_WEBHOOK_ALLOW_PRIVATE)"
            )
