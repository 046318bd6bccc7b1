"""Object search: sources -> decode -> detect -> [crop -> extract] -> store boxes and vectors; search per
object; rank whole images by their objects (in SQL, sql/functions/rank_images.sql).

A detector service finds the boxes. Their vectors come either from the detector itself (the box-head
feature of the Faster R-CNN family: DeepDetect's `rois`) or from an extractor service applied to each
crop (DeepDetect's chain: detect -> crop -> extract). Each box is stored once, as the detector's ROI;
each service that embeds it stores an embedding pointing at it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine

from simsearch import services, store
from simsearch.errors import BadInput
from simsearch.index import LoadedIndex
from simsearch.ingest import binarize, check_source, read_image
from simsearch.input import Source, UrlPolicy, crop_box, iter_sources
from simsearch.models import Detections, Detector, Extractor
from simsearch.search import SearchOptions, search_vectors
from simsearch.store import Hit, NewImage, NewObject, RankedImage, ServiceRecord


@dataclass(frozen=True, slots=True)
class CropOptions:
    """DeepDetect's `crop` action: how each box is cut out before an extractor sees it."""

    padding_ratio: float = 0.0
    fixed_width: int = 0
    fixed_height: int = 0
    min_width: int = 0
    min_height: int = 0
    force_square: bool = False


@dataclass(frozen=True, slots=True)
class FoundObject:
    bbox: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax in source pixels, ymin = top
    category: str
    prob: float
    vector: np.ndarray | None = None


@dataclass(slots=True)
class ObjectImage:
    """One image of the call, in `data` order, with the objects found in it."""

    position: int
    source_uri: str
    stored_uri: str
    from_bytes: bool
    image: NewImage
    objects: list[FoundObject]


@dataclass(frozen=True, slots=True)
class Detection:
    """What to find and how to embed it."""

    detector: Detector
    extractor: Extractor | None = None  # embeds each crop; None: the detector's own box vectors, if asked
    box_vectors: bool = False  # use the detector's box-head vectors (rois)
    confidence_threshold: float = 0.0
    categories: tuple[str, ...] | None = None  # keep only boxes of these categories (the `filter` action)
    crop: CropOptions = field(default_factory=CropOptions)
    binarized_metric: str | None = None  # binarize the vectors for this metric


@dataclass(slots=True)
class ObjectReport:
    images: list[ObjectImage] = field(default_factory=list)  # with keep_images=True
    with_objects: int = 0  # images in which something was found
    without_objects: int = 0
    skipped: list[str] = field(default_factory=list)
    image_ids: dict[str, int] = field(default_factory=dict)  # stored uri -> image id (images with objects)
    objects_stored: int = 0


def _box(values: Sequence[float]) -> tuple[float, float, float, float]:
    return (float(values[0]), float(values[1]), float(values[2]), float(values[3]))


def _objects_of(image: np.ndarray, found: Detections, how: Detection) -> list[FoundObject]:
    keep = [
        i
        for i in range(len(found.probs))
        if found.probs[i] >= how.confidence_threshold
        and (how.categories is None or found.categories[i] in how.categories)
    ]
    objects = [
        FoundObject(
            bbox=(
                float(found.boxes[i][0]),
                float(found.boxes[i][1]),
                float(found.boxes[i][2]),
                float(found.boxes[i][3]),
            ),
            category=str(found.categories[i]),
            prob=float(found.probs[i]),
            vector=found.features[i] if how.box_vectors and found.features is not None else None,
        )
        for i in keep
    ]
    if how.extractor is None or not objects:
        return objects
    c = how.crop
    crops = [
        crop_box(
            image,
            o.bbox,
            padding_ratio=c.padding_ratio,
            fixed_width=c.fixed_width,
            fixed_height=c.fixed_height,
            min_width=c.min_width,
            min_height=c.min_height,
            force_square=c.force_square,
        )
        for o in objects
    ]
    kept = [(o, crop) for o, crop in zip(objects, crops, strict=True) if crop is not None]  # too small: dropped
    if not kept:
        return []
    vectors = how.extractor.embed([crop for _, crop in kept])
    return [replace(o, vector=v) for (o, _), v in zip(kept, vectors, strict=True)]


def _finish(objects: list[FoundObject], how: Detection) -> list[FoundObject]:
    if how.binarized_metric is None:
        return objects
    with_vectors = [o for o in objects if o.vector is not None]
    if not with_vectors:
        return objects
    binary = binarize(np.stack([o.vector for o in with_vectors if o.vector is not None]), how.binarized_metric)
    done = iter(binary)
    return [replace(o, vector=next(done)) if o.vector is not None else o for o in objects]


def find_objects(
    data: Sequence[str | bytes],
    how: Detection,
    *,
    roots: Sequence[Path],
    max_pixels: int,
    batch_size: int = 8,
    uris: Sequence[str | None] | None = None,
    metadata: Sequence[dict[str, Any]] | None = None,
    urls: UrlPolicy | None = None,
) -> Iterator[tuple[list[ObjectImage], list[str]]]:
    """Per batch of images: the images with their objects, and the directory files skipped (not images).

    Every explicit item is checked before the first batch is made.
    """
    if uris is not None and len(uris) != len(data):
        raise BadInput("index_uris", f"must have one entry per data item ({len(data)}), got {len(uris)}")
    sources: Iterator[Source] = iter_sources(
        data, roots=roots, check=partial(check_source, max_pixels=max_pixels), urls=urls
    )
    while batch := list(islice(sources, batch_size)):
        decoded, skipped = [], []
        for source in batch:
            read = read_image(source, max_pixels=max_pixels, uris=uris, metadata=metadata)
            if read is None:
                skipped.append(source.uri)  # a file in a directory that is not an image
            else:
                decoded.append((source, *read))
        found = how.detector.detect([rgb for _, rgb, _ in decoded]) if decoded else []
        images = []
        for (source, rgb, image), detections in zip(decoded, found, strict=True):
            objects = _finish(_objects_of(rgb, detections, how), how)
            images.append(
                ObjectImage(source.position, source.uri, image.uri, source.content is not None, image, objects)
            )
        yield images, skipped


def _write(
    conn: Connection, detector: ServiceRecord, service: ServiceRecord | None, images: list[ObjectImage]
) -> tuple[dict[str, int], int]:
    with_objects = [i for i in images if i.objects]
    if service is not None:
        store.join_writers(conn, service.id)  # before any row lock: a build's snapshot then waits for it alone
    if service is not None and any(o.vector is not None for i in with_objects for o in i.objects):
        store.record_layer(conn, service.id, service.layer, service.dim)
    ids = store.upsert_images(conn, [i.image for i in with_objects])
    # an image found empty now loses the boxes and vectors an earlier run stored for it
    gone = store.image_ids(conn, [i.stored_uri for i in images if not i.objects])
    rows = [
        NewObject(ids[i.stored_uri], o.bbox, o.prob, o.category, o.vector if service is not None else None)
        for i in with_objects
        for o in i.objects
    ]
    store.replace_objects(
        conn,
        detector_id=detector.id,
        service_id=service.id if service is not None else None,
        image_ids=[*ids.values(), *gone],
        objects=rows,
    )
    return ids, len(rows)


def index_objects(
    engine: Engine,
    detector: ServiceRecord,
    service: ServiceRecord | None,
    data: Sequence[str | bytes],
    how: Detection,
    *,
    roots: Sequence[Path],
    max_pixels: int,
    batch_size: int = 8,
    atomic: bool = False,
    uris: Sequence[str | None] | None = None,
    metadata: Sequence[dict[str, Any]] | None = None,
    urls: UrlPolicy | None = None,
    write: bool = True,
    keep_images: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> ObjectReport:
    """Detect the objects in `data` and store them: the boxes as `detector`'s ROIs and, when `service`
    is given, each box's vector in `service` (the detector's own for rois, an extractor's for a chain).

    An image and its boxes and vectors commit together; `atomic=True` writes the whole call in one
    transaction (an API request), otherwise each batch commits (a large folder). An image in which
    nothing is found stores nothing (and loses what an earlier run stored). `write=False` only detects;
    `keep_images=False` returns counts only (a large folder: memory stays bounded).
    """
    for i, entry in enumerate(metadata or []):
        store.check_storable(entry, f"metadata[{i}]")
    for i, uri in enumerate(uris or []):
        store.check_storable(uri, f"index_uris[{i}]")
    report = ObjectReport()
    batches = find_objects(
        data, how, roots=roots, max_pixels=max_pixels, batch_size=batch_size, uris=uris, metadata=metadata, urls=urls
    )
    with engine.connect() as conn:
        transaction = conn.begin()
        try:
            for images, skipped in batches:
                if write:
                    ids, count = _write(conn, detector, service, images)
                    report.image_ids.update(ids)
                    report.objects_stored += count
                    if not atomic:
                        transaction.commit()
                        transaction = conn.begin()
                if keep_images:
                    report.images.extend(images)
                found = sum(1 for i in images if i.objects)
                report.with_objects += found
                report.without_objects += len(images) - found
                report.skipped.extend(skipped)
                if on_batch is not None:
                    on_batch(len(images) + len(skipped))
            transaction.commit()
        except BaseException:
            transaction.rollback()
            raise
    return report


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
    score: str = "mean",
    categories: Sequence[str] | None = None,
    where: dict[str, Any] | None = None,
    limit: int = 10,
) -> list[RankedImage]:
    """Images ranked by the hits of a query's objects (object_hits[q]: the hits of query object q)."""
    if score not in store.SCORES:
        raise BadInput("score", f"{score!r}: choose one of {', '.join(store.SCORES)}")
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


@dataclass(frozen=True, slots=True)
class Plan:
    """Which service finds the boxes, which one stores their vectors (None: the boxes only), and how."""

    detector: ServiceRecord
    service: ServiceRecord | None
    how: Detection


def plan(
    engine: Engine,
    service: ServiceRecord,
    detector: str | None,
    *,
    crop: CropOptions | None = None,
    confidence_threshold: float = 0.0,
    categories: Sequence[str] | None = None,
    search: bool = False,
) -> Plan | None:
    """The object pipeline a call asks for, the same for the native API and the CLI; None for whole images.

    With `detector` (a detector service's name), it finds the boxes and `service` (an extractor) embeds each
    crop. Without it, `service` must be a detector: its own box vectors are stored and searched (a detector
    that makes none stores the boxes only, and cannot be searched). Refusals name the field `detector`.
    """
    kept = tuple(categories) if categories is not None else None
    if detector is not None:
        try:
            name = services.check_name(detector)
        except BadInput as exc:
            raise BadInput("detector", exc.reason) from None
        with engine.connect() as conn:
            found = store.find_service(conn, name)
        if found is None or found.detached_at is not None:
            raise BadInput("detector", f"no service {name!r}; create a detector service first")
        if found.kind != "detector":
            raise BadInput("detector", f"{found.name} is an extractor service ({found.model}): it finds no objects")
        if service.kind == "detector":
            raise BadInput(
                "detector",
                f"{service.name} is a detector itself: leave the detector out to use its own box vectors, "
                "or name an extractor service to embed the crops",
            )
        how = Detection(
            detector=services.detector_for(found),
            extractor=services.extractor_for(service),
            confidence_threshold=confidence_threshold,
            categories=kept,
            crop=crop or CropOptions(),
        )
        return Plan(found, service, how)
    if service.kind != "detector":
        if search:
            raise BadInput("detector", f"{service.name} is an extractor: name the detector service that finds objects")
        return None
    if service.dim == 0 and search:
        raise BadInput(
            "detector",
            f"{service.name} ({service.model}) finds objects but makes no vectors of them: search an extractor "
            f"service and name {service.name} as its detector",
        )
    how = Detection(
        detector=services.detector_for(service),
        box_vectors=service.dim > 0,
        confidence_threshold=confidence_threshold,
        categories=kept,
    )
    return Plan(service, service if service.dim > 0 else None, how)
