"""One DeepDetect service call: `parameters` checked against its service into a `PredictCall`, and the
steps that /predict (deepdetect.py) and /chain (chain.py) both run with it (detect and store objects,
build, save the new index settings, search, rank)."""

from __future__ import annotations

from dataclasses import dataclass, field

from simsearch import objects, store
from simsearch.api.context import Core
from simsearch.api.dd_wire import Json, input_size, sections, take
from simsearch.errors import BadInput
from simsearch.index import INDEX_KEYS, build_generation, check_settings, faiss_index, index_settings, stored_settings
from simsearch.objects import Detection, ObjectImage
from simsearch.search import SearchOptions
from simsearch.store import Hit, RankedImage, ServiceRecord

RANDOM_WEIGHTS = "weights: none: random initialisation, the vectors mean nothing (for tests only)"
_Kinds = type | tuple[type, ...]
_PREDICT_MLLIB_TYPES: dict[str, _Kinds] = {"gpu": bool, "gpuid": (int, list), "extract_layer": str}
# JSON types of every output key, checked at creation too: a default of the wrong type is refused when it
# is given (400/400), not on every later predict; a right type with a bad value is left to 1006.
_OUTPUT_TYPES: dict[str, _Kinds] = {
    "index": bool,
    "build_index": bool,
    "search": bool,
    "search_nn": int,
    "binarized": bool,
    "confidence_threshold": float,
    "best": int,
    "bbox": bool,
    "multibox_rois": bool,
    "multibox_roi": bool,
    "rois": str,  # DeepDetect passes "rois" (the name of its ROI layer): any string turns object vectors on
    "metric": str,
    "index_backend": str,
    "index_type": str,
    "train_samples": int,
    "nprobe": int,
    "ef_search": int,
    "ondisk": bool,
    "index_gpu": bool,
    "index_gpuid": int,
    "n_trees": int,
    "search_k": int,
}


@dataclass(slots=True)
class PredictCall:
    """One service call, checked: a predict, or a service call of a chain."""

    service: ServiceRecord
    data: list[str]
    index_uris: list[str] | None
    layer: str | None
    index: bool = False
    build: bool = False
    search: bool = False
    k: int = 10
    binarized: bool = False
    nprobe: int | None = None
    ef_search: int | None = None
    search_k: int | None = None
    index_values: Json | None = None  # new index settings of an index/build call, stored once it succeeded
    warnings: list[str] = field(default_factory=list)
    # detector services
    rois: bool = False  # each box's own vector (Faster R-CNN box head)
    multibox: bool = False  # rank whole images by their objects
    bbox: bool = False
    confidence_threshold: float = 0.0


def _flag(output: Json, key: str) -> bool:
    return bool(take(output, key, bool, "parameters.output", False))


def check_output(output: Json) -> None:
    """`parameters.output` of a creation or a predict: JSON types, then the values this face decides."""
    for key, kinds in _OUTPUT_TYPES.items():
        take(output, key, kinds, "parameters.output")
    k = output.get("search_nn")
    if k is not None and k < 1:
        raise BadInput("parameters.output.search_nn", f"must be at least 1, got {k}")
    threshold = output.get("confidence_threshold")
    if threshold is not None and not 0.0 <= threshold <= 1.0:  # NaN fails too
        raise BadInput("parameters.output.confidence_threshold", f"must be between 0 and 1, got {threshold}")
    best = output.get("best")
    if best is not None and best < 1:
        raise BadInput("parameters.output.best", f"must be at least 1, got {best}")


def wants_multibox(output: Json) -> bool:
    """`multibox_rois`, or `multibox_roi` as DeepDetect's tutorial spells it."""
    return bool(output.get("multibox_rois") or output.get("multibox_roi"))


def parse_call(
    core: Core, service: ServiceRecord, body: Json, data: list[str], index_uris: list[str] | None
) -> PredictCall:
    """A call's `parameters` checked against its service (the service's creation defaults under the call's
    own output flags); `data` and `index_uris` are the call's (a chain's extractor call: the detector's)."""
    inp, mllib, given = sections(body)
    output = service.params.get("deepdetect", {}).get("parameters", {}).get("output", {}) | given
    size = input_size(inp)
    created = (service.input_size, service.input_height or service.input_size)
    if size is not None and size != created:
        which = "width" if size[0] != created[0] else "height"
        raise BadInput(
            f"parameters.input.{which}",
            f"{size[0]}x{size[1]}: {service.name} was created for {service.input_shape} images (width x height)",
        )
    for key, kinds in _PREDICT_MLLIB_TYPES.items():
        take(mllib, key, kinds, "parameters.mllib")
    check_output(output)
    if given.get("metric", service.metric) != service.metric:
        # the metric shapes the vectors themselves (cosine ones are normalised): silently ignoring it would lie
        raise BadInput(
            "parameters.output.metric", f"{given['metric']!r}: {service.name} uses {service.metric!r}, set at creation"
        )
    request = PredictCall(service=service, data=data, index_uris=index_uris, layer=mllib.get("extract_layer"))
    request.index, request.build, request.search = (
        _flag(output, "index"),
        _flag(output, "build_index"),
        _flag(output, "search"),
    )
    request.binarized = _flag(output, "binarized")
    request.k = min(take(output, "search_nn", int, "parameters.output", 10), 10_000)
    request.rois, request.multibox, request.bbox = (
        output.get("rois") is not None,
        wants_multibox(output),
        _flag(output, "bbox"),
    )
    request.confidence_threshold = float(output.get("confidence_threshold", 0.0))
    # `best` (categories kept per box) is checked and needs nothing more: every simsearch detector gives
    # each box exactly one category, so any best >= 1 answers the same
    settings = index_settings(
        {k: output[k] for k in INDEX_KEYS if k in output}, base=stored_settings(service.index_settings)
    )
    request.nprobe, request.ef_search, request.search_k = settings.nprobe, settings.ef_search, settings.search_k
    per_search = ("nprobe", "ef_search", "search_k")  # apply to this call only (DeepDetect made nprobe sticky)
    changes = {k: output[k] for k in INDEX_KEYS if k in given and k not in per_search}
    if (request.index or request.build) and changes and service.dim > 0:  # a box-only detector has no index
        request.index_values = _index_values(service, changes)
    request.warnings += gpu_warnings(settings.gpu)
    if service.weights == "none":
        request.warnings.append(RANDOM_WEIGHTS)
    if not data and not (request.build and not request.index and not request.search):
        raise BadInput("data", "missing data: give at least one file, directory or base64 image")
    if data and len(data) > core.settings.max_items:
        raise BadInput("data", f"{len(data)} items; at most {core.settings.max_items} per call (SIMSEARCH_MAX_ITEMS)")
    return request


def _index_values(service: ServiceRecord, changes: Json) -> Json:
    """Index keys on an index/build call, checked now; they become the service's settings (as on
    DeepDetect's first `index`) only when the call succeeds."""
    merged = index_settings(changes, base=stored_settings(service.index_settings))
    check_settings(merged, service.dim, service.metric)
    return service.index_settings | merged.to_dict()


def gpu_warnings(gpu: bool) -> list[str]:
    """DeepDetect's clients send index_gpu whatever the machine: run on the CPU then, and say so."""
    if gpu and faiss_index.gpu_count() == 0:
        # no "; " inside a warning: it is the separator between warnings in head.warning
        return ["index_gpu: faiss sees no GPU here (faiss-cpu or no device), so the index runs on the CPU"]
    return []


def set_index_settings(core: Core, service_id: int, values: Json) -> None:
    with core.engine.begin() as conn:
        store.update_service(conn, service_id, index_settings=values)


def build_index(core: Core, service: ServiceRecord) -> None:
    build_generation(core.engine, service, core.settings.index_dir)
    core.indexes.invalidate(service.id)  # this call's own search sees the new generation


def detect_objects(
    core: Core,
    how: Detection,
    call: PredictCall,
    *,
    detector: ServiceRecord,
    service: ServiceRecord | None,
) -> tuple[list[ObjectImage], int, set[str]]:
    """The call's images with their objects, the number of directory files skipped, and the stored uris
    of the images stored (call.index: each image's boxes as `detector`'s, their vectors in `service`)."""
    if not call.data:
        return [], 0, set()
    roots, max_pixels, batch_size = core.roots, core.settings.max_pixels, core.settings.batch_size
    if call.index:  # one transaction: every explicit item is checked before the first write
        report = objects.index_objects(
            core.engine,
            detector,
            service,
            call.data,
            how,
            roots=roots,
            max_pixels=max_pixels,
            batch_size=batch_size,
            atomic=True,
            uris=call.index_uris,
            urls=core.urls,
        )
        return report.images, len(report.skipped), set(report.image_ids)
    images: list[ObjectImage] = []
    skipped = 0
    found = objects.find_objects(
        call.data, how, roots=roots, max_pixels=max_pixels, batch_size=batch_size, uris=call.index_uris, urls=core.urls
    )
    for batch, passed in found:
        images.extend(batch)
        skipped += len(passed)
    return images, skipped, set()


def search_objects(
    core: Core, service: ServiceRecord, images: list[ObjectImage], call: PredictCall
) -> list[list[list[Hit]]]:
    """For each image, for each of its objects: its `call.k` nearest stored objects of `service`."""
    options = SearchOptions(nprobe=call.nprobe, ef_search=call.ef_search, search_k=call.search_k)
    return objects.search_objects(core.engine, service, core.indexes.current(service), images, call.k, options)


def ranked_nns(core: Core, service: ServiceRecord, hits: list[list[Hit]]) -> list[Json]:
    """multibox_rois: every image hit by the query objects' hits (each object's search_nn nearest, so up to
    objects x search_nn images, as DeepDetect returns them), ranked by the mean distance of its hits."""
    every = max(1, sum(len(h) for h in hits))
    ranked: list[RankedImage] = objects.rank_images(core.engine, service, hits, score="mean", limit=every)
    return [{"uri": r.uri, "dist": r.score} | ({"metadata": r.metadata} if r.metadata else {}) for r in ranked]
