"""Writes: images upserted by uri, vectors replaced with one binary COPY per batch. Never commits:
the caller owns the transaction, so an image and its vectors land together or not at all. A caller
that writes vectors joins the service's writers (`builds.join_writers`) first, before any row lock."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
from psycopg import errors as pg_errors
from sqlalchemy import Connection, text
from sqlalchemy import exc as sa_exc

from simsearch.errors import BadInput
from simsearch.store.read import raw_connection
from simsearch.store.records import NewImage

# One statement per batch, whatever its size: arrays, not a VALUES row per image (which SQLAlchemy
# compiles anew for every row count, and which costs a bind parameter per column and row).
_UPSERT = text(
    "INSERT INTO image (uri, sha256, width, height, metadata) "
    "SELECT * FROM unnest(CAST(:uris AS text[]), CAST(:sha256 AS text[]), CAST(:widths AS int4[]), "
    "CAST(:heights AS int4[]), CAST(:metadata AS jsonb[])) "
    "ON CONFLICT (uri) DO UPDATE SET sha256 = excluded.sha256, width = excluded.width, "
    "height = excluded.height, metadata = image.metadata || excluded.metadata "
    "RETURNING uri, id"
)


def upsert_images(conn: Connection, images: Sequence[NewImage]) -> dict[str, int]:
    """Insert or refresh images by uri; returns uri -> image id. User metadata is merged, new keys win."""
    latest = list({img.uri: img for img in images}.values())  # one row per uri, or ON CONFLICT hits a row twice
    if not latest:
        return {}
    params = {
        "uris": [i.uri for i in latest],
        "sha256": [i.sha256 for i in latest],
        "widths": [i.width for i in latest],
        "heights": [i.height for i in latest],
        "metadata": [json.dumps(i.metadata) for i in latest],  # as SQLAlchemy's JSONB binds it
    }
    try:
        return {uri: image_id for uri, image_id in conn.execute(_UPSERT, params)}
    except sa_exc.OperationalError as exc:
        if not isinstance(exc.orig, pg_errors.ProgramLimitExceeded):
            raise
        # a uri whose compressed form exceeds a btree row (about 2,700 bytes): the caller's fault, not an outage
        longest = max((i.uri for i in latest), key=len)
        raise BadInput(
            "uri",
            f"{longest[:40]}... ({len(longest.encode())} bytes) is too long for Postgres to index: use a shorter uri",
        ) from None


def replace_image_vectors(conn: Connection, service_id: int, image_ids: Sequence[int], vectors: np.ndarray) -> None:
    """Store one whole-image vector per image, replacing any earlier one.

    A replaced vector gets a new id, above the current index's watermark, so search sees the new
    vector at once and the index's copy of the old one is filtered out by the join. The caller's
    transaction has joined the service's writers (`join_writers`): a build's snapshot waits for it.
    """
    if len(image_ids) != len(vectors):
        raise ValueError("one vector per image")
    conn.execute(
        text("DELETE FROM embedding WHERE service_id = :sid AND image_id = ANY(:ids) AND roi_id IS NULL"),
        {"sid": service_id, "ids": list(image_ids)},
    )
    sql = "COPY embedding (service_id, image_id, vector) FROM STDIN (FORMAT BINARY)"
    with raw_connection(conn).cursor() as cur, cur.copy(sql) as copy:
        copy.set_types(["int4", "int8", "vector"])
        for image_id, vector in zip(image_ids, vectors, strict=True):
            copy.write_row((service_id, image_id, vector))


def delete_images(conn: Connection, image_ids: Sequence[int]) -> int:
    """Delete images (their ROIs and vectors cascade); gone from search at once."""
    result = conn.execute(text("DELETE FROM image WHERE id = ANY(:ids)"), {"ids": list(image_ids)})
    return int(result.rowcount)
