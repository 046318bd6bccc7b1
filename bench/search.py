"""Search: our end-to-end search (FAISS kNN + the SQL join to image metadata) against pgvector in the same
Postgres, exact (a sequential scan) and, optionally, through its HNSW index at a recall of at least 0.95."""

from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from bench import Row, median_seconds, paired_median_seconds
from bench.build import hnsw_index_name
from bench.data import Database
from simsearch.index import LoadedIndex
from simsearch.search import search_vectors
from simsearch.store import ServiceRecord

EF_SEARCH = (10, 20, 40, 80, 160, 320, 640, 1000)  # tried in order; 1000 is pgvector's maximum
TARGET_RECALL = 0.95

# The same columns our join returns (simsearch_join_hits), nearest first.
_COLUMNS = "e.id, {dist} AS dist, i.id, e.roi_id, i.uri, i.width, i.height, i.sha256, i.metadata"


def exact_sql(service: ServiceRecord) -> str:
    dist = "e.vector <-> %(q)s"
    return (
        f"SELECT {_COLUMNS.format(dist=dist)} FROM embedding e JOIN image i ON i.id = e.image_id "
        f"WHERE e.service_id = %(sid)s ORDER BY {dist} LIMIT %(k)s"
    )


def hnsw_sql(service: ServiceRecord) -> str:
    # The service id is inlined so that the planner matches the partial index in every plan, generic ones too.
    dist = f"e.vector::vector({service.dim}) <-> %(q)s"
    return (
        f"SELECT {_COLUMNS.format(dist=dist)} FROM embedding e JOIN image i ON i.id = e.image_id "
        f"WHERE e.service_id = {int(service.id)} ORDER BY {dist} LIMIT %(k)s"
    )


def pgvector_image_ids(
    raw: psycopg.Connection, sql: str, service: ServiceRecord, queries: np.ndarray, k: int
) -> list[list[int]]:
    """One query at a time, as a client of pgvector would send them; the image ids found per query."""
    found = []
    with raw.cursor() as cur:
        for q in queries:
            rows = cur.execute(sql, {"q": q, "sid": service.id, "k": k}).fetchall()
            found.append([row[2] for row in rows])
    return found


def our_image_ids(
    db: Database, service: ServiceRecord, index: LoadedIndex, queries: np.ndarray, k: int
) -> list[list[int]]:
    """One query vector per call, end to end."""
    return [[hit.image_id for hit in search_vectors(db.engine, service, index, q[None, :], k)[0]] for q in queries]


def recall(found: Sequence[Sequence[int]], truth: Sequence[Sequence[int]], k: int) -> float:
    """Mean fraction of the true k nearest that were found (recall@k)."""
    return float(np.mean([len(set(f[:k]) & set(t[:k])) / k for f, t in zip(found, truth, strict=True)]))


def bench_search(
    db: Database, service: ServiceRecord, index: LoadedIndex, queries: np.ndarray, k: int, *, runs: int
) -> tuple[list[Row], list[list[int]]]:
    """Rows for ours against pgvector's exact search, one query per call each; also returns the exact
    answers (image ids per query), the truth for the HNSW rows."""
    nq = len(queries)
    with psycopg.connect(db.url, autocommit=True) as raw:
        register_vector(raw)
        exact = exact_sql(service)
        truth = pgvector_image_ids(raw, exact, service, queries, k)  # also a warm-up
        ours = our_image_ids(db, service, index, queries, k)  # also a warm-up
        our_seconds, ref_seconds = paired_median_seconds(
            lambda: our_image_ids(db, service, index, queries, k),
            lambda: pgvector_image_ids(raw, exact, service, queries, k),
            warmup=0,
            runs=runs,
        )
    batched = median_seconds(lambda: search_vectors(db.engine, service, index, queries, k), runs=runs)
    one_thread = _one_faiss_thread_seconds(db, service, index, queries, k, runs=runs)
    return [
        Row(
            f"search QPS, 1 query/call: ours (Flat + join) vs pgvector exact, k={k}",
            nq / our_seconds,
            nq / ref_seconds,
            "q/s",
            "> 1",
            "search_vs_pgvector_exact",
        ),
        Row(f"recall@{k}: ours vs pgvector exact", recall(ours, truth, k), 1.0, "", "1.0 (Flat)", "recall_vs_exact"),
        Row(
            f"search QPS, ours: {nq} queries/call vs 1 query/call",
            nq / batched,
            nq / our_seconds,
            "q/s",
            "",
            "search_batched_vs_single",
        ),
        Row(
            "search QPS, ours, 1 query/call: FAISS on 1 OpenMP thread vs as shipped",
            nq / one_thread,
            nq / our_seconds,
            "q/s",
            "~1 (diagnostic)",
            "search_1thread_vs_default",
        ),
    ], truth


def _one_faiss_thread_seconds(
    db: Database, service: ServiceRecord, index: LoadedIndex, queries: np.ndarray, k: int, *, runs: int
) -> float:
    """Diagnostic: our single-query loop with FAISS limited to one OpenMP thread. With torch imported before
    faiss (as simsearch does), one-query FAISS searches on all threads can be many times slower."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return median_seconds(lambda: our_image_ids(db, service, index, queries, k), runs=runs)
    finally:
        faiss.omp_set_num_threads(threads)


def bench_hnsw_search(
    db: Database,
    service: ServiceRecord,
    flat: LoadedIndex,
    hnsw: LoadedIndex,
    queries: np.ndarray,
    k: int,
    truth: Sequence[Sequence[int]],
    *,
    runs: int,
) -> list[Row]:
    """pgvector's HNSW index (built by `bench.build.hnsw_build_seconds`) at the smallest ef_search whose
    recall@k reaches TARGET_RECALL, against ours, one query per call each: with the Flat index (exact), and
    with a FAISS HNSW generation whose efSearch is tuned the same way (the same data and recall).

    simsearch has no efSearch setting yet, so it is set on the loaded index with faiss's ParameterSpace."""
    nq = len(queries)
    sql = hnsw_sql(service)
    for ef_ours in EF_SEARCH:
        faiss.ParameterSpace().set_index_parameter(hnsw.index, "efSearch", ef_ours)
        ours_recall = recall(our_image_ids(db, service, hnsw, queries, k), truth, k)  # also a warm-up
        if ours_recall >= TARGET_RECALL:
            break
    with psycopg.connect(db.url, autocommit=True) as raw:
        register_vector(raw)
        plan = "\n".join(str(r[0]) for r in raw.execute("EXPLAIN " + sql, {"q": queries[0], "k": k}))
        if hnsw_index_name(service) not in plan:
            raise RuntimeError(f"pgvector does not use the HNSW index for the bench query:\n{plan}")
        for ef in EF_SEARCH:
            raw.execute(f"SET hnsw.ef_search = {ef}")
            pg_recall = recall(pgvector_image_ids(raw, sql, service, queries, k), truth, k)  # also a warm-up
            if pg_recall >= TARGET_RECALL:
                break

        def pgvector_hnsw() -> None:
            pgvector_image_ids(raw, sql, service, queries, k)

        flat_seconds, pg_flat_seconds = paired_median_seconds(
            lambda: our_image_ids(db, service, flat, queries, k), pgvector_hnsw, warmup=0, runs=runs
        )
        hnsw_seconds, pg_seconds = paired_median_seconds(
            lambda: our_image_ids(db, service, hnsw, queries, k), pgvector_hnsw, warmup=0, runs=runs
        )
    pg = f"pgvector HNSW ef_search={ef}"
    ours = f"FAISS {hnsw.build.index_type} efSearch={ef_ours}"
    return [
        Row(
            f"search QPS, 1 query/call: ours ({ours}) vs {pg}",
            nq / hnsw_seconds,
            nq / pg_seconds,
            "q/s",
            "> 1",
            "search_vs_pgvector_hnsw",
        ),
        Row(
            f"  recall@{k} vs exact: ours ({ours}) vs {pg}",
            ours_recall,
            pg_recall,
            "",
            f"both >= {TARGET_RECALL}",
            "hnsw_recall_ours_vs_pgvector",
        ),
        Row(
            f"search QPS, 1 query/call: ours (Flat, exact) vs {pg}",
            nq / flat_seconds,
            nq / pg_flat_seconds,
            "q/s",
            "",
            "search_flat_vs_pgvector_hnsw",
        ),
    ]
