"""Writes: images upserted by uri, vectors replaced with one binary COPY per batch. Never commits:
the caller owns the transaction, so an image and its vectors land together or not at all. A caller
that writes vectors joins the service's writers (`builds.join_writers`) first, before any row lock."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
from sqlalchemy import Connection, Table, text
from sqlalchemy.dialects.postgresql import insert

from simsearch.store.read import raw_connection
from simsearch.store.records import NewImage
from simsearch.store.tables import Image

_image = cast(Table, Image.__table__)


def upsert_images(conn: Connection, images: Sequence[NewImage]) -> dict[str, int]:
    """Insert or refresh images by uri; returns uri -> image id. User metadata is merged, new keys win."""
    latest = {img.uri: img for img in images}  # one row per uri, or ON CONFLICT hits a row twice
    if not latest:
        return {}
    statement = insert(_image).values(
        [
            {"uri": i.uri, "sha256": i.sha256, "width": i.width, "height": i.height, "metadata": i.metadata}
            for i in latest.values()
        ]
    )
    upsert = statement.on_conflict_do_update(
        index_elements=["uri"],
        set_={
            "sha256": statement.excluded.sha256,
            "width": statement.excluded.width,
            "height": statement.excluded.height,
            "metadata": _image.c.metadata.op("||")(statement.excluded.metadata),
        },
    ).returning(_image.c.uri, _image.c.id)
    return {uri: image_id for uri, image_id in conn.execute(upsert)}


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
