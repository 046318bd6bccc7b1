"""Filtered search: a metadata filter (jsonb containment) that a share of the rows pass, one query per call,
at recall@k against the exact filtered truth; ours as shipped (which picks the index, or an exact search
of the rows the filter selects, by the filter's pass rate), ours through the index only, pgvector hnsw
with its iterative index scan (`hnsw.iterative_scan`, pgvector >= 0.8) at the smallest ef_search that
reaches the target recall, and pgvector's exact scan of the filter's rows.

Every image gets `{"p1": id % 100, "p10": id % 10, "p50": id % 2}`: the filters {"p1": 3}, {"p10": 3} and
{"p50": 1} select 1 %, 10 % and 50 % of the rows; the 10 % row is the headline (`filtered_vs_pgvector_hnsw`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np
import psycopg
from sqlalchemy import Engine, text

from bench import Row, interleaved_medians
from bench.data import Database
from bench.pgvector import connect, distance_sql
from bench.search import TARGET_RECALL, recall
from simsearch import search, store
from simsearch.index import LoadedIndex
from simsearch.search import SearchOptions, search_vectors
from simsearch.store import ServiceRecord

SHARES = {"p1": 0.01, "p10": 0.10, "p50": 0.50}  # filter key -> the share of rows {key: value} selects
QUERIES = 50  # of the bench's queries, the first 50 (pgvector's scans of a filter's rows take 0.1-0.5 s each)
EXACT_SHARE_MAX = 0.1  # pgvector exact is timed up to this share (at 50 % it scans half the table per query)
PG_EF_SEARCH = (40, 80, 160, 320, 640, 1000)


def label_images(db: Database, service: ServiceRecord) -> None:
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE image i SET metadata = jsonb_build_object('p1', i.id % 100, 'p10', i.id % 10, 'p50', "
                "i.id % 2) FROM embedding e WHERE e.image_id = i.id AND e.service_id = :sid"
            ),
            {"sid": service.id},
        )
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE image"))


def filtered_truth(
    engine: Engine, service: ServiceRecord, queries: np.ndarray, k: int, where: dict[str, int]
) -> np.ndarray:
    """(nq, k) embedding ids of the exact k nearest rows that pass `where` (squared L2)."""
    ((key, value),) = where.items()
    with engine.connect() as conn:
        stored = store.read_service_vectors(conn, service.id, service.dim)
        passing = {
            int(eid)
            for (eid,) in conn.execute(
                text(
                    "SELECT e.id FROM embedding e JOIN image i ON i.id = e.image_id "
                    "WHERE e.service_id = :sid AND (i.metadata ->> :key)::int = :value"
                ),
                {"sid": service.id, "key": key, "value": value},
            )
        }
    keep = np.fromiter((int(i) in passing for i in stored.ids), dtype=bool, count=len(stored.ids))
    ids, vectors = stored.ids[keep], stored.vectors[keep]
    _, positions = faiss.knn(np.ascontiguousarray(queries, dtype=np.float32), np.ascontiguousarray(vectors), k)
    return np.asarray(ids[positions])


class PgFiltered:
    """pgvector's filtered kNN, one statement per query: through the HNSW index with iterative scans, or
    exactly (the bare column, which no index matches: the filter's rows, then a sort)."""

    def __init__(self, raw: psycopg.Connection, service: ServiceRecord, *, hnsw: bool) -> None:
        dist = distance_sql(service, hnsw=hnsw, query="%(q)s")
        self.raw, self.hnsw = raw, hnsw
        self.sql = (
            f"SELECT e.id, i.uri, i.metadata, {dist} AS dist FROM embedding e JOIN image i ON i.id = e.image_id "
            f"WHERE e.service_id = {int(service.id)} AND i.metadata @> %(f)s::jsonb ORDER BY {dist} LIMIT %(k)s"
        )

    def single(self, queries: np.ndarray, k: int, where: dict[str, int], ef_search: int | None) -> list[list[int]]:
        with self.raw.transaction(), self.raw.cursor() as cur:
            if self.hnsw:  # its index, even where the metadata index would win (the reference is its HNSW)
                cur.execute("SET LOCAL enable_bitmapscan = off")
                cur.execute("SET LOCAL enable_seqscan = off")
                cur.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
                cur.execute(f"SET LOCAL hnsw.ef_search = {int(ef_search or 40)}")
                cur.execute("SET LOCAL hnsw.max_scan_tuples = 1000000")
            f = json.dumps(where)
            return [[r[0] for r in cur.execute(self.sql, {"q": q, "f": f, "k": k}).fetchall()] for q in queries]


@dataclass(frozen=True, slots=True)
class FilteredRow:
    share: float
    system: str
    setting: str
    recall: float
    qps: float


def _ours(
    db: Database, service: ServiceRecord, index: LoadedIndex, options: SearchOptions, exact_max: int
) -> Callable[[np.ndarray, int], list[list[int]]]:
    """Our search one query per call, with `search.EXACT_FILTERED_MAX` at `exact_max` (0: the index only)."""

    def single(queries: np.ndarray, k: int) -> list[list[int]]:
        saved, search.EXACT_FILTERED_MAX = search.EXACT_FILTERED_MAX, exact_max
        try:
            return [
                [h.embedding_id for h in search_vectors(db.engine, service, index, q[None], k, options)[0]]
                for q in queries
            ]
        finally:
            search.EXACT_FILTERED_MAX = saved

    return single


def _one_share(
    db: Database,
    service: ServiceRecord,
    index: LoadedIndex,
    pgs: tuple[PgFiltered, PgFiltered],
    queries: np.ndarray,
    k: int,
    where: dict[str, int],
    share: float,
    *,
    ef_search: int | None,
    runs: int,
) -> tuple[dict[str, float], dict[str, float], int, int]:
    """(recall, seconds) per system for one filter, and pgvector's and our chosen ef_search."""
    pg_hnsw, pg_exact = pgs
    truth = filtered_truth(db.engine, service, queries, k, where)
    # ours at the smallest efSearch (the unfiltered one, doubled) that reaches the target recall, as pgvector
    base = ef_search or 16
    for ours_ef in (base, 2 * base, 4 * base, 8 * base):
        options = SearchOptions(where=where, ef_search=ours_ef)
        ours = _ours(db, service, index, options, search.EXACT_FILTERED_MAX)
        recalls = {"ours (as shipped)": recall(ours(queries, k), truth, k)}
        if recalls["ours (as shipped)"] >= TARGET_RECALL:
            break
    index_only = _ours(db, service, index, options, 0)
    recalls["ours, index only"] = recall(index_only(queries, k), truth, k)
    ef = next(
        (e for e in PG_EF_SEARCH if recall(pg_hnsw.single(queries, k, where, e), truth, k) >= TARGET_RECALL),
        PG_EF_SEARCH[-1],
    )
    recalls["pgvector hnsw iterative"] = recall(pg_hnsw.single(queries, k, where, ef), truth, k)
    timed: dict[str, Callable[[], object]] = {
        "ours (as shipped)": lambda: ours(queries, k),
        "ours, index only": lambda: index_only(queries, k),
        "pgvector hnsw iterative": lambda: pg_hnsw.single(queries, k, where, ef),
    }
    if share <= EXACT_SHARE_MAX:
        recalls["pgvector exact"] = recall(pg_exact.single(queries, k, where, None), truth, k)
        timed["pgvector exact"] = lambda: pg_exact.single(queries, k, where, None)
    return recalls, interleaved_medians(timed, runs=runs), ef, ours_ef


def bench_filtered(
    db: Database,
    service: ServiceRecord,
    index: LoadedIndex,
    queries: np.ndarray,
    k: int,
    *,
    ef_search: int | None,
    runs: int,
) -> tuple[list[FilteredRow], list[Row]]:
    """Every share's four systems, timed in interleaved runs (median), after a recall pass each (which
    is also the warm-up, and lets ours learn the filter's pass rate, as a server does from its first
    searches with it)."""
    label_images(db, service)
    out: list[FilteredRow] = []
    headline: list[Row] = []
    with connect(db) as raw:
        pgs = (PgFiltered(raw, service, hnsw=True), PgFiltered(raw, service, hnsw=False))
        for key, share in SHARES.items():
            where = {key: 3 if key != "p50" else 1}
            recalls, seconds, ef, ours_ef = _one_share(
                db, service, index, pgs, queries[:QUERIES], k, where, share, ef_search=ef_search, runs=runs
            )
            for name, s in seconds.items():
                setting = f"hnsw.ef_search={ef}" if name == "pgvector hnsw iterative" else ""
                setting = f"efSearch={ours_ef}" if name.startswith("ours") else setting
                out.append(FilteredRow(share, name, setting, recalls[name], min(QUERIES, len(queries)) / s))
            if key == "p10":
                headline.append(
                    Row(
                        f"filtered (10 % pass) QPS 1 client: ours efSearch={ours_ef} / pgvector hnsw iterative scan, "
                        f"ef_search={ef}",
                        min(QUERIES, len(queries)) / seconds["ours (as shipped)"],
                        min(QUERIES, len(queries)) / seconds["pgvector hnsw iterative"],
                        "q/s",
                        ">= 5",
                        "filtered_vs_pgvector_hnsw",
                    )
                )
    return out, headline
