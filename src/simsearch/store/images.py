"""Image rows: read one, page through a service's images (keyset), patch metadata, read a stored vector."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
from sqlalchemy import Connection, Table, exists, select, update

from simsearch.errors import NotFound
from simsearch.store.records import ImageRecord
from simsearch.store.tables import Embedding, Image

_image = cast(Table, Image.__table__)
_COLUMNS = (
    _image.c.id,
    _image.c.uri,
    _image.c.sha256,
    _image.c.width,
    _image.c.height,
    _image.c.metadata,
    _image.c.created_at,
)


def _record(row: Any) -> ImageRecord:  # noqa: ANN401 - a SQLAlchemy Row
    return ImageRecord(**row._mapping)


def get_image(conn: Connection, image_id: int) -> ImageRecord:
    row = conn.execute(select(*_COLUMNS).where(_image.c.id == image_id)).one_or_none()
    if row is None:
        raise NotFound(f"image {image_id} not found")
    return _record(row)


def image_ids(conn: Connection, uris: Sequence[str]) -> list[int]:
    """The ids of the stored images among `uris` (a uri not stored has none)."""
    if not uris:
        return []
    return list(conn.execute(select(_image.c.id).where(_image.c.uri.in_(list(uris)))).scalars())


def list_images(conn: Connection, *, service_id: int | None, after_id: int, limit: int) -> list[ImageRecord]:
    """Images in id order, after `after_id` (keyset pagination: stable under concurrent inserts)."""
    query = select(*_COLUMNS).where(_image.c.id > after_id).order_by(_image.c.id).limit(limit)
    if service_id is not None:
        query = query.where(exists().where(Embedding.image_id == _image.c.id, Embedding.service_id == service_id))
    return [_record(row) for row in conn.execute(query)]


def update_metadata(conn: Connection, image_id: int, metadata: dict[str, Any], *, replace: bool) -> ImageRecord:
    """Merge `metadata` into the image's (new keys win), or replace it whole."""
    new_value = metadata if replace else _image.c.metadata.op("||")(metadata)
    row = conn.execute(
        update(_image).where(_image.c.id == image_id).values(metadata=new_value).returning(*_COLUMNS)
    ).one_or_none()
    if row is None:
        raise NotFound(f"image {image_id} not found")
    return _record(row)


def image_vector(conn: Connection, service_id: int, image_id: int) -> np.ndarray:
    """The stored whole-image vector of an image in a service."""
    vector = conn.execute(
        select(Embedding.vector).where(
            Embedding.service_id == service_id, Embedding.image_id == image_id, Embedding.roi_id.is_(None)
        )
    ).scalar_one_or_none()
    if vector is None:
        raise NotFound(f"image {image_id} has no vector in this service; index it first")
    return np.asarray(vector, dtype=np.float32)
