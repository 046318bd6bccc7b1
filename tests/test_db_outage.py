"""A real `simsearch serve` while its Postgres (a server of this test's own) is stopped, frozen and
brought back: every face answers 503 without internals, the outage is logged once, and the server
recovers by itself."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.conftest import subprocess_env
from tests.ddwire import check_every_response
from tests.own_postgres import ScratchPostgres, free_port, own_postgres
from tests.test_api_server import _wait_healthy
from tests.test_cli import SIMSEARCH

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# short timeouts, so that the test's own requests come back quickly while the server is frozen
TIMEOUTS = {
    "SIMSEARCH_DB_CONNECT_TIMEOUT_S": "2",
    "SIMSEARCH_DB_STATEMENT_TIMEOUT_S": "10",
    "SIMSEARCH_DB_LOCK_TIMEOUT_S": "5",
    "SIMSEARCH_DB_POOL_TIMEOUT_S": "5",
}
OUTAGE_LOG = "database unavailable"


@pytest.fixture(scope="module")
def postgres() -> Iterator[ScratchPostgres]:
    with own_postgres() as server:
        yield server


@pytest.fixture(scope="module")
def live(postgres: ScratchPostgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`simsearch serve` (one worker) on the scratch server; yields (base url, its log file)."""
    home = tmp_path_factory.mktemp("outage-home")
    log = home / "serve.log"
    port = free_port()
    env = subprocess_env(home, database_url=postgres.create_database("outage"), data=home, **TIMEOUTS)
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [SIMSEARCH, "serve", "--port", str(port)], env=env, stdout=sink, stderr=sink, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base, process)
        yield base, log
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


def _leaks(text: str, postgres: ScratchPostgres) -> list[str]:
    """Internals an unauthenticated caller must not learn."""
    secrets = (str(postgres.port), "127.0.0.1", str(postgres.pgdata), "psycopg", "sqlalchemy", "OperationalError")
    return [secret for secret in secrets if secret.lower() in text.lower()]


def _assert_unavailable(client: httpx.Client, postgres: ScratchPostgres) -> None:
    """Both faces answer 503 without internals; health says the database is down."""
    health = client.get("/api/v1/health")
    assert health.status_code == 503, health.text
    assert health.json()["database"] is False
    native = client.get("/api/v1/services")
    assert native.status_code == 503, native.text
    assert native.headers["content-type"].startswith("application/problem+json")
    assert "retry" in native.json()["detail"]
    answers = [health, native]
    for path in ("/services/outage", "/info"):
        answer = client.get(path)  # the envelope rules are checked on every answer (ddwire)
        assert answer.status_code == 503, answer.text
        assert answer.json()["status"]["msg"] == "ServiceUnavailable"
        assert "retry" in answer.json()["status"]["dd_msg"]
        answers.append(answer)
    search = client.post("/predict", json={"service": "outage", "data": [], "parameters": {"output": {"search": True}}})
    assert search.status_code == 503, search.text
    for answer in [*answers, search]:
        assert not _leaks(answer.text, postgres), answer.text


@pytest.fixture(scope="module")
def client(live: tuple[str, Path]) -> Iterator[httpx.Client]:
    """A client of the live server (a request that hangs fails the test by this client's own timeout),
    with the service `outage` created."""
    with check_every_response(httpx.Client(base_url=live[0], timeout=60)) as http:
        created = http.put(
            "/services/outage",
            json={
                "mllib": "torch",
                "parameters": {
                    "input": {"width": 64, "height": 64},
                    "mllib": {"template": "resnet18", "weights": "none"},
                },
            },
        )
        assert created.status_code == 201, created.text
        yield http


def _assert_back(client: httpx.Client) -> None:
    assert client.get("/api/v1/health").status_code == 200  # the first request after it is back
    assert client.get("/services/outage").status_code == 200


def _assert_logged_once(log: Path, before: int) -> None:
    logged = log.read_text()[before:]
    assert "Traceback" not in logged, logged
    assert logged.count(OUTAGE_LOG) == 1, logged  # once for the outage, with the detail for the operator


def test_a_stopped_database_is_a_503_without_internals_then_recovers(
    live: tuple[str, Path], client: httpx.Client, postgres: ScratchPostgres
) -> None:
    _assert_back(client)
    before = len(live[1].read_text())
    postgres.stop()
    try:
        _assert_unavailable(client, postgres)
    finally:
        postgres.start()
    _assert_back(client)
    _assert_logged_once(live[1], before)


def test_a_frozen_database_is_a_503_without_waiting_for_it_then_recovers(
    live: tuple[str, Path], client: httpx.Client, postgres: ScratchPostgres
) -> None:
    _assert_back(client)
    before = len(live[1].read_text())
    frozen = postgres.freeze()  # it does not answer at all: only client-side timeouts help
    try:
        _assert_unavailable(client, postgres)
    finally:
        postgres.thaw(frozen)
    _assert_back(client)
    _assert_logged_once(live[1], before)
