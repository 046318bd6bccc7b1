"""Object search: each query object's nearest stored objects, and whole images ranked by those hits (in SQL,
sql/functions/rank_images.sql)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from sqlalchemy import Engine

from simsearch import store
from simsearch.errors import BadInput
from simsearch.index import LoadedIndex
from simsearch.objects.types import ObjectImage
from simsearch.search import SearchOptions, search_vectors
from simsearch.store import SCORES, Hit, RankedImage, Score, ServiceRecord


def _object_vectors(images: Sequence[ObjectImage]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The vectors of every object, stacked, and which (image, object) each row is."""
    where = [(i, j) for i, img in enumerate(images) for j, o in enumerate(img.objects) if o.vector is not None]
    if not where:
        return np.empty((0, 0), np.float32), []
    return np.stack([images[i].objects[j].vector for i, j in where]).astype(np.float32), where  # type: ignore[misc]


def search_objects(
    engine: Engine,
    service: ServiceRecord,
    index: LoadedIndex | None,
    images: Sequence[ObjectImage],
    k: int,
    options: SearchOptions | None = None,
) -> list[list[list[Hit]]]:
    """For each image, for each of its objects: the k nearest stored objects of `service`."""
    out: list[list[list[Hit]]] = [[[] for _ in img.objects] for img in images]
    vectors, where = _object_vectors(images)
    if not where:
        return out
    options = replace(options or SearchOptions(), objects_only=True)
    hits = search_vectors(engine, service, index, vectors, k, options)
    for (i, j), found in zip(where, hits, strict=True):
        out[i][j] = found
    return out


def rank_images(
    engine: Engine,
    service: ServiceRecord,
    object_hits: Sequence[Sequence[Hit]],
    *,
    score: Score = "mean",
    categories: Sequence[str] | None = None,
    where: dict[str, Any] | None = None,
    limit: int = 10,
) -> list[RankedImage]:
    """Images ranked by the hits of a query's objects (object_hits[q]: the hits of query object q)."""
    if score not in SCORES:
        raise BadInput("score", f"{score!r}: choose one of {', '.join(SCORES)}")
    if limit < 1:
        raise BadInput("limit", f"must be at least 1, got {limit}")
    query_no = [q for q, hits in enumerate(object_hits) for _ in hits]
    ids = [h.embedding_id for hits in object_hits for h in hits]
    dists = [h.dist for hits in object_hits for h in hits]
    if not ids:
        return []
    with engine.connect() as conn:
        return store.rank_images(
            conn, service.id, query_no, ids, dists, score=score, categories=categories, where=where, limit=limit
        )
