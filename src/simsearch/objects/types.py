"""What the object pipeline passes along: the boxes found in an image, how to find and embed them, and
what indexing reported."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from simsearch.input import NO_CROP, Crop
from simsearch.models import Detector, Extractor
from simsearch.store import NewImage, ServiceRecord


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
    crop: Crop = NO_CROP
    binarized_metric: str | None = None  # binarize the vectors for this metric


@dataclass(slots=True)
class ObjectReport:
    images: list[ObjectImage] = field(default_factory=list)  # with keep_images=True
    with_objects: int = 0  # images in which something was found
    without_objects: int = 0
    skipped: list[str] = field(default_factory=list)
    image_ids: dict[str, int] = field(default_factory=dict)  # stored uri -> image id (images with objects)
    objects_stored: int = 0


@dataclass(frozen=True, slots=True)
class Plan:
    """Which service finds the boxes, which one stores their vectors (None: the boxes only), and how."""

    detector: ServiceRecord
    service: ServiceRecord | None
    how: Detection
