"""Fetch image bytes for inputs given as http(s) URLs, guarded against server-side request forgery.

The host is resolved once and every address it resolves to is checked before anything connects; the
connection then goes to a checked address (so a second DNS answer cannot swap in an internal one, "DNS
rebinding") while the Host header and TLS SNI/certificate check still use the name from the URL.
Redirects are followed by hand, at most three, and each target is checked the same way.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from simsearch.errors import BadInput

MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 << 10
_TOTAL_TIMEOUTS = 3


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    """What URL fetching may do: reach private addresses, wait how long, read how much.

    `timeout_s` bounds connecting and each read from the socket; the whole fetch, redirects included,
    may take at most `_TOTAL_TIMEOUTS` times as long, so a server trickling bytes cannot hold a request."""

    allow_private: bool = False
    timeout_s: float = 10.0
    max_bytes: int = 32 << 20


def _shown(url: str) -> str:
    return url if len(url) <= 200 else url[:200] + "..."


def _is_private(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 must be judged as 127.0.0.1
    return (ip.is_loopback or ip.is_link_local or ip.is_private or ip.is_multicast
            or ip.is_reserved or ip.is_unspecified)  # fmt: skip


def _addresses(url: str, host: str, port: int, policy: UrlPolicy, field: str) -> list[str]:
    """The IPs to connect to, all checked; an IP literal is used as is, without a DNS query."""
    try:
        ips = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise BadInput(field, f"could not resolve the host of {_shown(url)}: {exc}") from exc
        ips = [ipaddress.ip_address(str(info[4][0])) for info in infos]
    if not policy.allow_private:
        for ip in ips:
            if _is_private(ip):
                raise BadInput(field, f"{_shown(url)} resolves to a loopback/private/link-local address ({ip}); "
                               "set SIMSEARCH_ALLOW_PRIVATE_URLS=1 to allow it")  # fmt: skip
    return list(dict.fromkeys(str(ip) for ip in ips))


def _connect(ips: list[str], port: int, timeout: float) -> socket.socket:
    error: OSError = OSError("no address")
    for ip in ips:  # like socket.create_connection, try each checked address in turn
        try:
            return socket.create_connection((ip, port), timeout=timeout)
        except OSError as exc:
            error = exc
    raise error


def _get_once(url: str, policy: UrlPolicy, field: str, deadline: float) -> tuple[int, str | None, bytes]:
    """One GET without following redirects: (status, Location, body); the body is read only on 2xx."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInput(field, f"only http(s) URLs with a host can be fetched: {_shown(url)}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise BadInput(field, f"bad port in {_shown(url)}") from exc
    ips = _addresses(url, parts.hostname, port, policy, field)
    conn: http.client.HTTPConnection | None = None
    try:
        sock = _connect(ips, port, policy.timeout_s)
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(parts.hostname, port, timeout=policy.timeout_s)
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
        else:
            conn = http.client.HTTPConnection(parts.hostname, port, timeout=policy.timeout_s)
        conn.sock = sock  # a connection that already has a socket never resolves the name again
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request("GET", target, headers={"Accept": "image/*", "User-Agent": "simsearch"})
        response = conn.getresponse()
        if response.status in _REDIRECTS or not 200 <= response.status < 300:
            return response.status, response.getheader("Location"), b""
        declared = response.getheader("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > policy.max_bytes:
            raise BadInput(field, f"{_shown(url)} is larger than {policy.max_bytes} bytes")
        body = bytearray()
        while chunk := response.read1(_CHUNK):  # returns what one recv gives, so the deadline is checked
            body += chunk
            if len(body) > policy.max_bytes:
                raise BadInput(field, f"{_shown(url)} is larger than {policy.max_bytes} bytes")
            if time.monotonic() > deadline:
                raise BadInput(field, f"{_shown(url)} took longer than {_TOTAL_TIMEOUTS * policy.timeout_s:g} s")
        return response.status, None, bytes(body)
    except (OSError, http.client.HTTPException) as exc:
        raise BadInput(field, f"could not fetch {_shown(url)}: {str(exc) or type(exc).__name__}") from exc
    finally:
        if conn is not None:
            conn.close()


def fetch_url(url: str, policy: UrlPolicy, *, field: str) -> bytes:
    """The body of `url` (http or https), following up to three redirects; every failure is a BadInput."""
    current = url
    deadline = time.monotonic() + _TOTAL_TIMEOUTS * policy.timeout_s
    for _ in range(MAX_REDIRECTS + 1):
        status, location, body = _get_once(current, policy, field, deadline)
        if 200 <= status < 300:
            return body
        if status not in _REDIRECTS or not location:
            raise BadInput(field, f"{_shown(current)} answered HTTP {status}")
        current = urljoin(current, location)
    raise BadInput(field, f"{_shown(url)} redirects more than {MAX_REDIRECTS} times")
