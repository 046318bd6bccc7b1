"""Replicas on other hosts: how long from a build's commit until a replica with another SIMSEARCH_HOME
answers from the new generation (S3 store on a real SeaweedFS server, and a shared directory), how many
searches fail meanwhile, and search latency on a degraded replica that answers exactly from Postgres.

    .venv/bin/python -m bench.replicas [--vectors 100000] [--dim 512] [--index-type HNSW32]

Real processes: an embedded Postgres, `weed server -s3`, and `simsearch serve` replicas (tests/servers.py).
The vectors are a seeded Gaussian mixture written through the product's own store (bench/data.py).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from tests.own_postgres import free_port
from tests.servers import Replica, seaweed_s3, start_replica, wait_until

from bench import percentile
from bench.data import Database, Mixture, embedded_database, load_vectors

SERVICE = "bench_replicas"


@dataclass
class Watcher:
    """Searches a replica in a loop; records (wall time, ok, generation) per answer."""

    replica: Replica
    image_id: int
    answers: list[tuple[float, bool, int | None]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                response = self.replica.search(SERVICE, self.image_id, k=10)
                body: dict[str, Any] = response.json() if response.status_code == 200 else {}
                ok = response.status_code == 200 and body["results"][0]["image_id"] == self.image_id
                self.answers.append((time.time(), ok, body.get("generation")))
            except httpx.HTTPError:
                self.answers.append((time.time(), False, None))
            time.sleep(0.01)

    def first(self, generation: int) -> float | None:
        return next((t for t, ok, g in self.answers if ok and g == generation), None)


def _build(replica: Replica, index_type: str) -> int:
    built = replica.client.post(f"/api/v1/services/{SERVICE}/builds", json={"index_type": index_type}, timeout=1800)
    assert built.status_code == 201, built.text
    return int(built.json()["id"])


def _committed_at(db: Database, build_id: int) -> float:
    with db.engine.connect() as conn:
        finished = conn.execute(text("SELECT finished_at FROM index_build WHERE id = :id"), {"id": build_id}).one()[0]
    return float(finished.timestamp())


def follow(
    db: Database, folder: Path, kind: str, env: dict[str, str], image_id: int, index_type: str
) -> dict[str, Any]:
    """A builds twice; B (another home) is searched throughout; the second build is the one measured (B
    then holds the first, as a running replica does)."""
    a = start_replica(folder / f"{kind}-a", db.url, folder, **env)
    b = start_replica(folder / f"{kind}-b", db.url, folder, **env)
    watcher = Watcher(b, image_id)
    thread = threading.Thread(target=watcher.run, daemon=True)
    try:
        first = _build(a, index_type)
        thread.start()
        wait_until(lambda: watcher.first(first) is not None, 600, "B never served the first generation", 0.2)
        before = len(watcher.answers)
        second = _build(a, index_type)
        wait_until(lambda: watcher.first(second) is not None, 600, "B never served the second generation", 0.05)
        time.sleep(0.5)
        seen = watcher.first(second)
        assert seen is not None
        during = watcher.answers[before:]
        return {
            "store": kind,
            "generation": second,
            "seconds_from_commit_to_answer": round(seen - _committed_at(db, second), 3),
            "searches_meanwhile": len(during),
            "failed_searches": sum(1 for _, ok, _ in during if not ok),
            "artefact_mb": _size_mb(db, second),
        }
    finally:
        watcher.stop.set()
        thread.join(timeout=60)
        a.stop()
        b.stop()


def _size_mb(db: Database, build_id: int) -> float:
    with db.engine.connect() as conn:
        size = conn.execute(text("SELECT artefact_size FROM index_build WHERE id = :id"), {"id": build_id}).one()[0]
    return round(int(size or 0) / 1e6, 1)


def degraded(db: Database, folder: Path, env: dict[str, str], image_ids: list[int], searches: int) -> dict[str, Any]:
    """A replica whose store does not answer: readiness says degraded; searches go exactly through Postgres."""
    dead = env | {"SIMSEARCH_S3_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    d = start_replica(folder / "degraded", db.url, folder, **dead)
    try:
        wait_until(lambda: d.ready().status_code == 200, 120, "the degraded replica never became ready", 0.2)
        ready = d.ready().json()
        times, failed = [], 0
        for i in range(searches):
            started = time.perf_counter()
            response = d.client.post(
                f"/api/v1/services/{SERVICE}/search", json={"image_id": image_ids[i % len(image_ids)], "k": 10}
            )
            times.append((time.perf_counter() - started) * 1000)
            failed += response.status_code != 200 or response.json()["generation"] is not None
        return {
            "readiness": ready["status"],
            "reason": ready["services"][0]["reason"],
            "searches": searches,
            "failed": failed,
            "p50_ms": round(percentile(times, 50), 1),
            "p99_ms": round(percentile(times, 99), 1),
        }
    finally:
        d.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--index-type", default="HNSW32")
    parser.add_argument("--searches", type=int, default=50, help="searches timed on the degraded replica")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="simsearch-bench-replicas-") as tmp:
        folder = Path(tmp)
        with embedded_database(folder) as db, seaweed_s3(folder / "weed") as s3:
            _, load_s = load_vectors(db.engine, SERVICE, Mixture.make(args.dim).sample(args.vectors, seed=7))
            with db.engine.connect() as conn:
                ids = [int(r[0]) for r in conn.execute(text("SELECT id FROM image ORDER BY id LIMIT 50"))]
            s3_env = s3.env("bench")
            results: dict[str, Any] = {"vectors": args.vectors, "dim": args.dim, "index_type": args.index_type}
            results["load_s"] = round(load_s, 1)
            results["s3"] = follow(db, folder, "s3", s3_env, ids[5], args.index_type)
            shared = {"SIMSEARCH_ARTEFACTS": str(folder / "shared")}
            results["directory"] = follow(db, folder, "directory", shared, ids[5], args.index_type)
            results["degraded"] = degraded(db, folder, s3_env, ids, args.searches)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
