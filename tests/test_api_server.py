"""The API as users run it: `simsearch serve` in its own process (granian, two workers), real HTTP,
concurrent clients."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import _fresh_database, make_folder, subprocess_env
from tests.ddwire import check_envelope
from tests.own_postgres import free_port
from tests.test_cli import SIMSEARCH

pytestmark = pytest.mark.slow


def _server_env(server_url: str, home: Path, data: Path, name: str) -> dict[str, str]:
    return subprocess_env(home, database_url=_fresh_database(server_url, name), data=data)


def _wait_healthy(base: str, process: subprocess.Popen[Any], timeout: float = 180) -> None:
    """Poll the health route (an observable state) until the server answers 200, or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{base}/api/v1/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError("server did not become healthy")


@pytest.fixture(scope="module")
def live(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real `simsearch serve` process with two workers on a loopback port; yields (base url, data dir)."""
    home, data = tmp_path_factory.mktemp("live-home"), tmp_path_factory.mktemp("live-data")
    port = free_port()
    env = _server_env(server_url, home, data, "live_server")
    process = subprocess.Popen(
        [SIMSEARCH, "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base, process)
        yield base, data
    finally:
        process.terminate()
        process.wait(timeout=60)


def _predict(base: str, body: dict[str, object]) -> dict[str, object]:
    response = httpx.post(f"{base}/predict", json=body, timeout=300)
    answer: dict[str, object] = check_envelope(response)
    assert response.status_code == answer["status"]["code"] == 200, answer  # type: ignore[index]
    return answer


def test_parallel_index_then_parallel_search(live: tuple[str, Path]) -> None:
    base, data = live
    created = httpx.put(
        f"{base}/services/live",
        json={
            "mllib": "torch",
            "parameters": {"input": {"width": 64, "height": 64}, "mllib": {"template": "resnet18", "weights": "none"}},
        },
        timeout=300,
    )
    assert created.status_code == 201, created.text
    check_envelope(created)
    first = make_folder(data / "first", 8)
    second = make_folder(data / "second", 8, start=100)

    def index(i: int, path: Path, prefix: str) -> dict[str, object]:
        return _predict(
            base,
            {
                "service": "live",
                "data": [str(path)],
                "index_uris": [f"{prefix}-{i}"],
                "parameters": {"output": {"index": True}},
            },
        )

    def search(path: Path) -> list[dict[str, object]]:
        answer = _predict(
            base, {"service": "live", "data": [str(path)], "parameters": {"output": {"search": True, "search_nn": 3}}}
        )
        return answer["body"]["predictions"][0]["nns"]  # type: ignore[index,no-any-return]

    with ThreadPoolExecutor(8) as pool:
        indexed = list(pool.map(lambda ip: index(ip[0], ip[1], "first"), enumerate(first)))
    assert all(a["body"]["predictions"][0]["indexed"] is True for a in indexed)  # type: ignore[index]

    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(search, first))
    for i, nns in enumerate(found):
        assert nns[0]["uri"] == f"first-{i}"
        assert nns[0]["dist"] < 1e-4

    # searches stay correct while other clients index and a build swaps generations in
    with ThreadPoolExecutor(8) as pool:
        writes = [pool.submit(index, i, p, "second") for i, p in enumerate(second)]
        build = pool.submit(
            _predict, base, {"service": "live", "data": [], "parameters": {"output": {"build_index": True}}}
        )
        reads = [pool.submit(search, p) for p in first]
        assert all(w.result()["status"]["code"] == 200 for w in writes)  # type: ignore[index]
        assert build.result()["status"]["code"] == 200  # type: ignore[index]
        for i, read in enumerate(reads):
            assert read.result()[0]["uri"] == f"first-{i}"

    # both workers see every vector: 16 stored, and each second-batch image finds itself
    info = check_envelope(httpx.get(f"{base}/services/live", timeout=60))
    assert info["body"]["index"]["count"] == 16
    with ThreadPoolExecutor(8) as pool:
        for i, nns in enumerate(pool.map(search, second)):
            assert nns[0]["uri"] == f"second-{i}"


def _serve_stderr(env: dict[str, str], host: str) -> str:
    """Start `serve`, read its first lines of stderr until it listens, stop it."""
    process = subprocess.Popen(
        [SIMSEARCH, "serve", "--host", host, "--port", str(free_port())],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    try:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if "simsearch" in line and "worker" in line:
                break
    finally:
        process.terminate()
        process.wait(timeout=60)
    return "".join(lines)


def test_serve_warns_without_a_token_on_a_public_address(server_url: str, tmp_path: Path) -> None:
    env = _server_env(server_url, tmp_path, tmp_path, "live_warn")
    assert "without authentication" in _serve_stderr(env, "0.0.0.0")  # noqa: S104 - the case under test
    assert "without authentication" not in _serve_stderr(env, "127.0.0.1")
    with_token = {**env, "SIMSEARCH_API_TOKEN": "s3cret"}
    assert "without authentication" not in _serve_stderr(with_token, "0.0.0.0")  # noqa: S104
