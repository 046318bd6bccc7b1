"""Join kNN hits to image metadata in one query, through the sql/ function simsearch_join_hits."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import Connection, text

from simsearch.store.records import Hit

_JOIN = text(
    "SELECT * FROM simsearch_join_hits(CAST(:sid AS integer), CAST(:q AS integer[]), CAST(:ids AS bigint[]), "
    "CAST(:dists AS real[]), CAST(:filter AS jsonb), CAST(:categories AS text[]), CAST(:objects_only AS boolean))"
)


def join_hits(
    conn: Connection,
    service_id: int,
    ids: np.ndarray,
    dists: np.ndarray,
    *,
    where: dict[str, Any] | None = None,
    categories: Sequence[str] | None = None,
    objects_only: bool = False,
) -> list[list[Hit]]:
    """ids/dists: (nq, k) arrays, -1 ids for missing hits. Returns per query the hits still stored,
    nearest first; hits whose rows are gone, whose image metadata does not contain `where`, whose
    object is not of one of `categories`, or (with `objects_only`) that are whole-image vectors, are
    dropped (the caller asks for more than k)."""
    nq = ids.shape[0]
    valid = ids >= 0
    query_no = np.broadcast_to(np.arange(nq)[:, None], ids.shape)[valid]
    out: list[list[Hit]] = [[] for _ in range(nq)]
    if not valid.any():
        return out
    rows = conn.execute(
        _JOIN,
        {
            "sid": service_id,
            "q": query_no.tolist(),
            "ids": ids[valid].tolist(),
            "dists": dists[valid].astype(np.float64).tolist(),
            "filter": json.dumps(where) if where is not None else None,
            "categories": list(categories) if categories is not None else None,
            "objects_only": objects_only,
        },
    )
    for row in rows:
        out[row.query_no].append(
            Hit(
                embedding_id=row.embedding_id,
                dist=float(row.dist),
                image_id=row.image_id,
                roi_id=row.roi_id,
                uri=row.uri,
                width=row.width,
                height=row.height,
                sha256=row.sha256,
                metadata=row.metadata,
                category=row.category,
                prob=row.prob,
                bbox=tuple(row.bbox) if row.bbox is not None else None,
            )
        )
    return out
