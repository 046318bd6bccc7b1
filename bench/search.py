"""Search: recall@k against exact ground truth (faiss.knn over the stored vectors) and QPS, one query per
call and all queries in one call, END TO END for every system: ours (`search_vectors`: index kNN + exact
tail + the SQL join to image metadata) with Flat, IVF,SQ8 and HNSW, and pgvector exact and through its
HNSW index, in the same Postgres. Approximate settings (nprobe, efSearch, hnsw.ef_search) are swept to the
smallest that reaches TARGET_RECALL, so the QPS are compared at (about) equal recall."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import faiss
import numpy as np
from sqlalchemy import Engine

from bench import concurrent_qps, interleaved_medians, median_seconds
from bench.data import Database
from bench.pgvector import HNSW_EF_CONSTRUCTION, HNSW_M, PgvectorSearch, connect
from simsearch import store
from simsearch.index import LoadedIndex
from simsearch.search import SearchOptions, search_vectors
from simsearch.store import ServiceRecord

TARGET_RECALL = 0.95
# Tried in order, the first reaching TARGET_RECALL is kept (steps of about 1.5x).
FAISS_EF_SEARCH = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
PGVECTOR_EF_SEARCH = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1000)  # 1000: pgvector's max
PGVECTOR_HNSW = f"pgvector hnsw m={HNSW_M} ef_construction={HNSW_EF_CONSTRUCTION}"
PGVECTOR_EXACT = "pgvector exact (no index)"


def nprobe_sweep(nlist: int) -> list[int]:
    """1, 2, 3, 4, 6, 8, 12, ... up to nlist (included)."""
    steps = sorted({v for p in range(32) for v in (1 << p, 3 << p >> 1) if 1 <= v < nlist})
    return [*steps, nlist]


def ivf_nlist(n: int) -> int:
    """About 4 sqrt(n) lists (FAISS's rule of thumb), so at least 39 training points per list."""
    return max(1, min(round(4 * math.sqrt(n)), n // 39))


class Searcher(Protocol):
    def single(self, queries: np.ndarray, k: int) -> list[list[int]]: ...  # one query per call
    def batched(self, queries: np.ndarray, k: int) -> list[list[int]]: ...  # all queries in one call


@dataclass(frozen=True, slots=True)
class Ours:
    """Our end-to-end search with one loaded generation and per-call options; embedding ids per query."""

    engine: Engine
    service: ServiceRecord
    index: LoadedIndex
    options: SearchOptions

    def single(self, queries: np.ndarray, k: int) -> list[list[int]]:
        return [
            [
                hit.embedding_id
                for hit in search_vectors(self.engine, self.service, self.index, q[None, :], k, self.options)[0]
            ]
            for q in queries
        ]

    def batched(self, queries: np.ndarray, k: int) -> list[list[int]]:
        hits = search_vectors(self.engine, self.service, self.index, queries, k, self.options)
        return [[hit.embedding_id for hit in per_query] for per_query in hits]


@dataclass(frozen=True, slots=True)
class Pgvector:
    """pgvector's search (exact, or HNSW at one ef_search), the same interface."""

    search: PgvectorSearch
    ef_search: int | None = None

    def single(self, queries: np.ndarray, k: int) -> list[list[int]]:
        return self.search.one_per_call(queries, k, self.ef_search)

    def batched(self, queries: np.ndarray, k: int) -> list[list[int]]:
        return self.search.all_in_one(queries, k, self.ef_search)


@dataclass(frozen=True, slots=True)
class SearchRow:
    system: str  # "ours" or "pgvector"
    index: str  # FAISS index_factory string, or the pgvector method
    knob: str  # the swept setting ("nprobe", "efSearch", "hnsw.ef_search"), or "" when there is none
    value: int | None  # its chosen value
    recall: float  # recall@k against the exact truth, one query per call
    single_qps: float  # one client, one query per call
    batched_qps: float  # all queries in one call

    @property
    def setting(self) -> str:
        return f"{self.knob}={self.value}" if self.knob else "-"

    @property
    def name(self) -> str:
        return f"{self.system} {self.index}"


def exact_truth(engine: Engine, service: ServiceRecord, queries: np.ndarray, k: int) -> np.ndarray:
    """(nq, k) embedding ids of the true k nearest (squared L2), by faiss.knn over the vectors read back
    from Postgres: exactly what every system searches."""
    with engine.connect() as conn:
        stored = store.read_service_vectors(conn, service.id, service.dim)
    _, positions = faiss.knn(np.ascontiguousarray(queries, dtype=np.float32), stored.vectors, k)
    return stored.ids[positions]


def recall(found: Sequence[Sequence[int]], truth: np.ndarray, k: int) -> float:
    """Mean fraction of the true k nearest that were found (recall@k)."""
    return float(np.mean([len(set(f[:k]) & set(t[:k].tolist())) / k for f, t in zip(found, truth, strict=True)]))


def tune(
    make: Callable[[int], Searcher], values: Sequence[int], queries: np.ndarray, truth: np.ndarray, k: int
) -> tuple[int, Searcher]:
    """The first value whose recall@k (all queries in one call) reaches TARGET_RECALL, else the best one."""
    best: tuple[float, int] | None = None
    for value in values:
        r = recall(make(value).batched(queries, k), truth, k)
        if r >= TARGET_RECALL:
            return value, make(value)
        if best is None or r > best[0]:
            best = (r, value)
    assert best is not None
    return best[1], make(best[1])


def _sweep(loaded: LoadedIndex, index_type: str) -> tuple[str, Sequence[int]]:
    """The knob to tune for an index, and the values to try: IVF nprobe, HNSW efSearch, or none."""
    if not isinstance(loaded.index, faiss.Index):  # not a FAISS index (Annoy): nothing to tune here
        return "", ()
    try:
        return "nprobe", nprobe_sweep(int(faiss.extract_index_ivf(loaded.index).nlist))
    except RuntimeError:  # not an IVF index
        return ("efSearch", FAISS_EF_SEARCH) if "HNSW" in index_type else ("", ())


@dataclass(frozen=True, slots=True)
class Candidate:
    system: str
    index: str
    knob: str
    value: int | None
    searcher: Searcher


def tuned_candidates(
    engine: Engine,
    service: ServiceRecord,
    indexes: dict[str, LoadedIndex],
    pg_hnsw: PgvectorSearch | None,
    queries: np.ndarray,
    truth: np.ndarray,
    k: int,
) -> list[Candidate]:
    """Ours for each loaded index (IVF: nprobe swept, HNSW: efSearch swept), then pgvector HNSW (ef_search
    swept), each at the smallest setting reaching TARGET_RECALL."""
    out = []
    for index_type, loaded in indexes.items():
        knob, values = _sweep(loaded, index_type)
        if not knob:
            out.append(Candidate("ours", index_type, "", None, Ours(engine, service, loaded, SearchOptions())))
            continue

        def make(value: int, loaded: LoadedIndex = loaded, knob: str = knob) -> Searcher:
            options = SearchOptions(nprobe=value) if knob == "nprobe" else SearchOptions(ef_search=value)
            return Ours(engine, service, loaded, options)

        value, searcher = tune(make, values, queries, truth, k)
        out.append(Candidate("ours", index_type, knob, value, searcher))
    if pg_hnsw is not None:
        hnsw = pg_hnsw

        def make_pg(value: int) -> Searcher:
            return Pgvector(hnsw, value)

        value, searcher = tune(make_pg, PGVECTOR_EF_SEARCH, queries, truth, k)
        out.append(Candidate("pgvector", PGVECTOR_HNSW, "hnsw.ef_search", value, searcher))
    return out


def bench_search(
    candidates: Sequence[Candidate],
    exact: PgvectorSearch | None,
    queries: np.ndarray,
    truth: np.ndarray,
    k: int,
    *,
    runs: int,
) -> list[SearchRow]:
    """Recall (one query per call, also the warm-up) and QPS of every candidate, timed in interleaved
    rounds (median of `runs`); pgvector exact, a sequential scan per query, is timed once after its
    recall pass."""
    nq = len(queries)
    recalls = {i: recall(c.searcher.single(queries, k), truth, k) for i, c in enumerate(candidates)}
    single = interleaved_medians(
        {str(i): _bind(c.searcher.single, queries, k) for i, c in enumerate(candidates)}, runs=runs
    )
    batched = interleaved_medians(
        {str(i): _bind(c.searcher.batched, queries, k) for i, c in enumerate(candidates)}, runs=runs
    )
    rows = [
        SearchRow(c.system, c.index, c.knob, c.value, recalls[i], nq / single[str(i)], nq / batched[str(i)])
        for i, c in enumerate(candidates)
    ]
    if exact is not None:
        seq = Pgvector(exact)
        exact_recall = recall(seq.single(queries, k), truth, k)
        single_s = median_seconds(_bind(seq.single, queries, k), warmup=0, runs=1)
        batched_s = median_seconds(_bind(seq.batched, queries, k), warmup=0, runs=1)
        rows.append(SearchRow("pgvector", PGVECTOR_EXACT, "", None, exact_recall, nq / single_s, nq / batched_s))
    return rows


def _bind(fn: Callable[[np.ndarray, int], object], queries: np.ndarray, k: int) -> Callable[[], object]:
    return lambda: fn(queries, k)


def one_thread_qps(candidate: Candidate, queries: np.ndarray, k: int, *, runs: int) -> float:
    """Diagnostic: a candidate's one-query-per-call QPS with FAISS on one OpenMP thread. With torch
    imported before faiss (as simsearch.search does), one-query FAISS searches on all threads can be
    many times slower."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return len(queries) / median_seconds(_bind(candidate.searcher.single, queries, k), runs=runs)
    finally:
        faiss.omp_set_num_threads(threads)


@dataclass(frozen=True, slots=True)
class ConcurrentRow:
    """`clients` threads at once, one query per call each, as the server's request threads run them:
    ours on one engine (its pool), pgvector on one connection per thread."""

    index: str
    clients: int
    ours_qps: float
    ours_p99_ms: float
    pgvector_qps: float
    pgvector_p99_ms: float


def concurrent_search(
    candidates: Sequence[Candidate], db: Database, queries: np.ndarray, k: int, *, index: str, clients: int
) -> ConcurrentRow | None:
    """QPS and p99 of `clients` concurrent clients of ours (`index`, as tuned) and of pgvector hnsw (as
    tuned), each client doing its share of 2 x len(queries) calls."""
    ours = next((c for c in candidates if c.system == "ours" and c.index == index), None)
    pg = next((c for c in candidates if c.system == "pgvector"), None)
    if ours is None or pg is None or not isinstance(pg.searcher, Pgvector):
        return None
    nq, count = len(queries), 2 * len(queries)
    searcher = ours.searcher
    service = pg.searcher.search.service

    def ours_worker() -> Callable[[int], object]:
        return lambda i: searcher.single(queries[i % nq][None], k)

    def pg_worker() -> Callable[[int], object]:
        own = PgvectorSearch(connect(db), service, hnsw=True)
        return lambda i: own.one_per_call(queries[i % nq][None], k, pg.value)

    ours_qps, ours_p99 = concurrent_qps(ours_worker, count, clients)
    pg_qps, pg_p99 = concurrent_qps(pg_worker, count, clients)
    return ConcurrentRow(index, clients, ours_qps, ours_p99, pg_qps, pg_p99)
