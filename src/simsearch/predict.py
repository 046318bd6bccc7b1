"""DeepDetect's calls as the core runs them: a predict on an extractor service (whole-image vectors), on a
detector service (its boxes, and with rois each box's own vector), and a chain (detect -> filter -> crop ->
an extractor service embeds each crop). The calls are checked and typed by the face (api/dd_call.py,
api/chain.py); here they run, and the outcomes come back typed: the face only shapes the answer.

Every call reads all its input before it writes, writes in one transaction, and stores new index settings
only once its index and build steps have succeeded (`_build_then_settle`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from simsearch import objects, services, store
from simsearch.core import Core
from simsearch.errors import BadInput
from simsearch.index import build_generation
from simsearch.ingest import Prediction, embed, ingest
from simsearch.input import NO_CROP, Crop
from simsearch.models import Extractor
from simsearch.objects import Detection, ObjectImage
from simsearch.search import SearchOptions, search_vectors
from simsearch.store import Hit, RankedImage, ServiceRecord


@dataclass(frozen=True, slots=True)
class ServiceCall:
    """One service call, checked: a predict, or a service call of a chain."""

    service: ServiceRecord
    data: tuple[str, ...]
    index_uris: tuple[str | None, ...] | None = None  # the uri stored for each data item
    layer: str | None = None  # extract_layer (extractor services)
    index: bool = False
    build: bool = False
    search: bool = False
    k: int = 10  # search_nn
    binarized: bool = False
    depth: SearchOptions = field(default_factory=SearchOptions)  # nprobe, ef_search, search_k of this call
    index_values: dict[str, Any] | None = None  # new index settings, stored once the call has succeeded
    rois: bool = False  # detector services: each box's own vector (Faster R-CNN box head)
    multibox: bool = False  # rank whole images by their objects' hits
    confidence_threshold: float = 0.0

    @property
    def answering(self) -> ServiceRecord:
        """The service as this call uses it (with the index settings it brings)."""
        return _with_index_values(self.service, self.index_values)


def _with_index_values(service: ServiceRecord, values: dict[str, Any] | None) -> ServiceRecord:
    return service if values is None else replace(service, index_settings=values)


@dataclass(frozen=True, slots=True)
class ChainCall:
    """A detector service call, the filter and crop actions, and the extractor service call (if any)."""

    detector: ServiceCall  # data, index_uris, confidence_threshold
    crop: Crop = NO_CROP
    categories: tuple[str, ...] | None = None  # the filter action's whitelist
    child: ServiceCall | None = None  # index, build, search, multibox of the crops' vectors


@dataclass(frozen=True, slots=True)
class ImageOutcome:
    predictions: list[Prediction]  # one per image, in data order
    hits: list[list[Hit]] | None  # per prediction, when searched
    indexed: bool
    skipped: int  # directory files that are not images


@dataclass(frozen=True, slots=True)
class ObjectOutcome:
    images: list[ObjectImage]  # with their objects (and each object's vector)
    hits: list[list[list[Hit]]]  # per image, per object (empty lists when not searched)
    ranked: list[list[RankedImage]] | None  # per image, with multibox
    stored: frozenset[str]  # stored uris of the images indexed
    skipped: int


def _build_then_settle(core: Core, service: ServiceRecord, build: bool, index_values: dict[str, Any] | None) -> None:
    """Build when asked, then store the call's new index settings: reached only when index and build succeeded."""
    if build:
        build_generation(core.engine, service, core.index_dir, artefacts=core.artefacts)
        core.indexes.invalidate(service.id)  # this call's own search sees the new generation
    if index_values is not None:
        with core.engine.begin() as conn:
            store.update_service(conn, service.id, index_settings=index_values)


def run_image_call(core: Core, call: ServiceCall) -> ImageOutcome:
    """An extractor service: each image's vector; index, build_index and search as the call asks."""
    check_call(call)
    # Nothing is written before the input is read: the layer and new index settings are stored after.
    service, extractor = extractor_service(core, call)
    predictions: list[Prediction] = []
    skipped = 0
    if call.data and call.index:  # (a new extract_layer is recorded with the first vectors)
        report = ingest(
            core.engine,
            service,
            extractor,
            call.data,
            core.intake,
            atomic=True,
            uris=call.index_uris,
            keep_vectors=True,
            binarized=call.binarized,
        )
        predictions, skipped = report.predictions, report.skipped
    elif call.data:
        metric = service.metric if call.binarized else None
        predictions, passed = embed(extractor, call.data, core.intake, uris=call.index_uris, binarized_metric=metric)
        skipped = len(passed)
    _build_then_settle(core, service, call.build, call.index_values)
    hits = None
    if call.search and predictions:
        index = core.indexes.current(service)
        vectors = np.stack([p.vector for p in predictions])
        hits = search_vectors(core.engine, service, index, vectors, call.k, call.depth)
    return ImageOutcome(predictions, hits, call.index, skipped)


def _detect(
    core: Core, how: Detection, call: ServiceCall, *, detector: ServiceRecord, service: ServiceRecord | None
) -> tuple[list[ObjectImage], int, frozenset[str]]:
    """The call's images with their objects, the directory files skipped, and the stored uris of the images
    stored (call.index: each image's boxes as `detector`'s, their vectors in `service`)."""
    if not call.data:
        return [], 0, frozenset()
    if call.index:  # one transaction: every explicit item is checked before the first write
        report = objects.index_objects(
            core.engine, detector, service, call.data, how, core.intake, atomic=True, uris=call.index_uris
        )
        return report.images, len(report.skipped), frozenset(report.image_ids)
    images: list[ObjectImage] = []
    skipped = 0
    for batch, passed in objects.find_objects(call.data, how, core.intake, uris=call.index_uris):
        images.extend(batch)
        skipped += len(passed)
    return images, skipped, frozenset()


def _searched(
    core: Core, service: ServiceRecord, images: list[ObjectImage], call: ServiceCall
) -> tuple[list[list[list[Hit]]], list[list[RankedImage]] | None]:
    """Each object's k nearest stored objects of `service` (when the call searches), and with multibox the
    images ranked by each query image's hits."""
    if not call.search:
        return [[[] for _ in image.objects] for image in images], None
    index = core.indexes.current(service)
    hits = objects.search_objects(core.engine, service, index, images, call.k, call.depth)
    if not call.multibox:
        return hits, None
    return hits, [_ranked(core, service, found) for found in hits]


def _ranked(core: Core, service: ServiceRecord, hits: Sequence[Sequence[Hit]]) -> list[RankedImage]:
    """multibox: every image hit by the query objects' hits (each object's k nearest, so up to objects x k
    images, as DeepDetect returns them), ranked by the mean distance of its hits."""
    every = max(1, sum(len(h) for h in hits))
    return objects.rank_images(core.engine, service, hits, score="mean", limit=every)


def run_object_call(core: Core, call: ServiceCall) -> ObjectOutcome:
    """A detector service: its boxes, stored with index; with rois each box's own vector, indexed, built and
    searched in the detector service itself."""
    check_call(call)
    service = call.answering
    how = Detection(
        services.detector_for(service, core.models),
        box_vectors=call.rois,
        confidence_threshold=call.confidence_threshold,
        binarized_metric=service.metric if call.binarized and call.rois else None,
    )
    images, skipped, stored = _detect(core, how, call, detector=service, service=service if call.rois else None)
    _build_then_settle(core, service, call.build, call.index_values)
    hits, ranked = _searched(core, service, images, replace(call, search=call.search and call.rois))
    return ObjectOutcome(images, hits, ranked, stored, skipped)


def extractor_service(core: Core, call: ServiceCall) -> tuple[ServiceRecord, Extractor]:
    """An extractor service as its call uses it (layer, new index settings), and its model at the call's
    extract_layer (loaded first: an unknown layer is refused before anything is read or written)."""
    found, extractor = services.extractor_at(
        core.engine, core.models, call.service, call.layer, stored=call.index or call.search
    )
    return _with_index_values(found, call.index_values), extractor


def run_chain(core: Core, chain: ChainCall) -> ObjectOutcome:
    """Detect -> filter -> crop -> the extractor service embeds each crop -> store / search / rank, as ONE
    object call: the boxes are stored as the detector's ROIs and the vectors in the extractor service."""
    child = chain.child
    service, extractor = extractor_service(core, child) if child is not None else (None, None)
    how = Detection(
        services.detector_for(chain.detector.service, core.models),
        extractor=extractor,
        confidence_threshold=chain.detector.confidence_threshold,
        categories=chain.categories,
        crop=chain.crop,
        binarized_metric=service.metric if service is not None and child is not None and child.binarized else None,
    )
    detect = replace(chain.detector, index=child is not None and child.index)
    images, skipped, stored = _detect(core, how, detect, detector=chain.detector.service, service=service)
    if child is None or service is None:
        return ObjectOutcome(images, [[[] for _ in i.objects] for i in images], None, stored, skipped)
    _build_then_settle(core, service, child.build, child.index_values)
    hits, ranked = _searched(core, service, images, child)
    return ObjectOutcome(images, hits, ranked, stored, skipped)


def refuse_object_flags(rois: bool, multibox: bool, what: str) -> None:
    """rois and multibox_rois need a detector service: refused for an extractor (`what` says which)."""
    if rois or multibox:
        raise BadInput(
            "rois" if rois else "multibox_rois",
            f"object search needs a detector service, and {what}: create one with a detection template "
            "(e.g. fasterrcnn_mobilenet_v3_large_fpn) for rois, or run a /chain of a detector, a crop and this service",
        )


def _check_detector_call(call: ServiceCall) -> None:
    """What a predict on a detector service can do: boxes, stored with index; with rois (a detector that
    makes box vectors), each box's vector indexed, built and searched in the detector service itself."""
    service = call.service
    if call.layer is not None and call.layer != service.layer:
        raise BadInput(
            "extract_layer",
            f"{call.layer!r}: {service.name} is a detector service"
            + (f"; its box vectors come from {service.layer!r}" if service.dim else " and makes no vectors"),
        )
    if call.rois and service.dim == 0:
        raise BadInput(
            "rois",
            f"{service.name} ({service.model}) makes no vector per box: use a Faster R-CNN template "
            "(e.g. fasterrcnn_mobilenet_v3_large_fpn) for rois, or a /chain of this detector, a crop and an "
            "extractor service (e.g. resnet50 or dlib:face_descriptor)",
        )
    if call.rois:
        return
    if call.search:
        raise BadInput(
            "search",
            f'{service.name} is a detector service: search its objects with "rois" (Faster R-CNN templates) '
            "or through a /chain with an extractor service",
        )
    if call.multibox:
        raise BadInput("multibox_rois", "ranks images by their objects' hits: it needs rois and search")
    if call.build and service.dim == 0:
        raise BadInput(
            "build_index",
            f"{service.name} ({service.model}) stores boxes, no vectors: there is no index to build; "
            "build the extractor service of your /chain instead",
        )


def check_call(call: ServiceCall) -> None:
    """What a predict may ask of its service's kind; run before anything is read (and by run_*_call)."""
    if call.service.kind == "detector":
        _check_detector_call(call)
    else:
        service = call.service
        refuse_object_flags(call.rois, call.multibox, f"{service.name} is an extractor service ({service.model})")
