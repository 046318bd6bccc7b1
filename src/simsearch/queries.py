"""The query side, the same for every face: a query image's vector (no database), the k nearest stored
images, a query image's objects and their nearest stored objects, and stored images ranked by those hits."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from simsearch import objects, services, store
from simsearch.core import Core
from simsearch.errors import BadInput
from simsearch.ingest import embed
from simsearch.input import Crop, under_roots
from simsearch.objects import ObjectImage, Plan
from simsearch.search import SearchOptions, check_queries, search_vectors
from simsearch.store import Hit, RankedImage, Score, ServiceRecord

ONE_IMAGE = "give exactly one image (a file, base64 bytes or a URL)"


@dataclass(frozen=True, slots=True)
class ObjectQuery:
    """How a query image's objects are found (detector, crop, threshold, query_categories), how far their
    neighbours are looked for (k, categories, filter, search depth) and, to rank images, by what."""

    detector: str | None = None  # a detector service that finds the objects this service embeds
    crop: Crop | None = None
    confidence_threshold: float = 0.0
    query_categories: tuple[str, ...] | None = None  # query with only the objects of these categories
    k: int = 10
    categories: tuple[str, ...] | None = None  # only stored objects of these categories
    filter: dict[str, Any] | None = None  # image metadata containment
    nprobe: int | None = None
    ef_search: int | None = None
    search_k: int | None = None
    score: Score = "mean"
    limit: int = 10

    def options(self) -> SearchOptions:
        return SearchOptions(
            where=self.filter,
            categories=self.categories,
            nprobe=self.nprobe,
            ef_search=self.ef_search,
            search_k=self.search_k,
        )


@dataclass(frozen=True, slots=True)
class Found:
    hits: list[Hit]
    generation: int | None  # the index generation searched (None: exact search only)


@dataclass(frozen=True, slots=True)
class FoundObjects:
    service: ServiceRecord  # the service whose objects answered
    query: ObjectImage  # the query image with its objects
    hits: list[list[Hit]]  # per query object
    generation: int | None


@dataclass(frozen=True, slots=True)
class RankedImages:
    query: ObjectImage
    images: list[RankedImage]
    generation: int | None


def _one_image(core: Core, image: str | bytes) -> None:
    """A directory names many images: refused (others outside the roots are refused by the input step)."""
    if isinstance(image, str):
        try:
            directory = os.path.isdir(image) and under_roots(image, list(core.intake.roots))
        except (OSError, ValueError):
            directory = False
        if directory:
            raise BadInput("image", f"{image} is a directory; search with one image")


def _as_image_field(exc: BadInput) -> BadInput:
    """The input step names the query `data[0]` (or `data`); a query names it `image`."""
    for given in ("data[0]", "data"):
        if exc.field.startswith(given):
            return BadInput("image" + exc.field[len(given) :], exc.reason)
    return exc


def image_vector(core: Core, service: ServiceRecord, image: str | bytes) -> np.ndarray:
    """The (1, dim) vector of one query image (a path, base64 bytes, a URL or uploaded bytes); no database."""
    _one_image(core, image)
    try:
        predictions, _ = embed(services.extractor_for(service, core.models), [image], core.intake)
    except BadInput as exc:
        raise _as_image_field(exc) from exc
    if len(predictions) != 1:
        raise BadInput("image", ONE_IMAGE)
    return predictions[0].vector[None, :]


def stored_vector(core: Core, service: ServiceRecord, image_id: int) -> np.ndarray:
    """The (1, dim) vector `service` stores for image `image_id`."""
    with core.engine.connect() as conn:
        return store.image_vector(conn, service.id, image_id)[None, :]


def given_vector(values: Sequence[float]) -> np.ndarray:
    """A (1, dim) query vector from a request's numbers (float32: larger ones are refused, not infinite)."""
    vector = np.asarray([values], dtype=np.float64)
    if not (np.abs(vector) <= np.finfo(np.float32).max).all():
        raise BadInput("vector", "values must be finite float32 numbers")
    return vector.astype(np.float32)


def search_image(
    core: Core, service: ServiceRecord, query: np.ndarray, k: int, options: SearchOptions | None = None
) -> Found:
    """The k stored images nearest to one query vector (1, dim)."""
    check_queries(service, query, k)  # before the generation is fetched and loaded
    index = core.indexes.current(service)
    hits = search_vectors(core.engine, service, index, query, k, options)[0]
    return Found(hits=hits, generation=index.build.id if index is not None else None)


def object_plan(core: Core, service: ServiceRecord, query: ObjectQuery, *, search: bool) -> Plan | None:
    """`objects.plan` for a call; crop, confidence_threshold and categories without any object pipeline
    are refused rather than ignored."""
    found = objects.plan(
        core.engine,
        core.models,
        service,
        query.detector,
        crop=query.crop,
        confidence_threshold=query.confidence_threshold,
        categories=query.query_categories,
        search=search,
    )
    if found is None:
        given = (("crop", query.crop), ("confidence_threshold", query.confidence_threshold or None))
        for field, value in (*given, ("categories", query.query_categories)):
            if value is not None:
                raise BadInput(field, "applies to objects only: name a detector service in `detector`")
    return found


def image_objects(core: Core, plan: Plan, image: str | bytes) -> ObjectImage:
    """One query image with the objects found in it (nothing is written)."""
    _one_image(core, image)
    try:
        found = [i for batch, _ in objects.find_objects([image], plan.how, core.intake, batch_size=1) for i in batch]
    except BadInput as exc:
        raise _as_image_field(exc) from exc
    if len(found) != 1:
        raise BadInput("image", ONE_IMAGE)
    return found[0]


def query_objects(core: Core, service: ServiceRecord, image: str | bytes, query: ObjectQuery) -> FoundObjects:
    """Detect the query image's objects and find each one's k nearest stored objects."""
    for key in ("filter", "categories", "query_categories"):
        store.check_storable(getattr(query, key), key)
    plan = object_plan(core, service, query, search=True)
    if plan is None or plan.service is None:  # refused by object_plan already when searching
        raise BadInput("detector", f"{service.name} makes no object vectors to search")
    found = image_objects(core, plan, image)
    index = core.indexes.current(plan.service)
    hits = objects.search_objects(core.engine, plan.service, index, [found], query.k, query.options())[0]
    return FoundObjects(plan.service, found, hits, index.build.id if index is not None else None)


def similar_images(core: Core, service: ServiceRecord, image: str | bytes, query: ObjectQuery) -> RankedImages:
    """The stored images ranked by their objects' hits (sql/functions/rank_images.sql does the ranking)."""
    return rank_found(core, query_objects(core, service, image, query), query)


def rank_found(core: Core, found: FoundObjects, query: ObjectQuery) -> RankedImages:
    """The stored images ranked by the hits `query_objects` found (for a face that also shows those hits)."""
    ranked = objects.rank_images(
        core.engine,
        found.service,
        found.hits,
        score=query.score,
        categories=query.categories,
        where=query.filter,
        limit=query.limit,
    )
    return RankedImages(found.query, ranked, found.generation)
