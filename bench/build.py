"""Build: our index build from Postgres against a bare binary COPY of the same vectors (and pgvector's HNSW)."""

from __future__ import annotations

import statistics
import time

import psycopg

from bench import Row, median_seconds
from bench.data import Database
from simsearch.index import build_generation
from simsearch.store import ServiceRecord
from simsearch.store.read import copy_vectors

COPY_QUERY = "SELECT id, vector FROM embedding WHERE service_id = %s ORDER BY id"


def bare_copy_seconds(db: Database, service: ServiceRecord, count: int, *, runs: int) -> float:
    """The floor of any build: one binary COPY of the service's vectors into one numpy buffer."""
    with psycopg.connect(db.url, autocommit=True) as raw:
        def read() -> None:
            vectors = copy_vectors(raw, COPY_QUERY, (service.id,), dim=service.dim, count=count)
            assert len(vectors) == count

        return median_seconds(read, runs=runs)


def bench_build(db: Database, service: ServiceRecord, count: int, *, runs: int) -> tuple[list[Row], float]:
    """Rows for our build against the bare COPY; also returns our build's median seconds."""
    index_dir = db.folder / "indexes"
    timings: list[dict[str, float]] = []

    def build() -> None:
        record = build_generation(db.engine, service, index_dir)
        assert record.vector_count == count
        timings.append(record.timings)

    ours = median_seconds(build, runs=runs)
    reference = bare_copy_seconds(db, service, count, runs=runs)
    parts = {name: statistics.median(t[name] for t in timings[-runs:]) for name in timings[-1]}  # timed runs
    rows = [
        Row("build Flat from Postgres vs bare binary COPY", ours, reference, "s", "<= 1.3", "build_vs_copy"),
        Row("  build phase: read (COPY inside the build)", parts["read_s"], reference, "s"),
        Row("  build phase: add to FAISS", parts["train_add_s"], reference, "s"),
        Row("  build phase: write index file (+fsync)", parts["write_s"], reference, "s"),
    ]
    return rows, ours


def hnsw_build_seconds(db: Database, service: ServiceRecord, *, m: int = 16, ef_construction: int = 64) -> float:
    """Build pgvector's HNSW over the service's vectors (a partial expression index: the embedding column
    is an untyped `vector`); timed once, as a user would run it. The index stays for the search bench."""
    name = hnsw_index_name(service)
    with psycopg.connect(db.url, autocommit=True) as raw:
        raw.execute("SET maintenance_work_mem = '4GB'")  # the whole graph in memory, as pgvector advises
        raw.execute(f"DROP INDEX IF EXISTS {name}")
        started = time.perf_counter()
        raw.execute(
            f"CREATE INDEX {name} ON embedding USING hnsw ((vector::vector({service.dim})) vector_l2_ops) "
            f"WITH (m = {m}, ef_construction = {ef_construction}) WHERE service_id = {service.id}"
        )
        seconds = time.perf_counter() - started
        raw.execute("ANALYZE embedding")
    return seconds


def hnsw_index_name(service: ServiceRecord) -> str:
    return f"bench_hnsw_{service.id}"
