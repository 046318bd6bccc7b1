"""Storing rows: image rows and their vectors written exactly as ingest writes them (per batch of 32, in
one transaction: `join_writers`, `store_image_vectors`) against one bare binary COPY
of the same vectors into a scratch table (the floor of any write of them)."""

from __future__ import annotations

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from bench import Row, paired_median_seconds
from bench.data import Database
from simsearch import store
from simsearch.store import NewImage, ServiceRecord
from simsearch.store.write import store_image_vectors

BATCH = 32  # ingest's default batch
SCRATCH = "bench_store_rows_copy"


def _service(db: Database, name: str, dim: int) -> ServiceRecord:
    with db.engine.begin() as conn:
        return store.create_service(
            conn, name=name, model="synthetic", weights="none", layer="-", input_size=0, metric="l2", dim=dim
        )


def store_as_ingest(db: Database, service: ServiceRecord, prefix: str, vectors: np.ndarray) -> None:
    """Each batch as `simsearch.ingest._write` stores it, all in one transaction (an atomic ingest)."""
    with db.engine.begin() as conn:
        for start in range(0, len(vectors), BATCH):
            chunk = vectors[start : start + BATCH]
            images = [
                NewImage(f"{prefix}-{start + i}", "0" * 64, 224, 224, {"batch": start // BATCH})
                for i in range(len(chunk))
            ]
            store.join_writers(conn, service.id)
            store_image_vectors(conn, service.id, images, chunk)


def bare_copy(raw: psycopg.Connection, service_id: int, vectors: np.ndarray) -> None:
    """One binary COPY of the same (service_id, image_id, vector) rows into an emptied scratch table."""
    with raw.transaction(), raw.cursor() as cur:
        cur.execute(f"TRUNCATE {SCRATCH}")
        with cur.copy(f"COPY {SCRATCH} (service_id, image_id, vector) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "int8", "vector"])
            for image_id, vector in enumerate(vectors):
                copy.write_row((service_id, image_id, vector))


def bench_store_rows(db: Database, vectors: np.ndarray, *, runs: int) -> list[Row]:
    """The `store_rows_vs_copy` row. Every call of ours stores new images into a fresh service (first
    ingest of new images: inserts, not updates)."""
    n, dim = vectors.shape
    services = [_service(db, f"bench-store-rows-{i}", dim) for i in range(runs + 1)]  # warm-up + timed
    fresh = iter(enumerate(services))

    def ours() -> None:
        i, service = next(fresh)
        store_as_ingest(db, service, f"store-rows-{i}", vectors)

    with psycopg.connect(db.url, autocommit=True) as raw:
        register_vector(raw)
        raw.execute(f"CREATE TABLE {SCRATCH} (service_id int4, image_id int8, vector vector({dim}))")
        try:
            mine, reference = paired_median_seconds(ours, lambda: bare_copy(raw, 0, vectors), runs=runs)
        finally:
            raw.execute(f"DROP TABLE {SCRATCH}")
    return [
        Row(
            f"store {n} x {dim} image rows + vectors as ingest (batch {BATCH}) vs bare binary COPY",
            n / mine,
            n / reference,
            "rows/s",
            ">= 0.5",
            "store_rows_vs_copy",
        )
    ]
