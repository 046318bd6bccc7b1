"""Objects: detected boxes (ROIs), their categories and vectors; the ranking of images by their objects.

Never commits: the caller's transaction holds an image, its boxes and their vectors together.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import Connection, text

from simsearch.store.read import raw_connection
from simsearch.store.records import SCORES, NewObject, ObjectRecord, RankedImage, Score


def category_ids(conn: Connection, names: Sequence[str]) -> dict[str, int]:
    """name -> id, inserting the names not seen before (unique names; concurrent inserts are fine)."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    conn.execute(
        text("INSERT INTO category (name) SELECT unnest(CAST(:names AS text[])) ON CONFLICT (name) DO NOTHING"),
        {"names": wanted},
    )
    rows = conn.execute(text("SELECT name, id FROM category WHERE name = ANY(:names)"), {"names": wanted})
    return {name: category_id for name, category_id in rows}


def _box_key(image_id: int, category_id: int | None, box: Sequence[float]) -> tuple[Any, ...]:
    return (image_id, category_id, *(round(float(v), 2) for v in box))


def replace_objects(
    conn: Connection,
    *,
    detector_id: int,
    service_id: int | None,
    image_ids: Sequence[int],
    objects: Sequence[NewObject],
) -> list[int]:
    """Store the boxes `detector_id` found on `image_ids` (all of them: an image absent from `objects` has
    none now), and the vectors `service_id` made of them; returns the roi id of each object.

    The images' earlier object vectors of `service_id` are replaced. A box the same detector already
    stored (same image, category and coordinates) keeps its row, so two services that embed the same
    detections (two chains over one detector) share the boxes; boxes no vector refers to any more go.
    With `service_id`, the caller's transaction has joined its writers (`join_writers`) before any row lock.
    """
    if service_id is not None:
        conn.execute(
            text("DELETE FROM embedding WHERE service_id = :sid AND image_id = ANY(:ids) AND roi_id IS NOT NULL"),
            {"sid": service_id, "ids": list(image_ids)},
        )
    conn.execute(
        text(
            "DELETE FROM roi r WHERE r.service_id = :did AND r.image_id = ANY(:ids)"
            " AND NOT EXISTS (SELECT 1 FROM embedding e WHERE e.roi_id = r.id)"
        ),
        {"did": detector_id, "ids": list(image_ids)},
    )
    if not objects:
        return []
    categories = category_ids(conn, [o.category for o in objects if o.category is not None])
    roi_ids = _roi_ids(conn, detector_id, image_ids, objects, categories)
    if service_id is not None:
        _copy_vectors(conn, service_id, [(o, r) for o, r in zip(objects, roi_ids, strict=True) if o.vector is not None])
    return roi_ids


def _roi_ids(
    conn: Connection,
    detector_id: int,
    image_ids: Sequence[int],
    objects: Sequence[NewObject],
    categories: dict[str, int],
) -> list[int]:
    """Each object's roi row: the detector's stored box of the same image, category and coordinates, else
    a new row (COPY)."""
    kept = conn.execute(
        text(
            "SELECT id, image_id, category_id, bbox_xmin, bbox_ymin, bbox_xmax, bbox_ymax FROM roi"
            " WHERE service_id = :did AND image_id = ANY(:ids)"
        ),
        {"did": detector_id, "ids": list(image_ids)},
    )
    existing = {_box_key(r.image_id, r.category_id, r[3:]): r.id for r in kept}
    roi_ids: list[int] = []
    new_rows: list[tuple[int, NewObject, int | None]] = []
    for obj in objects:
        category_id = categories.get(obj.category) if obj.category is not None else None
        key = _box_key(obj.image_id, category_id, obj.bbox)
        if key not in existing:
            existing[key] = -1 - len(new_rows)  # placeholder: the n-th new row
            new_rows.append((obj.image_id, obj, category_id))
        roi_ids.append(existing[key])
    if not new_rows:
        return roi_ids
    # ids drawn first, so each object knows its row without relying on the order of RETURNING
    fresh = conn.execute(
        text("SELECT nextval(pg_get_serial_sequence('roi', 'id')) FROM generate_series(1, :n)"),
        {"n": len(new_rows)},
    ).scalars()
    new_ids = [int(i) for i in fresh]
    with (
        raw_connection(conn).cursor() as cur,
        cur.copy(
            "COPY roi (id, image_id, service_id, category_id, prob, bbox_xmin, bbox_ymin, bbox_xmax, bbox_ymax)"
            " FROM STDIN"
        ) as copy,
    ):
        for roi_id, (image_id, obj, category_id) in zip(new_ids, new_rows, strict=True):
            copy.write_row((roi_id, image_id, detector_id, category_id, float(obj.prob), *map(float, obj.bbox)))
    return [new_ids[-1 - i] if i < 0 else i for i in roi_ids]


def _copy_vectors(conn: Connection, service_id: int, with_vectors: list[tuple[NewObject, int]]) -> None:
    if not with_vectors:
        return
    sql = "COPY embedding (service_id, image_id, roi_id, vector) FROM STDIN (FORMAT BINARY)"
    with raw_connection(conn).cursor() as cur, cur.copy(sql) as copy:
        copy.set_types(["int4", "int8", "int8", "vector"])
        for obj, roi_id in with_vectors:
            copy.write_row((service_id, obj.image_id, roi_id, np.asarray(obj.vector, np.float32)))


def image_objects(conn: Connection, image_id: int) -> list[ObjectRecord]:
    """The boxes stored for an image (every detector), with the services that store a vector of each."""
    rows = conn.execute(
        text(
            "SELECT roi_id, image_id, category, prob, bbox_xmin, bbox_ymin, bbox_xmax, bbox_ymax, detector,"
            " embedded_by, created_at FROM objects WHERE image_id = :iid ORDER BY roi_id"
        ),
        {"iid": image_id},
    )
    return [
        ObjectRecord(
            roi_id=r.roi_id,
            image_id=r.image_id,
            category=r.category,
            prob=float(r.prob),
            bbox=(r.bbox_xmin, r.bbox_ymin, r.bbox_xmax, r.bbox_ymax),
            detector=r.detector,
            embedded_by=list(r.embedded_by),
            created_at=r.created_at,
        )
        for r in rows
    ]


_RANK = text(
    "SELECT * FROM simsearch_rank_images(CAST(:sid AS integer), CAST(:q AS integer[]), CAST(:ids AS bigint[]),"
    " CAST(:dists AS real[]), CAST(:score AS text), CAST(:categories AS text[]), CAST(:filter AS jsonb),"
    " CAST(:limit AS integer))"
)


def rank_images(
    conn: Connection,
    service_id: int,
    query_no: Sequence[int],
    embedding_ids: Sequence[int],
    dists: Sequence[float],
    *,
    score: Score = "mean",
    categories: Sequence[str] | None = None,
    where: dict[str, Any] | None = None,
    limit: int = 10,
) -> list[RankedImage]:
    """Images ranked by their objects' hits, through the sql/ function simsearch_rank_images."""
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}")
    rows = conn.execute(
        _RANK,
        {
            "sid": service_id,
            "q": list(query_no),
            "ids": list(embedding_ids),
            "dists": [float(d) for d in dists],
            "score": score,
            "categories": list(categories) if categories is not None else None,
            "filter": json.dumps(where) if where is not None else None,
            "limit": limit,
        },
    )
    return [
        RankedImage(
            image_id=r.image_id,
            uri=r.uri,
            width=r.width,
            height=r.height,
            sha256=r.sha256,
            metadata=r.metadata,
            score=float(r.score),
            hit_count=r.hit_count,
            query_count=r.query_count,
            mean_dist=float(r.mean_dist),
            min_dist=float(r.min_dist),
            matches=r.matches,
        )
        for r in rows
    ]
