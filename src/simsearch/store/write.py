"""Writes: images upserted by uri, vectors replaced, one statement per batch. Never commits:
the caller owns the transaction, so an image and its vectors land together or not at all. A caller
that writes vectors joins the service's writers (`builds.join_writers`) first, before any row lock."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from psycopg import errors as pg_errors
from sqlalchemy import Connection, text

from simsearch.errors import BadInput
from simsearch.store.read import raw_connection
from simsearch.store.records import NewImage

# One statement per batch, whatever its size: arrays, not a VALUES row per image (which costs a bind
# parameter per column and row, and a statement of its own per row count). psycopg placeholders: run on
# the raw connection, as the COPYs are.
_UPSERT = (
    "INSERT INTO image (uri, sha256, width, height, metadata) "
    "SELECT * FROM unnest(CAST(%(uris)s AS text[]), CAST(%(sha256)s AS text[]), CAST(%(widths)s AS int4[]), "
    "CAST(%(heights)s AS int4[]), CAST(%(metadata)s AS jsonb[])) "
    "ON CONFLICT (uri) DO UPDATE SET sha256 = excluded.sha256, width = excluded.width, "
    "height = excluded.height, metadata = image.metadata || excluded.metadata "
    "RETURNING uri, id"
)


def _image_params(images: Sequence[NewImage]) -> dict[str, list[Any]]:
    return {
        "uris": [i.uri for i in images],
        "sha256": [i.sha256 for i in images],
        "widths": [i.width for i in images],
        "heights": [i.height for i in images],
        "metadata": [json.dumps(i.metadata) for i in images],  # as SQLAlchemy's JSONB binds it
    }


def _uri_too_long(images: Sequence[NewImage]) -> BadInput:
    # a uri whose compressed form exceeds a btree row (about 2,700 bytes): the caller's fault, not an outage
    longest = max((i.uri for i in images), key=len)
    return BadInput(
        "uri", f"{longest[:40]}... ({len(longest.encode())} bytes) is too long for Postgres to index: use a shorter uri"
    )


def upsert_images(conn: Connection, images: Sequence[NewImage]) -> dict[str, int]:
    """Insert or refresh images by uri; returns uri -> image id. User metadata is merged, new keys win."""
    latest = list({img.uri: img for img in images}.values())  # one row per uri, or ON CONFLICT hits a row twice
    if not latest:
        return {}
    try:
        with raw_connection(conn).cursor() as cur:
            return {uri: image_id for uri, image_id in cur.execute(_UPSERT, _image_params(latest))}
    except pg_errors.ProgramLimitExceeded:
        raise _uri_too_long(latest) from None


# A vector that replaces one (the same service, image and no ROI) takes a new id: excluded.id is the
# freshly drawn default, so the row moves above the current index's watermark, as a DELETE and a fresh
# INSERT would move it (without the DELETE's scan, which a new service's missing statistics made a scan
# of all the service's vectors, per batch). Vectors travel as one binary vector[] (%(vectors)b: pgvector's
# binary dumper; its text form costs ~9 ms per 32 vectors).
_INSERT_VECTORS = (
    "INSERT INTO embedding (service_id, image_id, vector) "
    "SELECT %(service_id)s, v.image_id, v.vector FROM {source} "
    "ON CONFLICT ON CONSTRAINT uq_embedding_service_id_image_id_roi_id DO UPDATE "
    "SET id = excluded.id, vector = excluded.vector, created_at = excluded.created_at"
)
_REPLACE_VECTORS = _INSERT_VECTORS.format(
    source="unnest(CAST(%(image_ids)s AS int8[]), CAST(%(vectors)b AS vector[])) AS v (image_id, vector)"
)
# Images and their vectors in one statement (one round trip per batch): the upsert feeds the insert.
_STORE_IMAGE_VECTORS = (
    f"WITH img AS ({_UPSERT}), vec AS ("
    + _INSERT_VECTORS.format(
        source="(SELECT img.id AS image_id, u.vector FROM img JOIN "
        "unnest(CAST(%(uris)s AS text[]), CAST(%(vectors)b AS vector[])) AS u (uri, vector) USING (uri)) AS v"
    )
    + ") SELECT uri, id FROM img"
)


def _vector_list(vectors: np.ndarray) -> list[np.ndarray]:
    return list(np.asarray(vectors, dtype=np.float32))


def replace_image_vectors(conn: Connection, service_id: int, image_ids: Sequence[int], vectors: np.ndarray) -> None:
    """Store one whole-image vector per image (each image once), replacing any earlier one.

    A replaced vector gets a new id, above the current index's watermark, so search sees the new
    vector at once and the index's copy of the old one is filtered out by the join. The caller's
    transaction has joined the service's writers (`join_writers`): a build's snapshot waits for it.
    """
    if len(image_ids) != len(vectors):
        raise ValueError("one vector per image")
    if len(image_ids) == 0:
        return
    params = {"service_id": service_id, "image_ids": list(image_ids), "vectors": _vector_list(vectors)}
    with raw_connection(conn).cursor() as cur:
        cur.execute(_REPLACE_VECTORS, params)


def store_image_vectors(
    conn: Connection, service_id: int, images: Sequence[NewImage], vectors: np.ndarray
) -> dict[str, int]:
    """`upsert_images`, then `replace_image_vectors` of each image's vector, in one statement; returns
    uri -> image id. The same uri twice: the last image and its vector win. Never commits; the caller's
    transaction has joined the service's writers (`join_writers`) first."""
    if len(images) != len(vectors):
        raise ValueError("one vector per image")
    last = {img.uri: i for i, img in enumerate(images)}  # one row per uri, or ON CONFLICT hits a row twice
    if not last:
        return {}
    latest = [images[i] for i in last.values()]
    params: dict[str, Any] = _image_params(latest) | {
        "service_id": service_id,
        "vectors": _vector_list(np.asarray(vectors)[list(last.values())]),
    }
    try:
        with raw_connection(conn).cursor() as cur:
            return {uri: image_id for uri, image_id in cur.execute(_STORE_IMAGE_VECTORS, params)}
    except pg_errors.ProgramLimitExceeded:
        raise _uri_too_long(latest) from None


def delete_images(conn: Connection, image_ids: Sequence[int]) -> int:
    """Delete images (their ROIs and vectors cascade); gone from search at once."""
    result = conn.execute(text("DELETE FROM image WHERE id = ANY(:ids)"), {"ids": list(image_ids)})
    return int(result.rowcount)
