"""Search: query vectors -> index kNN + exact kNN over vectors newer than the index -> one SQL join."""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine

from simsearch import metrics, store
from simsearch.errors import BadInput
from simsearch.index import LoadedIndex, faiss_index, search_loaded
from simsearch.models import Extractor
from simsearch.store import Hit, ServiceRecord

_EVERY_LIST = 1 << 22  # an nprobe at least as large as any IVF's list count (search_parameters caps it)
# Searches per call at most: up to _MAX_ROUNDS - 1 ever deeper ones for the queries the join left short,
# the last exhaustive. Each round is one index search and one SQL join, of the short queries only.
_MAX_ROUNDS = 5
_MARGIN = 2  # ask for this many times the candidates the join's observed pass rate says k hits need
# A filter that at most this many rows are estimated to pass is searched exactly in Postgres (the rows it
# selects through the metadata index, nearest first: one statement) instead of through the index, asked
# deep enough for the filter's pass rate. The crossover measured by `python -m bench` (its filtered rows)
# at 20k x 512: about 2,000 rows (Postgres reads each row's TOASTed vector, ~7 us a row).
EXACT_FILTERED_MAX = 2_000
# Per service and filter, how many of the index's first-round candidates the join kept, of how many: the
# next search with that filter asks the index deep enough at once, or goes exact (a few KiB; the oldest
# forgotten). The exact route is taken only on a rate measured over _RATE_SAMPLE candidates at least (10
# unlucky ones must not send a loose filter to a scan for good), and every _RECHECK_EVERY-th search of
# an exact-routed filter goes through the index again, to measure anew.
_PASS_RATES: OrderedDict[tuple[Any, ...], _PassRate] = OrderedDict()
_PASS_RATES_MAX = 4096
_RATE_SAMPLE = 1000
_RECHECK_EVERY = 64
_DEPTH_MAX_FACTOR = 64  # a first round asks for at most 64 x k candidates; widening goes deeper if needed
_EXACT_NO_INDEX_MAX_QUERIES = 4  # without an index, batches larger than this read the vectors once (COPY)


@dataclass(slots=True)
class _PassRate:
    kept: int = 0
    found: int = 0
    exact_searches: int = 0

    @property
    def rate(self) -> float:
        return self.kept / self.found if self.found else 1.0


_RATES_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class SearchOptions:
    """Per-call knobs: filters (image metadata containment, object categories, objects only) and the ANN
    search depth."""

    where: dict[str, Any] | None = None
    categories: tuple[str, ...] | None = None  # only stored objects of these categories
    objects_only: bool = False  # only object vectors (not whole-image ones)
    nprobe: int | None = None
    ef_search: int | None = None
    search_k: int | None = None  # Annoy


def _candidates(
    index: LoadedIndex | None,
    backlog: store.VectorSet,
    queries: np.ndarray,
    k_index: int,
    metric: str,
    options: SearchOptions,
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, reported distances) of the k_index nearest candidates per query, of the index and of the
    backlog, sorted by distance; -1 ids pad missing slots."""
    parts_ids, parts_dist = [], []
    if index is not None and index.index.ntotal:
        dist, ids = search_loaded(
            index,
            queries,
            k_index,
            metric,
            nprobe=options.nprobe,
            ef_search=options.ef_search,
            search_k=options.search_k,
        )
        parts_ids.append(ids)
        parts_dist.append(dist)
    if len(backlog):
        raw, positions = faiss_index.exact_search(backlog.vectors, queries, k_index, metric)
        parts_ids.append(np.where(positions >= 0, backlog.ids[np.maximum(positions, 0)], -1))
        parts_dist.append(faiss_index.reported_distance(raw, metric, queries.shape[1]))
    if not parts_ids:
        return np.full((len(queries), 0), -1, np.int64), np.empty((len(queries), 0), np.float32)
    ids = np.concatenate(parts_ids, axis=1)
    dist = np.concatenate(parts_dist, axis=1)
    dist = np.where(ids >= 0, dist, np.inf)
    # the nearest k_index of both: whatever neither returned is farther than the last of them, so k kept
    # candidates are the answer (with k_index from each, a row the index did not return could come first)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k_index]
    return np.take_along_axis(ids, order, axis=1), np.take_along_axis(dist, order, axis=1)


def check_queries(service: ServiceRecord, queries: np.ndarray, k: int) -> np.ndarray:
    """The query vectors as FAISS takes them, checked (a refused query loads and fetches nothing)."""
    if k < 1:
        raise BadInput("k", f"must be at least 1, got {k}")
    if queries.ndim != 2 or queries.shape[1] != service.dim:
        raise BadInput("vector", f"query vectors must have dimension {service.dim}, got {queries.shape[-1]}")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if not np.isfinite(queries).all():
        raise BadInput("vector", "query vectors must be finite numbers (no NaN or infinity)")
    return queries


def search_vectors(
    engine: Engine,
    service: ServiceRecord,
    index: LoadedIndex | None,
    queries: np.ndarray,
    k: int,
    options: SearchOptions | None = None,
) -> list[list[Hit]]:
    """The k nearest stored items per query vector, joined with their image metadata.

    Vectors added since the index was built are searched exactly and merged in; rows deleted since,
    and images whose metadata fails the filter, are dropped by the join, and the index is asked
    again for more when that left fewer than k.
    """
    with metrics.SEARCH_SECONDS.labels(index.build.backend if index is not None else "exact").time():
        return _search_vectors(engine, service, index, queries, k, options)


def _search_vectors(
    engine: Engine,
    service: ServiceRecord,
    index: LoadedIndex | None,
    queries: np.ndarray,
    k: int,
    options: SearchOptions | None,
) -> list[list[Hit]]:
    options = options or SearchOptions()
    # the service's own search depth (its index settings) unless this call sets one
    configured = service.index_settings
    options = replace(
        options,
        nprobe=options.nprobe or configured.get("nprobe"),
        ef_search=options.ef_search or configured.get("ef_search"),
        search_k=options.search_k or configured.get("search_k"),
    )
    queries = check_queries(service, queries, k)
    # autocommit: no BEGIN/ROLLBACK round trips; the rounds need no common snapshot (a row added between
    # them is simply not found yet, one deleted is dropped by the join)
    with store.reading(engine) as conn:
        return _search_rounds(conn, service, index, queries, k, options)


def _search_rounds(
    conn: Connection,
    service: ServiceRecord,
    index: LoadedIndex | None,
    queries: np.ndarray,
    k: int,
    options: SearchOptions,
) -> list[list[Hit]]:
    """Search, join, and search again for only the queries the join left short of k (rows deleted since
    the build, or filtered out), deeper each round; at most _MAX_ROUNDS rounds, the last exhaustive. The
    first round's one statement also brings the rows newer than the index that pass the filter, searched
    exactly and merged into every round's answer. The queries already answered keep their hits: one short
    query never re-runs the batch."""
    passes = store.HitFilter(options.where, options.categories, options.objects_only)
    rate = _pass_rate(service, passes)
    if (index is None and len(queries) <= _EXACT_NO_INDEX_MAX_QUERIES) or _goes_exact(index, passes, rate):
        return store.search_exact(conn, service, queries, k, passes)  # no index, or a filter few rows pass
    # a filter seen before: as deep at once as its pass rate says k hits need (else k, and widening)
    depth = k
    if rate is not None and rate.found:
        depth = max(k, min(_size(index), _DEPTH_MAX_FACTOR * k, math.ceil(_MARGIN * k / max(rate.rate, 1e-9))))
    ids, dist, rows, backlog = _first_round(conn, service, index, queries, depth, options, passes)
    recent = _recent_hits(rows, queries, k, service.metric)
    if passes.active:
        _observe_rate(service, passes, ids, rows)
    total = _size(index) + len(backlog)
    results: list[list[Hit]] = [[] for _ in range(len(queries))]
    pending = np.arange(len(queries))
    k_index, complete = depth, index is None  # complete: every stored vector can be a candidate at k_index = total
    for round_no in range(_MAX_ROUNDS):
        if round_no:
            ids, dist = _candidates(index, backlog, queries[pending], k_index, service.metric, options)
            rows = store.search_rows(conn, service.id, ids, dist, dim=service.dim, passes=passes)
        exhausted = complete and k_index >= total  # fewer than k stored rows pass: nothing more to find
        short, need, index_short = [], k_index, False
        for row, query_no in enumerate(pending):
            found, kept = int((ids[row] >= 0).sum()), rows.hits[row]
            results[query_no] = _merged(kept, recent[query_no], k)
            if exhausted or _answered(kept, results[query_no], dist[row], found, k, filtered=passes.active):
                continue
            short.append(query_no)
            need = max(need, _next_depth(k, k_index, len(kept), found))
            index_short |= found < min(k_index, total)  # the search itself saw fewer: asking deeper won't help
        if not short:
            break
        pending = np.asarray(short)
        if need >= total or index_short or round_no == _MAX_ROUNDS - 2:  # the last round sees every row
            if not complete and passes.active:
                # A filter the index could not answer at this depth: rank the rows that pass it exactly in
                # Postgres (their number bounds the work; a whole-graph HNSW search costs seconds)
                exact = store.search_exact(conn, service, queries[pending], k, passes)
                for query_no, hits in zip(pending, exact, strict=True):
                    results[query_no] = hits
                return results
            if not complete:
                # An IVF/HNSW search visits only part of the index, so even k = all may miss rows that pass
                # the filter: search every list (and deep graphs) before giving fewer than k.
                deep = max(options.ef_search or 0, total)
                options = replace(options, nprobe=_EVERY_LIST, ef_search=deep, search_k=deep * 16)
            complete, need = True, total
        k_index = min(need, total)
    return results


def _size(index: LoadedIndex | None) -> int:
    return int(index.index.ntotal) if index is not None else 0


def _goes_exact(index: LoadedIndex | None, passes: store.HitFilter, rate: _PassRate | None) -> bool:
    """A metadata filter whose well-measured pass rate says at most EXACT_FILTERED_MAX rows pass it: rank
    those rows in Postgres (but every _RECHECK_EVERY-th time, measure the rate again through the index)."""
    if index is None or passes.where is None or rate is None or rate.found < _RATE_SAMPLE:
        return False
    if rate.rate * _size(index) > EXACT_FILTERED_MAX:
        return False
    with _RATES_LOCK:
        rate.exact_searches += 1
        return rate.exact_searches % _RECHECK_EVERY != 0


def _rate_key(service: ServiceRecord, passes: store.HitFilter) -> tuple[Any, ...]:
    where = json.dumps(passes.where, sort_keys=True) if passes.where is not None else None
    categories = tuple(sorted(passes.categories)) if passes.categories is not None else None
    return (service.id, where, categories, passes.objects_only)


def _pass_rate(service: ServiceRecord, passes: store.HitFilter) -> _PassRate | None:
    if not passes.active:
        return None
    with _RATES_LOCK:
        return _PASS_RATES.get(_rate_key(service, passes))


def _observe_rate(service: ServiceRecord, passes: store.HitFilter, ids: np.ndarray, rows: store.SearchRows) -> None:
    """The share of the first round's candidates that passed the filter (rows deleted since the build
    count as failing: both make the index's answer short)."""
    found = int((ids >= 0).sum())
    if not found:
        return
    kept = sum(len(hits) for hits in rows.hits)
    key = _rate_key(service, passes)
    with _RATES_LOCK:
        seen = _PASS_RATES.pop(key, None) or _PassRate()
        if seen.found > 8 * _RATE_SAMPLE:  # older searches weigh less: the data may have changed since
            seen.kept, seen.found = seen.kept // 2, seen.found // 2
        seen.kept, seen.found = seen.kept + kept, seen.found + found
        _PASS_RATES[key] = seen
        while len(_PASS_RATES) > _PASS_RATES_MAX:
            _PASS_RATES.popitem(last=False)


def _first_round(
    conn: Connection,
    service: ServiceRecord,
    index: LoadedIndex | None,
    queries: np.ndarray,
    depth: int,
    options: SearchOptions,
    passes: store.HitFilter,
) -> tuple[np.ndarray, np.ndarray, store.SearchRows, store.VectorSet]:
    """The index's `depth` candidates per query and the statement that joins them and brings the recent rows.
    Past RECENT_MAX recent rows (a backlog since the last build) they are read by COPY instead and
    searched like a second index, and the round is asked again; the backlog comes back (else empty)."""
    backlog = store.VectorSet(ids=np.empty(0, np.int64), vectors=np.empty((0, service.dim), np.float32))
    watermark = index.build.watermark if index is not None else 0
    ids, dist = _candidates(index, backlog, queries, depth, service.metric, options)
    rows = store.search_rows(conn, service.id, ids, dist, dim=service.dim, after=watermark, passes=passes)
    if rows.recent_complete:
        return ids, dist, rows, backlog
    backlog = store.read_service_vectors(conn, service.id, service.dim, after_id=watermark)
    ids, dist = _candidates(index, backlog, queries, depth, service.metric, options)
    return ids, dist, store.search_rows(conn, service.id, ids, dist, dim=service.dim, passes=passes), backlog


def _recent_hits(rows: store.SearchRows, queries: np.ndarray, k: int, metric: str) -> list[list[Hit]]:
    """Per query, its k nearest recent rows (exact), nearest first."""
    if not rows.recent:
        return [[] for _ in range(len(queries))]
    raw, positions = faiss_index.exact_search(rows.recent_vectors, queries, min(k, len(rows.recent)), metric)
    dist = faiss_index.reported_distance(raw, metric, queries.shape[1])
    return [
        [replace(rows.recent[p], dist=float(d)) for p, d in zip(ps, ds, strict=True) if p >= 0]
        for ps, ds in zip(positions, dist, strict=True)
    ]


def _merged(kept: list[Hit], recent: list[Hit], k: int) -> list[Hit]:
    if not recent:
        return kept[:k]
    return sorted(kept + recent, key=lambda hit: (hit.dist, hit.embedding_id))[:k]


def _answered(kept: list[Hit], merged: list[Hit], dist: np.ndarray, found: int, k: int, *, filtered: bool) -> bool:
    """Whether a query's merged hits are its answer: k of the candidates passed; or k hits all nearer than
    the farthest candidate (what the index did not return is farther still); or, unfiltered, the join
    dropped nothing (the index has no more to give)."""
    if len(kept) >= k:
        return True
    if found and len(merged) >= k and merged[-1].dist <= float(dist[found - 1]):
        return True
    return not filtered and len(kept) == found


def _next_depth(k: int, k_index: int, kept: int, found: int) -> int:
    """Candidates to ask for next: twice what the share of candidates the join kept says k hits need
    (none kept: fewer than 1 in `found` pass), and at least 4 x k_index + 8."""
    return max(4 * k_index + 8, -(-_MARGIN * k * found // max(kept, 1)))


def search_images(
    engine: Engine,
    service: ServiceRecord,
    extractor: Extractor,
    index: LoadedIndex | None,
    images: Sequence[np.ndarray],
    k: int,
    *,
    batch_size: int = 32,
    options: SearchOptions | None = None,
) -> list[list[Hit]]:
    """Embed decoded images (in model batches) and search with their vectors."""
    vectors = [extractor.embed(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return search_vectors(engine, service, index, np.concatenate(vectors), k, options)
