"""Replicas as operators run them: `simsearch serve` processes with different SIMSEARCH_HOMEs (other hosts)
over one Postgres and one artefact store (a real SeaweedFS S3 server, or a shared directory). A builds;
the others serve each new generation within seconds without a failed search; a replica started later
loads it at start; a replica that cannot reach the store answers exactly from Postgres and says it is
degraded; a build whose store is down fails cleanly and the generation held keeps serving."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import make_folder
from tests.own_postgres import free_port
from tests.servers import Replica, S3Server, seaweed_s3, start_replica, wait_until

pytestmark = pytest.mark.slow

_SERVICE = {"model": "resnet18", "weights": "none", "size": 64}


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with seaweed_s3(tmp_path_factory.mktemp("weed")) as server:
        yield server


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("replica-data")


@pytest.fixture(scope="module")
def builder(s3: S3Server, database_url: str, data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    """Replica A: publishes to S3; the first to start, so it migrates the module's database."""
    replica = start_replica(tmp_path_factory.mktemp("home-a"), database_url, data, **s3.env("replicas"))
    yield replica
    replica.stop()


def _create_and_build(replica: Replica, data: Path, count: int = 8) -> tuple[str, list[int], int]:
    """A new service on `replica` with `count` images and a first generation: (name, image ids, generation)."""
    name = f"rep_{uuid.uuid4().hex[:6]}"
    paths = make_folder(data / name, count)
    assert replica.post("/api/v1/services", {"name": name, **_SERVICE}).status_code == 201
    indexed = replica.post(f"/api/v1/services/{name}/images", {"items": [{"data": str(p)} for p in paths]})
    assert indexed.status_code == 201, indexed.text
    ids = [int(image["id"]) for image in indexed.json()["images"]]
    return name, ids, _build(replica, name)


def _build(replica: Replica, name: str, index_type: str = "Flat") -> int:
    built = replica.post(f"/api/v1/services/{name}/builds", {"index_type": index_type})
    assert built.status_code == 201, built.text
    return int(built.json()["id"])


@dataclass
class Searcher:
    """Searches one replica in a loop (as a client would) and records each answer's status and generation."""

    replica: Replica
    name: str
    image_id: int
    answers: list[tuple[float, int, int | None]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Searcher:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            response = self.replica.search(self.name, self.image_id, k=1)
            body: dict[str, Any] = response.json() if response.status_code == 200 else {}
            right = response.status_code == 200 and body["results"][0]["image_id"] == self.image_id
            self.answers.append((time.monotonic(), response.status_code if right else -1, body.get("generation")))
            time.sleep(0.02)

    def serves(self, generation: int) -> bool:
        return bool(self.answers) and self.answers[-1][2] == generation

    @property
    def failed(self) -> list[tuple[float, int, int | None]]:
        return [a for a in self.answers if a[1] != 200]


def _follow_builds(a: Replica, b: Replica, data: Path) -> tuple[str, list[int], int]:
    """A builds twice while B is searched in a loop: B serves each generation within seconds, none failing."""
    name, ids, first = _create_and_build(a, data)
    with Searcher(b, name, ids[2]) as searcher:
        wait_until(lambda: searcher.serves(first), 30, f"B never served generation {first}")
        built_at = time.monotonic()
        second = _build(a, name, "HNSW16")
        took = wait_until(lambda: searcher.serves(second), 10, f"B never served generation {second}")
        time.sleep(0.2)
    assert took < 5, f"B took {took:.2f} s to serve the new generation"
    assert searcher.failed == [], searcher.failed
    assert [g for t, _, g in searcher.answers if t > built_at + took + 0.05] == [second] * len(
        [t for t, _, _ in searcher.answers if t > built_at + took + 0.05]
    )
    # B fetched the files into its own cache (it never built, and never read A's folder)
    assert (b.home / "cache" / name / f"gen-{second:08d}" / "index.faiss").is_file()
    assert not (b.home / "indexes" / name).exists()
    shutil.rmtree(a.home / "indexes" / name)  # A's own build folder is on A's host only: no replica needs it
    return name, ids, second


def _loads_at_start(replica: Replica, name: str, generation: int) -> None:
    """A replica started after the build is ready with the generation loaded, before any search."""
    wait_until(lambda: replica.ready().status_code == 200, 60, "the late replica never became ready")
    ready = replica.ready().json()
    [entry] = [s for s in ready["services"] if s["name"] == name]
    assert (ready["status"], entry["state"], entry["loaded"]) == ("ready", "current", generation), ready
    found = replica.search(name, 1, k=1)
    assert found.status_code == 200
    assert found.json()["generation"] == generation


def test_replicas_on_other_homes_serve_each_generation_from_s3(
    builder: Replica, s3: S3Server, database_url: str, data: Path, tmp_path: Path
) -> None:
    b = start_replica(tmp_path / "home-b", database_url, data, **s3.env("replicas"))
    try:
        name, _, second = _follow_builds(builder, b, data)
    finally:
        b.stop()
    late = start_replica(tmp_path / "home-c", database_url, data, **s3.env("replicas"))
    try:
        _loads_at_start(late, name, second)
    finally:
        late.stop()


def test_replicas_on_other_homes_serve_each_generation_from_a_shared_directory(
    builder: Replica, database_url: str, data: Path, tmp_path: Path
) -> None:
    shared = {"SIMSEARCH_ARTEFACTS": str(tmp_path / "shared")}
    a = start_replica(tmp_path / "home-a", database_url, data, **shared)
    b = start_replica(tmp_path / "home-b", database_url, data, **shared)
    try:
        name, _, second = _follow_builds(a, b, data)
        assert (tmp_path / "shared" / name / f"gen-{second:08d}" / "index.faiss").is_file()
    finally:
        a.stop()
        b.stop()


def test_a_replica_that_cannot_reach_the_store_answers_exactly_and_says_degraded(
    builder: Replica, s3: S3Server, database_url: str, data: Path, tmp_path: Path
) -> None:
    name, ids, generation = _create_and_build(builder, data)
    dead = s3.env("replicas") | {"SIMSEARCH_S3_ENDPOINT": f"http://127.0.0.1:{free_port()}"}  # nothing listens
    d = start_replica(tmp_path / "home-d", database_url, data, **dead)
    try:
        wait_until(lambda: d.ready().status_code == 200, 60, "the degraded replica never said it can serve")
        ready = d.ready().json()
        [entry] = [s for s in ready["services"] if s["name"] == name]
        assert ready["status"] == "degraded"
        assert (entry["state"], entry["reason"], entry["generation"], entry["loaded"]) == (
            "degraded",
            "store unreachable",
            generation,
            None,
        )
        assert entry["lag_s"] >= 0
        for image_id in ids[:6] * 3:  # exact search through Postgres: right answers, no generation
            found = d.search(name, image_id, k=2)
            assert found.status_code == 200, found.text
            assert (found.json()["generation"], found.json()["results"][0]["image_id"]) == (None, image_id)
        assert d.get("/api/v1/health").json()["status"] == "ok"
        log = d.log
        # one line for the generation and reason (each service it serves has its own), however many searches
        assert log.count(f"generation {generation} of {name} cannot be loaded") == 1, log[-4000:]
        assert "Traceback" not in log
    finally:
        d.stop()

    # the store goes away under running replicas: a build cannot publish, so it fails (503, recorded as
    # failed) and the current generation, held by the builder, keeps answering
    assert builder.search(name, ids[0], k=1).json()["generation"] == generation  # loaded while the store is up
    s3.stop()
    try:
        refused = builder.post(f"/api/v1/services/{name}/builds", {})
        assert refused.status_code == 503, refused.text
        assert "store unreachable" in refused.json()["detail"]
        builds = builder.get(f"/api/v1/services/{name}/builds").json()
        assert (builds[0]["status"], builds[1]["id"], builds[1]["status"]) == ("failed", generation, "ready")
        for image_id in ids[:4]:
            found = builder.search(name, image_id, k=1)
            assert found.status_code == 200
            assert (found.json()["generation"], found.json()["results"][0]["image_id"]) == (generation, image_id)
        assert builder.ready().json()["status"] == "ready"
    finally:
        s3.start()
