"""Observability over the real app and a real `simsearch serve`: /metrics scraped and parsed with
prometheus-client's own parser as requests, searches and ingests are made; request ids given, generated,
refused and echoed on both faces; JSON log lines and the slow-request warning of a real server."""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine
from tests.conftest import api_settings, draw_image
from tests.own_postgres import free_port

from simsearch import store
from simsearch.api import create_app

Client = TestClient[Litestar]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

MODEL = {"model": "resnet18", "weights": "none", "size": 64}
_seeds = itertools.count(70_000)  # pictures no other test module draws
# the venv's script whether or not the venv is on PATH (`.venv/bin/python -m pytest`)
SIMSEARCH = shutil.which("simsearch") or str(Path(sys.executable).with_name("simsearch"))


def png() -> str:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(draw_image(next(_seeds)), cv2.COLOR_RGB2BGR))
    assert ok
    return base64.b64encode(encoded.tobytes()).decode()


@contextmanager
def unchecked(client: httpx.Client) -> Iterator[httpx.Client]:
    """The client without the conftest's DeepDetect envelope check: /metrics answers Prometheus text."""
    hooks = client.event_hooks
    client.event_hooks = {"request": hooks["request"], "response": []}
    try:
        yield client
    finally:
        client.event_hooks = hooks


def parse(body: str) -> Samples:
    """Every sample of a Prometheus text exposition, by (sample name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def scrape(client: httpx.Client, **headers: str) -> Samples:
    with unchecked(client):
        response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def labels_of(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(key)[label] for (sample, key) in samples if sample == name and label in dict(key)}


# ---- /metrics --------------------------------------------------------------------------------------


def test_requests_are_counted_by_route_template_and_status(client: Client) -> None:
    template = "/api/v1/services/{name}"
    before = scrape(client)
    missing = f"nope_{uuid.uuid4().hex[:8]}"
    assert client.get(f"/api/v1/services/{missing}").status_code == 404
    assert client.get(f"/no/such/{missing}").status_code == 404  # no route: the DeepDetect face's 404
    after = scrape(client)
    requests = "simsearch_http_requests_total"
    assert value(after, requests, method="GET", route=template, status="404") == 1 + value(
        before, requests, method="GET", route=template, status="404"
    )
    assert value(after, requests, method="GET", route="unmatched", status="404") == 1 + value(
        before, requests, method="GET", route="unmatched", status="404"
    )
    count = "simsearch_http_request_duration_seconds_count"
    assert value(after, count, method="GET", route=template) == 1 + value(before, count, method="GET", route=template)
    assert client.request("BREW", "/api/v1/services").status_code == 405  # methods are bounded too
    assert "BREW" not in labels_of(scrape(client), requests, "method")
    routes = labels_of(after, requests, "route")
    assert not [r for r in routes if missing in r], routes  # templates, never raw paths
    assert "/metrics" in routes  # the scrape before was counted too


def test_metrics_are_not_in_the_openapi_schema(client: Client) -> None:
    paths = client.get("/schema/openapi.json").json()["paths"]
    assert "/metrics" not in paths
    assert all("metrics" not in path for path in paths), sorted(paths)


def _create_and_index(client: Client, count: int) -> str:
    name = f"obs_{uuid.uuid4().hex[:8]}"
    assert client.post("/api/v1/services", json={"name": name, **MODEL}).status_code == 201
    items = [{"data": png()} for _ in range(count)]
    response = client.post(f"/api/v1/services/{name}/images", json={"items": items})
    assert response.status_code == 201, response.text
    return name


def _search(client: Client, name: str) -> None:
    response = client.post(f"/api/v1/services/{name}/search", json={"image": png(), "k": 2})
    assert response.status_code == 200, response.text


def test_ingest_search_and_builds_move_the_counters(client: Client) -> None:
    searches = "simsearch_search_duration_seconds_count"
    before = scrape(client)
    name = _create_and_index(client, 3)
    _search(client, name)  # no generation yet: the exact search
    mid = scrape(client)
    assert value(mid, "simsearch_ingested_images_total", service=name) == 3
    assert value(mid, searches, backend="exact") == value(before, searches, backend="exact") + 1
    assert value(mid, "simsearch_unindexed_vectors", service=name) == 3
    assert ("simsearch_generation_current", frozenset({("service", name)})) not in mid

    built = client.post(f"/api/v1/services/{name}/builds", json={})
    assert built.status_code == 201, built.text
    _search(client, name)
    after = scrape(client)
    assert value(after, searches, backend="faiss") == value(mid, searches, backend="faiss") + 1
    generation = built.json()["id"]
    assert value(after, "simsearch_generation_current", service=name) == generation
    assert value(after, "simsearch_generation_loaded", service=name) == generation  # this process searched it
    assert value(after, "simsearch_generation_lag_seconds", service=name) == 0
    assert value(after, "simsearch_generation_vectors", service=name) == 3
    assert value(after, "simsearch_unindexed_vectors", service=name) == 0
    assert value(after, "simsearch_builds", service=name, status="ready") == 1
    assert value(after, "simsearch_build_last_finished_timestamp_seconds", service=name, status="ready") > 0
    assert after[("simsearch_database_up", frozenset())] == 1
    assert value(after, "simsearch_db_pool_size") == 5  # the conftest engine's default pool
    assert ("simsearch_db_pool_checked_out", frozenset()) in after


def _app_client(engine: Engine, home: Path, **settings: object) -> TestClient[Litestar]:
    return TestClient(create_app(api_settings(home, home, **settings), engine=engine))


def test_metrics_take_the_read_token_or_their_own(engine: Engine, tmp_path: Path) -> None:
    admin, read, scraper = "adm-token", "read-token", "metrics-token"
    bearer = {token: {"Authorization": f"Bearer {token}"} for token in (admin, read, scraper)}
    with _app_client(engine, tmp_path, api_token=admin, read_token=read) as reads:
        assert reads.get("/metrics").status_code == 401
        assert reads.get("/metrics", headers=bearer[read]).status_code == 200
        assert reads.get("/metrics", headers=bearer[admin]).status_code == 200
    with _app_client(engine, tmp_path, api_token=admin, read_token=read, metrics_token=scraper) as own:
        assert own.get("/metrics").status_code == 401
        assert own.get("/metrics", headers=bearer[read]).status_code == 401
        assert own.get("/metrics", headers=bearer[scraper]).status_code == 200
        assert own.get("/metrics", headers=bearer[admin]).status_code == 200
        assert own.get("/api/v1/services", headers=bearer[scraper]).status_code == 401  # it opens only /metrics


def test_a_scrape_with_the_database_down_reports_it_and_still_answers(tmp_path: Path) -> None:
    dead = store.make_engine(
        f"postgresql://nobody@127.0.0.1:{free_port()}/none",  # a port nothing listens on: connection refused
        timeouts=store.Timeouts(connect_s=2, statement_s=5, lock_s=5, pool_s=2),
    )
    try:
        with _app_client(dead, tmp_path) as down:
            response = down.get("/metrics")
        assert response.status_code == 200, response.text
        samples = parse(response.text)
        assert samples[("simsearch_database_up", frozenset())] == 0
        assert ("simsearch_db_pool_size", frozenset()) in samples  # what needs no database is still there
        assert any(name == "simsearch_http_requests_total" for name, _ in samples)
    finally:
        dead.dispose()


# ---- request ids -----------------------------------------------------------------------------------


def test_a_request_id_is_echoed_or_generated_on_both_faces(client: Client) -> None:
    for path in ("/api/v1/services", "/info", "/api/v1/services/missing_one", "/services/missing_one", "/none"):
        given = client.get(path, headers={"X-Request-ID": "trace-7.a:b=c/d+e"})
        assert given.headers["x-request-id"] == "trace-7.a:b=c/d+e", path
        made = [client.get(path).headers["x-request-id"] for _ in range(2)]
        assert all(re.fullmatch(r"[0-9a-f]{32}", m) for m in made), made
        assert made[0] != made[1]
    problem = client.post("/api/v1/services", content=b"{not json", headers={"X-Request-ID": "bad-body-1"})
    assert problem.status_code == 400
    assert problem.headers["x-request-id"] == "bad-body-1"


@pytest.mark.parametrize("hostile", ["a" * 129, 'x" onclick="y', "two words", "é-non-ascii", "<script>", ""])
def test_a_hostile_request_id_is_replaced(client: Client, hostile: str) -> None:
    echoed = client.get("/info", headers={"X-Request-ID": hostile.encode()})
    assert re.fullmatch(r"[0-9a-f]{32}", echoed.headers["x-request-id"]), echoed.headers
    assert len(echoed.headers.get_list("x-request-id")) == 1


def test_text_log_lines_carry_the_request_id(client: Client, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert client.get("/info", headers={"X-Request-ID": "text-trace-1"}).status_code == 200
    lines = [line for line in capsys.readouterr().err.splitlines() if "[text-trace-1]" in line]
    assert len(lines) == 1, lines  # the access line; the default threshold (1 s) is not reached
    assert re.search(r" INFO simsearch\.access \[text-trace-1\] GET /info 200 [0-9.]+ ms$", lines[0]), lines


# ---- logs of a real server -------------------------------------------------------------------------


def _wait_healthy(base: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(f"{base}/api/v1/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"server did not become healthy: {log.read_text()}")


@pytest.fixture
def json_server(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`simsearch serve` with JSON logs and a tiny slow-request threshold; yields (base url, its stderr)."""
    port, log = free_port(), tmp_path / "serve.err"
    settings = {"SIMSEARCH_LOG_FORMAT": "json", "SIMSEARCH_SLOW_REQUEST_MS": "0.001"}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [SIMSEARCH, "serve", "--port", str(port)], env=env | settings, stdout=subprocess.DEVNULL, stderr=sink
        )
        try:
            _wait_healthy(f"http://127.0.0.1:{port}", process, log)
            yield f"http://127.0.0.1:{port}", log
        finally:
            process.terminate()
            process.wait(timeout=60)


def _json_lines(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def test_a_server_logs_json_lines_with_the_request_id_and_slow_requests(json_server: tuple[str, Path]) -> None:
    base, log = json_server
    answer = httpx.get(f"{base}/services/missing_one", headers={"X-Request-ID": "json-trace-1"}, timeout=30)
    assert answer.status_code == 404
    assert answer.headers["x-request-id"] == "json-trace-1"
    scraped = httpx.get(f"{base}/metrics", timeout=30)
    assert scraped.status_code == 200
    samples = parse(scraped.text)
    route = "/services/{name}"
    assert value(samples, "simsearch_http_requests_total", method="GET", route=route, status="404") == 1
    assert value(samples, "simsearch_database_up") == 1
    deadline = time.monotonic() + 10
    while not [line for line in _json_lines(log) if line.get("request_id") == "json-trace-1"]:
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    time.sleep(0.2)  # the slow-request line follows the access line
    mine = [line for line in _json_lines(log) if line.get("request_id") == "json-trace-1"]
    access = [line for line in mine if line["level"] == "INFO"]
    slow = [line for line in mine if line["level"] == "WARNING"]
    assert len(access) == 1, mine
    assert access[0]["logger"] == "simsearch.access"
    assert (access[0]["method"], access[0]["route"], access[0]["status"]) == ("GET", route, 404)
    assert access[0]["path"] == "/services/missing_one"
    assert access[0]["duration_ms"] >= 0
    assert len(slow) == 1, mine
    assert slow[0]["message"].startswith("slow request: GET /services/missing_one 404")
