"""Which URLs a webhook may call: outbound safety rules.

A webhook URL is chosen by a user, and Nova calls it from inside the
deployment; without rules it reaches the cloud metadata service, the
databases and every other internal address (server-side request forgery).
So: only ``http``/``https``, no credentials in the URL, and no address that is
loopback, private, link-local, multicast, reserved or unspecified, unless the
deployment explicitly allows private targets (`NOVA_WEBHOOK_ALLOW_PRIVATE_TARGETS`,
for development, where the receiver runs on the same machine).

command-api checks the URL when a subscription is made; integration resolves
the name again before every attempt and connects to the address it checked,
so a DNS answer that changes in between (DNS rebinding) cannot get through.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048


class TargetRefusedError(ValueError):
    """A webhook URL Nova will not call; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    """Path and query, as sent in the request line."""


def parse_target(url: str) -> Target:
    """Check the URL's form; raise `TargetRefusedError` with what to fix."""
    if len(url) > MAX_URL_LENGTH:
        raise TargetRefusedError(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise TargetRefusedError("the URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefusedError(f"the URL is not valid: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefusedError("only http:// and https:// URLs can receive webhooks")
    if not parts.hostname:
        raise TargetRefusedError("the URL has no host name")
    if parts.username is not None or parts.password is not None:
        raise TargetRefusedError(
            "put no credentials in the URL; verify Nova's signature instead"
        )
    if parts.fragment:
        raise TargetRefusedError("the URL must not have a #fragment")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    default_port = 443 if parts.scheme == "https" else 80
    return Target(parts.scheme, parts.hostname, port or default_port, path)


def check_address(address: str, *, allow_private: bool) -> None:
    """Raise `TargetRefusedError` for an address webhooks must not reach."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        raise TargetRefusedError(f"{ip} is not an address a webhook can be sent to")
    if allow_private:
        return
    if ip.is_loopback or ip.is_link_local or ip.is_private or not ip.is_global:
        raise TargetRefusedError(
            f"{ip} is a loopback, private or link-local address; webhooks only go "
            "to public addresses (a development deployment can allow private "
            "ones with NOVA_WEBHOOK_ALLOW_PRIVATE_TARGETS=true)"
        )


def check_literal_host(target: Target, *, allow_private: bool) -> None:
    """Refuse a URL whose host is an IP address that is not allowed.

    A host name is checked when it is resolved (`resolve`), before each call.
    """
    try:
        ipaddress.ip_address(target.host)
    except ValueError:
        if target.host.lower() == "localhost" and not allow_private:
            check_address("127.0.0.1", allow_private=False)
        return
    check_address(target.host, allow_private=allow_private)


async def resolve(target: Target, *, allow_private: bool) -> str:
    """One address of the target's host that every rule allows.

    Every address the name resolves to must be allowed: a name with one public
    and one private address is refused, so no retry can land on the private one.
    """
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(
            target.host, target.port, type=socket.SOCK_STREAM
        )
    except socket.gaierror as exc:
        raise TargetRefusedError(
            f"the host {target.host!r} does not resolve: {exc.strerror}"
        ) from None
    addresses = sorted({str(info[4][0]) for info in infos})
    if not addresses:
        raise TargetRefusedError(f"the host {target.host!r} has no address")
    for address in addresses:
        check_address(address, allow_private=allow_private)
    return addresses[0]
