"""URL inputs against a real HTTP server on 127.0.0.1 (no mocks): policy checks, limits and redirects."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from simsearch.errors import BadInput
from simsearch.input import Source, UrlPolicy, fetch_url, iter_sources

TIMEOUT_S = 0.5
MAX_BYTES = 100_000
POLICY = UrlPolicy(allow_private=True, timeout_s=TIMEOUT_S, max_bytes=MAX_BYTES)


def _png() -> bytes:
    rgb = np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".png", rgb)
    assert ok
    return bytes(encoded.tobytes())


PNG = _png()


class _Handler(BaseHTTPRequestHandler):
    release: threading.Event  # set on teardown so a sleeping /slow handler ends at once

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {"Content-Length": str(len(body))}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        with contextlib.suppress(OSError):  # the client gave up (timeout, too large): nothing to report
            self._route()

    def _route(self) -> None:
        path = self.path
        if path == "/img.png":
            self._send(200, PNG, {"Content-Type": "image/png", "Content-Length": str(len(PNG))})
        elif path == "/host":
            self._send(200, self.headers["Host"].encode())
        elif path == "/redirect":
            self._send(302, headers={"Location": "/hop/img.png", "Content-Length": "0"})
        elif path == "/hop/img.png":
            self._send(301, headers={"Location": "../img.png", "Content-Length": "0"})
        elif path == "/loop":
            self._send(302, headers={"Location": "/loop", "Content-Length": "0"})
        elif path == "/to-ftp":
            self._send(302, headers={"Location": "ftp://example.org/x.png", "Content-Length": "0"})
        elif path == "/slow":
            self.release.wait(10 * TIMEOUT_S)
            self._send(200, PNG)
        elif path == "/trickle":  # each byte well within the read timeout, the whole far beyond it
            self._send(200, headers={"Content-Length": "1000"})
            for _ in range(1000):
                if self.release.wait(TIMEOUT_S / 5):
                    return
                self.wfile.write(b"x")
                self.wfile.flush()
        elif path == "/big":  # declares its size
            self._send(200, bytes(MAX_BYTES + 1))
        elif path == "/big-stream":  # no Content-Length: the body ends when the connection closes
            self._send(200, headers={"Content-Type": "application/octet-stream"})
            for _ in range(4):
                self.wfile.write(bytes(MAX_BYTES // 2))
        else:
            self._send(404, b"not here")


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    release = threading.Event()
    handler = type("Handler", (_Handler,), {"release": release})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        release.set()
        server.shutdown()
        server.server_close()
        thread.join()


def test_urls_are_refused_unless_enabled(base_url: str) -> None:
    with pytest.raises(BadInput, match="SIMSEARCH_ALLOW_URLS=1") as info:
        iter_sources([f"{base_url}/img.png"], roots=[])
    assert info.value.field == "data[0]"


def test_loopback_is_refused_by_default(base_url: str) -> None:
    with pytest.raises(BadInput, match=r"loopback/private/link-local.*SIMSEARCH_ALLOW_PRIVATE_URLS") as info:
        iter_sources([f"{base_url}/img.png"], roots=[], urls=UrlPolicy(timeout_s=TIMEOUT_S))
    assert info.value.field == "data[0]"


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest",
        "http://[::1]/x",
        "https://10.0.0.1/a.png",
        "http://0.0.0.0:9/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://224.0.0.1/x",
    ],
)
def test_private_literals_are_refused_before_connecting(url: str) -> None:
    # No server listens on these: the refusal (not a connection error) shows the check came first.
    with pytest.raises(BadInput, match="loopback/private/link-local") as info:
        fetch_url(url, UrlPolicy(timeout_s=TIMEOUT_S), field="data[3]")
    assert info.value.field == "data[3]"


def test_allowed_private_url_gives_the_exact_bytes(base_url: str) -> None:
    url = f"{base_url}/img.png"
    [source] = iter_sources([url], roots=[], urls=POLICY)
    assert source == Source(uri=url, position=0, explicit=True, content=PNG)
    assert source.read() == PNG


def test_host_header_names_the_host_not_the_address(base_url: str) -> None:
    port = base_url.rsplit(":", 1)[1]
    # localhost may resolve to ::1 first, where nothing listens: the next checked address is tried.
    assert fetch_url(f"http://localhost:{port}/host", POLICY, field="data[0]") == f"localhost:{port}".encode()


def test_a_bad_url_fails_the_call_before_anything_is_yielded(base_url: str, tmp_path: Path) -> None:
    checked: list[str] = []
    with pytest.raises(BadInput, match="HTTP 404") as info:
        iter_sources([f"{base_url}/img.png", f"{base_url}/missing"], roots=[], urls=POLICY,
                     check=lambda s: checked.append(s.uri))  # fmt: skip
    assert info.value.field == "data[1]"
    assert checked == []


def test_redirects_are_followed(base_url: str) -> None:
    assert fetch_url(f"{base_url}/redirect", POLICY, field="data[0]") == PNG


def test_redirect_targets_are_checked_too(base_url: str) -> None:
    with pytest.raises(BadInput, match="redirects more than 3 times"):
        fetch_url(f"{base_url}/loop", POLICY, field="data[0]")
    with pytest.raises(BadInput, match="only http"):
        fetch_url(f"{base_url}/to-ftp", POLICY, field="data[0]")


@pytest.mark.parametrize("path", ["/big", "/big-stream"])
def test_too_large_bodies_are_refused(base_url: str, path: str) -> None:
    with pytest.raises(BadInput, match=f"larger than {MAX_BYTES} bytes"):
        fetch_url(base_url + path, POLICY, field="data[0]")


def test_a_slow_server_times_out(base_url: str) -> None:
    with pytest.raises(BadInput, match=r"could not fetch .*/slow: timed out") as info:
        fetch_url(f"{base_url}/slow", POLICY, field="data[2]")
    assert info.value.field == "data[2]"


def test_a_trickling_server_hits_the_total_deadline(base_url: str) -> None:
    with pytest.raises(BadInput, match=r"/trickle took longer than"):
        fetch_url(f"{base_url}/trickle", POLICY, field="data[0]")


def test_network_errors_name_the_field_and_url(base_url: str) -> None:
    # Port 9 (discard) on loopback: nothing listens there, so the connection is refused.
    with pytest.raises(BadInput, match=r"data\[0\]: could not fetch http://127\.0\.0\.1:9/x"):
        fetch_url("http://127.0.0.1:9/x", POLICY, field="data[0]")
    with pytest.raises(BadInput, match=r"could not resolve the host of http://no-such-host\.invalid/x"):
        fetch_url("http://no-such-host.invalid/x", POLICY, field="data[0]")


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        pytest.param("file:///etc/passwd", "file:// URLs are refused", id="file"),
        pytest.param("ftp://x", "Could not read image", id="ftp-is-not-a-url"),
    ],
)
def test_other_schemes_are_not_fetched(item: str, reason: str) -> None:
    with pytest.raises(BadInput, match=reason):
        iter_sources([item], roots=[], urls=POLICY)
