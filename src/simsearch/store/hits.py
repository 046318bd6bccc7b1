"""A search's one SQL statement: kNN candidates joined to their image metadata (and box), plus the rows newer
than the index that pass the same filter, with their vectors, for an exact search. Plain psycopg and a
prepared statement: this is the hot path of every search (issue 14), so no ORM layer and one round trip."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Connection

from simsearch.store.read import run_prepared
from simsearch.store.records import Hit, ServiceRecord

RECENT_MAX = 4096  # rows newer than the index, at most, that one statement returns (more: read by COPY)
NO_RECENT = (1 << 63) - 1  # `after`: no recent rows wanted (a widening round; they came with the first)

_OUTPUT_JOINS = """JOIN image i ON i.id = e.image_id
LEFT JOIN roi r ON r.id = e.roi_id
LEFT JOIN category c ON c.id = r.category_id"""


def _conditions(where: bool, categories: bool, objects_only: bool) -> str:
    """` AND ...` for each part of a filter: image metadata containment, object categories, objects only."""
    passes = [
        *(["i.metadata @> %(filter)s::jsonb"] if where else []),
        *(["c.name = ANY(%(categories)s::text[])"] if categories else []),
        *(["e.roi_id IS NOT NULL"] if objects_only else []),
    ]
    return "".join(f" AND {p}" for p in passes)


def _filter_params(passes: HitFilter) -> dict[str, Any]:
    return {
        "filter": json.dumps(passes.where) if passes.where is not None else None,
        "categories": list(passes.categories) if passes.categories is not None else None,
    }


def _hit(row: Sequence[Any]) -> Hit:
    """A Hit from the columns both statements return after the query number (a recent row's distance is
    NULL until it is searched: 0.0 meanwhile)."""
    eid, dist, image_id, roi_id, uri, width, height, sha256, metadata, category, prob, bbox = row
    box = tuple(bbox) if bbox is not None else None
    return Hit(
        eid, 0.0 if dist is None else dist, image_id, roi_id, uri, width, height, sha256, metadata, category, prob, box
    )


@functools.lru_cache(maxsize=256)
def _statement(service_id: int, after: int, where: bool, categories: bool, objects_only: bool) -> str:
    """The statement for one service, one index watermark and one shape of filter: the two integers inline
    and only the conditions the filter has, so that Postgres's generic plan of the prepared statement is
    as cheap as a custom one and is kept after 5 runs (planning it costs several times running it)."""
    recent_joins = (["JOIN image i ON i.id = e.image_id"] if where else []) + (
        ["JOIN roi r ON r.id = e.roi_id", "JOIN category c ON c.id = r.category_id"] if categories else []
    )
    also = _conditions(where, categories, objects_only)
    # query_no -1: a recent row (no distance yet), with its vector; the same columns as simsearch_join_hits
    return f"""WITH recent AS (
    SELECT e.id FROM embedding e {" ".join(recent_joins)}
    WHERE e.service_id = {int(service_id)} AND e.id > {int(after)}{also}
    ORDER BY e.id LIMIT {RECENT_MAX + 1}
), hit AS (
    SELECT h.q, h.eid, h.d FROM unnest(%(q)s::text::integer[], %(ids)s::text::bigint[], %(dists)s::text::real[])
        AS h(q, eid, d)
    UNION ALL
    SELECT -1, id, NULL FROM recent
)
SELECT hit.q, e.id, hit.d, i.id, e.roi_id, i.uri, i.width, i.height, i.sha256, i.metadata, c.name, r.prob,
       CASE WHEN r.id IS NOT NULL THEN ARRAY[r.bbox_xmin, r.bbox_ymin, r.bbox_xmax, r.bbox_ymax] END,
       CASE WHEN hit.q < 0 THEN e.vector END
FROM hit JOIN embedding e ON e.id = hit.eid AND e.service_id = {int(service_id)}
{_OUTPUT_JOINS}
WHERE true{also}
ORDER BY hit.q, hit.d, e.id"""


@dataclass(frozen=True, slots=True)
class HitFilter:
    """What a hit must be: its image's metadata contains `where`, its object is of one of `categories`,
    and (with `objects_only`) it is an object vector, not a whole-image one."""

    where: dict[str, Any] | None = None
    categories: Sequence[str] | None = None
    objects_only: bool = False

    @property
    def active(self) -> bool:
        return self.where is not None or self.categories is not None or self.objects_only


@dataclass(frozen=True, slots=True)
class SearchRows:
    """Per query, the candidates still stored that pass the filter, nearest first; and the recent rows that
    pass it (dist 0 until searched) with their vectors; `recent_complete` is False when there were more
    than RECENT_MAX of them (the caller reads them otherwise)."""

    hits: list[list[Hit]]
    recent: list[Hit]
    recent_vectors: np.ndarray  # (len(recent), dim) float32
    recent_complete: bool


def _array_literal(values: np.ndarray) -> str:
    """An array as Postgres's text form, '{1,2,3}': a deep search's hundreds of candidates cost half as
    much to send this way as psycopg's element-by-element array dumping."""
    return "{" + ",".join(map(str, values.tolist())) + "}"


def search_rows(
    conn: Connection,
    service_id: int,
    ids: np.ndarray,
    dists: np.ndarray,
    *,
    dim: int,
    after: int = NO_RECENT,
    passes: HitFilter | None = None,
) -> SearchRows:
    """ids/dists: (nq, k) candidates per query, -1 ids for missing ones. Hits whose rows are gone (deleted
    since the index was built) or that fail the filter are dropped (the caller asks for more than k).
    With `after` (the index's watermark), the rows newer than it come back too, for an exact search."""
    passes = passes or HitFilter()
    valid = ids >= 0
    query_no = np.broadcast_to(np.arange(ids.shape[0], dtype=np.int32)[:, None], ids.shape)[valid]
    params = {
        "q": _array_literal(query_no),
        "ids": _array_literal(ids[valid]),
        "dists": _array_literal(dists[valid]),
        **_filter_params(passes),
    }
    statement = _statement(
        service_id, after, passes.where is not None, passes.categories is not None, passes.objects_only
    )
    rows = run_prepared(conn, statement, params, binary=True)
    hits: list[list[Hit]] = [[] for _ in range(ids.shape[0])]
    recent: list[Hit] = []
    vectors: list[Any] = []
    for q, *columns, vector in rows:
        hit = _hit(columns)
        if q >= 0:
            hits[q].append(hit)
        else:
            recent.append(hit)
            vectors.append(vector.to_numpy())  # pgvector's psycopg loader gives Vector objects
    recent_vectors = np.stack(vectors).astype(np.float32, copy=False) if vectors else np.empty((0, dim), np.float32)
    complete = len(recent) <= RECENT_MAX
    return SearchRows(hits, recent[:RECENT_MAX], recent_vectors[:RECENT_MAX], complete)


@functools.lru_cache(maxsize=256)
def _exact_statement(service_id: int, dim: int, metric: str, where: bool, categories: bool, objects_only: bool) -> str:
    """Per query vector, its k nearest stored rows that pass the filter, by pgvector's exact distance
    (no index: a filter's rows through its index, or every row of the service), reported as FAISS's."""
    also = _conditions(where, categories, objects_only)
    # l2: Σ(q−x)²/D; cosine: sqrt(2 − 2·ip), as faiss_index.reported_distance (<#> is −ip)
    order = "e.vector <#> q.v" if metric == "cosine" else "e.vector <-> q.v"
    reported = f"sqrt(greatest(0, 2 + 2 * ({order})))" if metric == "cosine" else f"power({order}, 2) / {int(dim)}"
    return f"""SELECT q.ord - 1, h.* FROM unnest(%(qs)s::vector({int(dim)})[]) WITH ORDINALITY AS q(v, ord)
CROSS JOIN LATERAL (
    SELECT e.id AS eid, ({reported})::real AS d, i.id AS iid, e.roi_id, i.uri, i.width, i.height, i.sha256,
           i.metadata, c.name, r.prob,
           CASE WHEN r.id IS NOT NULL THEN ARRAY[r.bbox_xmin, r.bbox_ymin, r.bbox_xmax, r.bbox_ymax] END
    FROM embedding e {_OUTPUT_JOINS}
    WHERE e.service_id = {int(service_id)}{also}
    ORDER BY {order}, e.id LIMIT %(k)s
) AS h
ORDER BY 1, h.d, h.eid"""


def search_exact(
    conn: Connection, service: ServiceRecord, queries: np.ndarray, k: int, passes: HitFilter | None = None
) -> list[list[Hit]]:
    """The exact k nearest stored rows per query that pass the filter, in one statement: Postgres reads
    only the rows the filter selects (or every row of the service), no index file is involved."""
    passes = passes or HitFilter()
    statement = _exact_statement(
        service.id, service.dim, service.metric, passes.where is not None, passes.categories is not None,
        passes.objects_only,
    )  # fmt: skip
    params = {"qs": list(queries), "k": k, **_filter_params(passes)}
    hits: list[list[Hit]] = [[] for _ in range(len(queries))]
    for q, *columns in run_prepared(conn, statement, params, binary=True):
        hits[q].append(_hit(columns))
    return hits
