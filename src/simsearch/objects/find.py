"""Sources -> decode -> detect -> [filter -> crop -> extract]: the objects of each image, nothing written."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from functools import partial
from itertools import islice
from typing import Any

import numpy as np

from simsearch.ingest import binarize, check_items, check_source, read_image
from simsearch.input import Intake, Source, crop_box, iter_sources
from simsearch.models import Detections
from simsearch.objects.types import Detection, FoundObject, ObjectImage


def _kept(found: Detections, how: Detection) -> list[FoundObject]:
    """The boxes above the threshold, of the categories kept, with their box-head vectors when asked."""
    return [
        FoundObject(
            bbox=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
            category=str(found.categories[i]),
            prob=float(found.probs[i]),
            vector=found.features[i] if how.box_vectors and found.features is not None else None,
        )
        for i, box in enumerate(found.boxes)
        if found.probs[i] >= how.confidence_threshold
        and (how.categories is None or found.categories[i] in how.categories)
    ]


def _embedded(image: np.ndarray, objects: list[FoundObject], how: Detection) -> list[FoundObject]:
    """Each object's crop embedded by the extractor; boxes too small to crop are dropped."""
    if how.extractor is None or not objects:
        return objects
    crops = [crop_box(image, o.bbox, how.crop) for o in objects]
    kept = [(o, crop) for o, crop in zip(objects, crops, strict=True) if crop is not None]
    if not kept:
        return []
    vectors = how.extractor.embed([crop for _, crop in kept])
    return [replace(o, vector=v) for (o, _), v in zip(kept, vectors, strict=True)]


def _binarized(objects: list[FoundObject], how: Detection) -> list[FoundObject]:
    if how.binarized_metric is None or not any(o.vector is not None for o in objects):
        return objects
    binary = binarize(np.stack([o.vector for o in objects if o.vector is not None]), how.binarized_metric)
    done = iter(binary)
    return [replace(o, vector=next(done)) if o.vector is not None else o for o in objects]


def find_objects(
    data: Sequence[str | bytes],
    how: Detection,
    intake: Intake,
    *,
    uris: Sequence[str | None] | None = None,
    metadata: Sequence[dict[str, Any]] | None = None,
    batch_size: int | None = None,
) -> Iterator[tuple[list[ObjectImage], list[str]]]:
    """Per batch of images (`batch_size`, else the intake's): the images with their objects, and the
    directory files skipped (not images). The call's inputs and every explicit item are checked before the
    first batch is made."""
    check_items(intake, data, uris, metadata)
    sources: Iterator[Source] = iter_sources(
        data, roots=intake.roots, check=partial(check_source, max_pixels=intake.max_pixels), urls=intake.urls
    )
    while batch := list(islice(sources, batch_size or intake.batch_size)):
        decoded, skipped = [], []
        for source in batch:
            read = read_image(source, max_pixels=intake.max_pixels, uris=uris, metadata=metadata)
            if read is None:
                skipped.append(source.uri)  # a file in a directory that is not an image
            else:
                decoded.append((source, *read))
        found = how.detector.detect([rgb for _, rgb, _ in decoded]) if decoded else []
        images = []
        for (source, rgb, image), detections in zip(decoded, found, strict=True):
            objects = _binarized(_embedded(rgb, _kept(detections, how), how), how)
            images.append(
                ObjectImage(source.position, source.uri, image.uri, source.content is not None, image, objects)
            )
        yield images, skipped
