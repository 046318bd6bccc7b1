"""pgvector, the reference: its HNSW index build and its searches (exact and through HNSW), end to end with
the same join to image metadata that ours returns, one query per call or all queries in one statement."""

from __future__ import annotations

import time

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from bench.data import Database
from simsearch.store import ServiceRecord

# The same columns our join returns (simsearch_join_hits), nearest first; the embedding id comes first.
_COLUMNS = "e.id, {dist} AS dist, i.id AS image_id, e.roi_id, i.uri, i.width, i.height, i.sha256, i.metadata"
HNSW_M = 16  # pgvector's defaults
HNSW_EF_CONSTRUCTION = 64


def hnsw_index_name(service: ServiceRecord) -> str:
    return f"bench_hnsw_{service.id}"


def connect(db: Database) -> psycopg.Connection:
    """An autocommit connection that sends numpy vectors as pgvector's `vector` (binary)."""
    raw = psycopg.connect(db.url, autocommit=True)
    register_vector(raw)
    return raw


def hnsw_build_seconds(
    db: Database, service: ServiceRecord, *, m: int = HNSW_M, ef_construction: int = HNSW_EF_CONSTRUCTION
) -> float:
    """Build pgvector's HNSW over the service's vectors (`vector_l2_ops`, pgvector's defaults m=16,
    ef_construction=64, maintenance_work_mem large enough for the whole graph, as pgvector advises) and
    time it once, as a user would run it. The embedding column is an untyped `vector`, so the index is a
    partial expression index on `vector::vector(dim)`. It stays for the search bench."""
    name = hnsw_index_name(service)
    with psycopg.connect(db.url, autocommit=True) as raw:
        raw.execute("SET maintenance_work_mem = '2GB'")
        raw.execute(f"DROP INDEX IF EXISTS {name}")
        started = time.perf_counter()
        raw.execute(
            f"CREATE INDEX {name} ON embedding USING hnsw ((vector::vector({service.dim})) vector_l2_ops) "
            f"WITH (m = {m}, ef_construction = {ef_construction}) WHERE service_id = {service.id}"
        )
        seconds = time.perf_counter() - started
        raw.execute("ANALYZE embedding")
    return seconds


def distance_sql(service: ServiceRecord, *, hnsw: bool, query: str) -> str:
    # Through the index: the expression it was built on. Exact: the bare column, which no index matches.
    return f"e.vector::vector({service.dim}) <-> {query}" if hnsw else f"e.vector <-> {query}"


def single_sql(service: ServiceRecord, *, hnsw: bool) -> str:
    """One query vector (%(q)s) per statement. The service id is inlined so that the planner matches the
    partial index in every plan, generic ones too."""
    dist = distance_sql(service, hnsw=hnsw, query="%(q)s")
    return (
        f"SELECT {_COLUMNS.format(dist=dist)} FROM embedding e JOIN image i ON i.id = e.image_id "
        f"WHERE e.service_id = {int(service.id)} ORDER BY {dist} LIMIT %(k)s"
    )


def batched_sql(service: ServiceRecord, *, hnsw: bool) -> str:
    """All query vectors (%(qs)s, a vector[]) in one statement: a LATERAL kNN per query."""
    dist = distance_sql(service, hnsw=hnsw, query="q.v")
    return (
        f"SELECT q.ord, h.* FROM unnest(%(qs)s::vector({service.dim})[]) WITH ORDINALITY AS q(v, ord) "
        f"CROSS JOIN LATERAL (SELECT {_COLUMNS.format(dist=dist)} FROM embedding e JOIN image i ON i.id = e.image_id "
        f"WHERE e.service_id = {int(service.id)} ORDER BY {dist} LIMIT %(k)s) h ORDER BY q.ord, h.dist"
    )


class PgvectorSearch:
    """pgvector search over one service, exact or through its HNSW index at a given `hnsw.ef_search`
    (`SET LOCAL` inside the transaction each call runs in, so one SET per call, not per query)."""

    def __init__(self, raw: psycopg.Connection, service: ServiceRecord, *, hnsw: bool) -> None:
        self.raw = raw
        self.service = service
        self.hnsw = hnsw
        self._single = single_sql(service, hnsw=hnsw)
        self._batched = batched_sql(service, hnsw=hnsw)
        self._index = hnsw_index_name(service)

    def _settings(self, ef_search: int | None) -> None:
        if self.hnsw and ef_search is not None:
            self.raw.execute(f"SET LOCAL hnsw.ef_search = {int(ef_search)}")

    def check_plans(self, query: np.ndarray, k: int) -> None:
        """Refuse to bench a plan that does not do what the row says: the HNSW index, or no index."""
        for sql, params in ((self._single, {"q": query, "k": k}), (self._batched, {"qs": [query], "k": k})):
            plan = "\n".join(str(r[0]) for r in self.raw.execute("EXPLAIN " + sql, params))
            if (self._index in plan) != self.hnsw:
                raise RuntimeError(f"pgvector's plan {'misses' if self.hnsw else 'uses'} the HNSW index:\n{plan}")

    def one_per_call(self, queries: np.ndarray, k: int, ef_search: int | None = None) -> list[list[int]]:
        """One statement per query vector, as a client of pgvector sends them; embedding ids per query."""
        with self.raw.transaction(), self.raw.cursor() as cur:
            self._settings(ef_search)
            return [[row[0] for row in cur.execute(self._single, {"q": q, "k": k}).fetchall()] for q in queries]

    def all_in_one(self, queries: np.ndarray, k: int, ef_search: int | None = None) -> list[list[int]]:
        """Every query vector in one statement; embedding ids per query."""
        found: list[list[int]] = [[] for _ in range(len(queries))]
        with self.raw.transaction(), self.raw.cursor() as cur:
            self._settings(ef_search)
            for row in cur.execute(self._batched, {"qs": list(queries), "k": k}).fetchall():
                found[int(row[0]) - 1].append(int(row[1]))
        return found
