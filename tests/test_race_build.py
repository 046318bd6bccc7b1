"""What a generation contains is exact (invariant 3): a build that runs while a writer's transaction is
open never loses that writer's images, and deletes committed during a build never come back.

The interleavings are made deterministic by Postgres itself: a trigger installed in the test's database
makes every transaction that wrote the *gate* image wait at COMMIT for an advisory lock the test holds,
so "written but not committed" lasts exactly as long as the test wants. Tests wait for observable states
(a backend waiting on a lock, a process that exited), never for time to pass. Everything is driven from
outside: HTTP to a real `simsearch serve`, and the CLI as subprocesses.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest
from psycopg import sql
from sqlalchemy import text
from tests.conftest import _fresh_database, draw_image, subprocess_env, write_image
from tests.own_postgres import free_port
from tests.test_api_server import _wait_healthy
from tests.test_cli import SIMSEARCH, run

from simsearch import store

pytestmark = pytest.mark.slow

_GATE_KEY = (7771, 1)  # the advisory lock the test holds to keep a gated transaction from committing
MODEL = {"model": "resnet18", "weights": "none", "size": 32}
LOCK_TIMEOUT_S = 2  # the server's lock timeout: short, so a wait that should not be bounded by it shows


def _libpq(database_url: str) -> str:
    """The SQLAlchemy URL the fixtures make, as libpq takes it."""
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


def _install_gate(database_url: str, gate_uri: str) -> None:
    """Make every transaction that stores a vector of the image `gate_uri` wait at COMMIT for the gate."""
    function = sql.SQL(
        """
        CREATE OR REPLACE FUNCTION test_gate() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF EXISTS (SELECT 1 FROM image WHERE id = NEW.image_id AND uri = {uri}) THEN
            PERFORM set_config('lock_timeout', '0', true);  -- the gate holds as long as the test wants
            PERFORM pg_advisory_xact_lock_shared({a}, {b});
          END IF;
          RETURN NULL;
        END $$
        """
    ).format(uri=sql.Literal(gate_uri), a=sql.Literal(_GATE_KEY[0]), b=sql.Literal(_GATE_KEY[1]))
    with psycopg.connect(_libpq(database_url), autocommit=True) as conn:
        conn.execute(function)
        conn.execute("DROP TRIGGER IF EXISTS test_gate ON embedding")
        conn.execute(
            "CREATE CONSTRAINT TRIGGER test_gate AFTER INSERT ON embedding DEFERRABLE INITIALLY DEFERRED"
            " FOR EACH ROW EXECUTE FUNCTION test_gate()"
        )


class Gate:
    """Holds the gate lock on its own connection until `open()`."""

    def __init__(self, database_url: str) -> None:
        self._conn = psycopg.connect(_libpq(database_url), autocommit=True)
        self._conn.execute("SELECT pg_advisory_lock(%s, %s)", _GATE_KEY)

    def open(self) -> None:
        if not self._conn.closed:
            self._conn.execute("SELECT pg_advisory_unlock(%s, %s)", _GATE_KEY)
            self._conn.close()


def backends_waiting_on_locks(database_url: str) -> int:
    with psycopg.connect(_libpq(database_url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    return int(row[0]) if row else 0


def lock_waiters_older_than(database_url: str, seconds: float) -> int:
    """Backends that have waited on a lock for longer than `seconds`."""
    with psycopg.connect(_libpq(database_url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            " AND now() - query_start > make_interval(secs => %s)",
            (seconds,),
        ).fetchone()
    return int(row[0]) if row else 0


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 240) -> None:
    """Poll an observable state (not a guess at how long something takes); fail loudly if it never comes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


BATCH = {"SIMSEARCH_BATCH_SIZE": "8"}  # several batches per call: the first one's commit is gated


# ---- through the HTTP API of a real server ---------------------------------------------------------


@pytest.fixture(scope="module")
def served(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """A real `simsearch serve` on a loopback port: (base url, its database url, its data root)."""
    home, data = tmp_path_factory.mktemp("race-home"), tmp_path_factory.mktemp("race-data")
    database_url = _fresh_database(server_url, "race_server")
    port = free_port()
    process = subprocess.Popen(
        [SIMSEARCH, "serve", "--port", str(port)],
        env=subprocess_env(
            home, database_url=database_url, data=data, SIMSEARCH_DB_LOCK_TIMEOUT_S=str(LOCK_TIMEOUT_S), **BATCH
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base, process)
        yield base, database_url, data
    finally:
        process.terminate()
        process.wait(timeout=60)


def _new_service(http: httpx.Client, name: str) -> None:
    response = http.post("/api/v1/services", json={"name": name, **MODEL})
    assert response.status_code == 201, response.text


def _index(http: httpx.Client, name: str, paths: list[Path]) -> list[int]:
    response = http.post(f"/api/v1/services/{name}/images", json={"items": [{"data": str(p)} for p in paths]})
    assert response.status_code == 201, response.text
    return [int(image["id"]) for image in response.json()["images"]]


def _first_hit(http: httpx.Client, name: str, image_id: int) -> int | None:
    response = http.post(f"/api/v1/services/{name}/search", json={"image_id": image_id, "k": 1})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    return int(results[0]["image_id"]) if results else None


def _not_found_first(http: httpx.Client, name: str, image_ids: list[int]) -> list[int]:
    return [i for i in image_ids if _first_hit(http, name, i) != i]


def test_a_build_during_an_open_write_loses_none_of_its_images_api(served: tuple[str, str, Path]) -> None:
    base, database_url, data = served
    folder = data / "api-race"
    a_paths = [write_image(folder / f"a{i:03d}.png", draw_image(5000 + i)) for i in range(40)]
    b_path = write_image(folder / "b.png", draw_image(4999))
    c_path = write_image(folder / "c.png", draw_image(4998))
    _install_gate(database_url, str(a_paths[0]))
    gate = Gate(database_url)
    with httpx.Client(base_url=base, timeout=300) as http, ThreadPoolExecutor(3) as pool:
        _new_service(http, "race_api")
        try:
            # A: 40 images (5 batches) in one request, one transaction, held at COMMIT by the gate
            request_a: Future[list[int]] = pool.submit(_index, http, "race_api", a_paths)
            wait_until(lambda: backends_waiting_on_locks(database_url) >= 1 or request_a.done(), "A to reach COMMIT")
            assert not request_a.done(), "request A committed through the gate"
            # B: one image, committed at once (its ids are above all of A's)
            [b_id] = _index(http, "race_api", [b_path])
            build: Future[httpx.Response] = pool.submit(http.post, "/api/v1/services/race_api/builds", json={})
            wait_until(
                lambda: build.done() or backends_waiting_on_locks(database_url) >= 2, "the build to finish or wait"
            )
            # C: a write that arrives while the build waits for A waits for the build's snapshot, however
            # much longer than the lock timeout A takes to commit (it is not a stuck lock)
            request_c: Future[list[int]] = pool.submit(_index, http, "race_api", [c_path])
            wait_until(
                lambda: request_c.done() or lock_waiters_older_than(database_url, 1.5 * LOCK_TIMEOUT_S) >= 3,
                "C to fail or to wait past the lock timeout",
            )
        finally:
            gate.open()
        a_ids = request_a.result()
        assert build.result().status_code == 201, build.result().text
        [c_id] = request_c.result()
        assert _not_found_first(http, "race_api", [*a_ids, b_id, c_id]) == []


def test_stress_writers_deleters_builds_and_searchers_agree_with_what_was_acknowledged(
    served: tuple[str, str, Path],
) -> None:
    """Several writers, a deleter, a builder and searchers for a bounded time per round; after each round
    every acknowledged image finds itself first, and no search ever returned an image whose delete had
    been acknowledged before that search was sent."""
    base, _, data = served
    rounds = int(os.environ.get("SIMSEARCH_STRESS_ROUNDS", "4"))
    round_s = float(os.environ.get("SIMSEARCH_STRESS_ROUND_S", "4"))
    folder = data / "stress"
    seeds = iter(range(100_000, 10_000_000))
    seed_lock = threading.Lock()
    acknowledged: dict[int, int] = {}  # image id -> round it was acknowledged in
    deleted: set[int] = set()  # deletes acknowledged (204)
    deleting: set[int] = set()  # deletes sent (a superset of `deleted`)
    state = threading.Lock()
    violations: list[str] = []

    def new_paths(count: int) -> list[Path]:
        with seed_lock:
            chosen = [next(seeds) for _ in range(count)]
        return [write_image(folder / f"s{seed}.png", draw_image(seed)) for seed in chosen]

    def writer(http: httpx.Client, stop: threading.Event, rng: random.Random, round_no: int) -> None:
        while not stop.is_set():
            ids = _index(http, "stress", new_paths(rng.randint(1, 12)))  # 1 or 2 batches of 8
            with state:
                acknowledged.update(dict.fromkeys(ids, round_no))

    def deleter(http: httpx.Client, stop: threading.Event, rng: random.Random) -> None:
        while not stop.is_set():
            with state:
                candidates = sorted(acknowledged)
            if len(candidates) < 4:
                stop.wait(0.05)  # let the writers get ahead
                continue
            victim = rng.choice(candidates)
            with state:
                deleting.add(victim)  # from now on a search may rightly miss it, before the 204 arrives
            response = http.delete(f"/api/v1/images/{victim}")
            assert response.status_code in (204, 404), response.text
            with state:
                acknowledged.pop(victim, None)
                deleted.add(victim)

    def builder(http: httpx.Client, stop: threading.Event) -> None:
        while not stop.is_set():
            response = http.post("/api/v1/services/stress/builds", json={})
            assert response.status_code in (201, 400), response.text  # 400: nothing stored yet
            stop.wait(0.2)  # leave each generation serving a moment, so the searchers can check it

    def searcher(http: httpx.Client, stop: threading.Event, rng: random.Random) -> None:
        while not stop.is_set():
            with state:
                gone = set(deleted)
                recent = sorted(acknowledged)[-24:]  # a lost image would be among the newest
            vector = np.random.default_rng(rng.randrange(1 << 30)).random(512).astype(float).tolist()
            response = http.post("/api/v1/services/stress/search", json={"vector": vector, "k": 20})
            assert response.status_code == 200, response.text
            returned = {int(hit["image_id"]) for hit in response.json()["results"]}
            if returned & gone:
                violations.append(f"deleted images {sorted(returned & gone)} were returned")
            if recent:
                image_id = rng.choice(recent)
                response = http.post("/api/v1/services/stress/search", json={"image_id": image_id, "k": 1})
                first = response.json()["results"][0]["image_id"] if response.status_code == 200 else None
                with state:
                    was_deleted = image_id in deleting
                if first != image_id and not was_deleted:
                    violations.append(f"acknowledged image {image_id} was not found first ({response.text[:200]})")

    with httpx.Client(base_url=base, timeout=300) as http:
        _new_service(http, "stress")
        for round_no in range(rounds):
            stop = threading.Event()
            seeds_of_round = np.random.default_rng(round_no).integers(0, 1 << 30, 6).tolist()
            with ThreadPoolExecutor(7) as pool:
                futures = [
                    *(pool.submit(writer, http, stop, random.Random(seeds_of_round[i]), round_no) for i in range(3)),
                    pool.submit(deleter, http, stop, random.Random(seeds_of_round[3])),
                    pool.submit(builder, http, stop),
                    *(pool.submit(searcher, http, stop, random.Random(seeds_of_round[4 + i])) for i in range(2)),
                ]
                stop.wait(round_s)  # the round's length; correctness never depends on it
                stop.set()
                for future in futures:
                    future.result()
            assert violations == [], violations
            with state:
                alive = sorted(acknowledged)
            lost = _not_found_first(http, "stress", alive)
            assert lost == [], f"round {round_no}: {len(lost)} of {len(alive)} acknowledged images not found first"


# ---- through the CLI -------------------------------------------------------------------------------


def test_a_build_during_an_uncommitted_cli_batch_loses_none_of_its_images(env: dict[str, str], data_dir: Path) -> None:
    env = env | BATCH
    database_url = env["DATABASE_URL"]
    run(env, "db", "upgrade")
    run(env, "service", "create", "racecli", "--model", "resnet18", "--weights", "none", "--size", "32")
    folder = data_dir / "a"
    a_paths = [write_image(folder / f"a{i:03d}.png", draw_image(7000 + i)) for i in range(20)]  # 3 batches
    b_path = write_image(data_dir / "b.png", draw_image(6999))
    _install_gate(database_url, str(a_paths[0]))  # the first batch's COMMIT waits at the gate
    gate = Gate(database_url)
    index_a = subprocess.Popen([SIMSEARCH, "index", str(folder), "--service", "racecli"], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    build: subprocess.Popen[str] | None = None
    try:
        wait_until(lambda: backends_waiting_on_locks(database_url) >= 1 or index_a.poll() is not None, "A's batch")
        assert index_a.poll() is None, index_a.communicate()
        run(env, "index", str(b_path), "--service", "racecli")
        build = subprocess.Popen([SIMSEARCH, "build", "--service", "racecli"], env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        wait_until(
            lambda: build is not None and (build.poll() is not None or backends_waiting_on_locks(database_url) >= 2),
            "the build to finish or wait",
        )
    finally:
        gate.open()
    _, a_err = index_a.communicate(timeout=300)
    assert index_a.returncode == 0, a_err
    _, build_err = build.communicate(timeout=300)
    assert build.returncode == 0, build_err
    queries = [*a_paths, b_path]
    found = json.loads(run(env, "search", *map(str, queries), "--service", "racecli", "-k", "1", "--json").stdout)
    lost = [q["uri"] for q in found if not q["nns"] or q["nns"][0]["uri"] != q["uri"]]
    assert lost == []


# ---- the fence and the timeouts --------------------------------------------------------------------


def test_a_write_behind_a_waiting_build_outwaits_the_statement_and_lock_timeouts(server_url: str) -> None:
    """A write that meets a build waiting for an open writer waits for the build's snapshot, however much
    longer than the statement and lock timeouts that takes (it is no stuck statement), and keeps both
    timeouts for the rest of its transaction."""
    url = _fresh_database(server_url, "race_fence_timeouts")
    engine = store.make_engine(url, timeouts=store.Timeouts(connect_s=5, statement_s=1, lock_s=1, pool_s=30))
    service_id = 1  # the fence is an advisory lock keyed by the service id: no rows needed

    def snapshot() -> None:
        with engine.connect() as fence, fence.begin():
            store.fence_writers(fence, service_id)

    def late_write() -> tuple[str, str]:
        with engine.connect() as conn, conn.begin():
            store.join_writers(conn, service_id)
            row = conn.execute(text("SELECT current_setting('statement_timeout'), current_setting('lock_timeout')"))
            statement, lock = row.one()
            return str(statement), str(lock)

    open_writer = engine.connect()
    writing = open_writer.begin()
    store.join_writers(open_writer, service_id)
    try:
        with ThreadPoolExecutor(2) as pool:
            fenced = pool.submit(snapshot)
            wait_until(lambda: fenced.done() or backends_waiting_on_locks(url) >= 1, "the build's fence to wait")
            late = pool.submit(late_write)
            wait_until(
                lambda: late.done() or lock_waiters_older_than(url, 2.5) >= 2,
                "the late write to fail or to outwait both 1 s timeouts",
            )
            writing.commit()
            fenced.result()
            assert late.result() == ("1s", "1s")
    finally:
        open_writer.close()
        engine.dispose()
