"""Build: our index build from Postgres against a bare binary COPY of the same vectors (and pgvector's HNSW)."""

from __future__ import annotations

import statistics
import time

import psycopg

from bench import Row, paired_median_seconds
from bench.data import Database
from simsearch.index import build_generation
from simsearch.store import ServiceRecord
from simsearch.store.read import copy_vectors

COPY_QUERY = "SELECT id, vector FROM embedding WHERE service_id = %s ORDER BY id"
FAISS_HNSW = "HNSW32"  # FAISS's HNSW with M=32 (efConstruction 40), against pgvector's m=16, ef_construction=64


def bench_build(db: Database, service: ServiceRecord, count: int, *, runs: int) -> tuple[list[Row], float]:
    """Rows for our build (a new Flat generation: read, add, write, record) against the floor of any build,
    one bare binary COPY of the same vectors into one numpy buffer. Also returns our median seconds."""
    index_dir = db.folder / "indexes"
    timings: list[dict[str, float]] = []

    def build() -> None:
        record = build_generation(db.engine, service, index_dir)
        assert record.vector_count == count
        timings.append(record.timings)

    with psycopg.connect(db.url, autocommit=True) as raw:

        def bare_copy() -> None:
            vectors = copy_vectors(raw, COPY_QUERY, (service.id,), dim=service.dim, count=count)
            assert len(vectors) == count

        ours, reference = paired_median_seconds(build, bare_copy, runs=runs)
    phases = {name: statistics.median(t[name] for t in timings[-runs:]) for name in timings[-1]}  # timed runs
    rows = [
        Row("build Flat from Postgres vs bare binary COPY", ours, reference, "s", "<= 1.3", "build_vs_copy"),
        Row("  phase: read (COPY inside the build)", phases["read_s"], reference, "s"),
        Row("  phase: add to FAISS", phases["train_add_s"], reference, "s"),
        Row("  phase: write index file (+fsync)", phases["write_s"], reference, "s"),
    ]
    return rows, ours


def hnsw_index_name(service: ServiceRecord) -> str:
    return f"bench_hnsw_{service.id}"


def hnsw_build_seconds(db: Database, service: ServiceRecord, *, m: int = 16, ef_construction: int = 64) -> float:
    """Build pgvector's HNSW over the service's vectors (pgvector's defaults m=16, ef_construction=64) and
    time it once, as a user would run it. The embedding column is an untyped `vector`, so the index is a
    partial expression index on `vector::vector(dim)`. It stays for the search bench."""
    name = hnsw_index_name(service)
    with psycopg.connect(db.url, autocommit=True) as raw:
        raw.execute("SET maintenance_work_mem = '2GB'")  # the whole graph in memory, as pgvector advises
        raw.execute(f"DROP INDEX IF EXISTS {name}")
        started = time.perf_counter()
        raw.execute(
            f"CREATE INDEX {name} ON embedding USING hnsw ((vector::vector({service.dim})) vector_l2_ops) "
            f"WITH (m = {m}, ef_construction = {ef_construction}) WHERE service_id = {service.id}"
        )
        seconds = time.perf_counter() - started
        raw.execute("ANALYZE embedding")
    return seconds


def faiss_hnsw_build_seconds(
    db: Database, service: ServiceRecord, count: int, *, index_type: str = FAISS_HNSW
) -> float:
    """Our build with a FAISS HNSW index instead of Flat (a new generation, made current), timed once as
    pgvector's is."""
    started = time.perf_counter()
    record = build_generation(db.engine, service, db.folder / "indexes", index_type=index_type)
    seconds = time.perf_counter() - started
    assert record.vector_count == count
    assert record.index_type == index_type
    return seconds
