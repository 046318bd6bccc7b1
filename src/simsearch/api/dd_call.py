"""One DeepDetect service call: `parameters` checked against its service into the core's `ServiceCall`
(simsearch.predict runs it), for /predict (deepdetect.py) and each service call of a /chain (chain.py)."""

from __future__ import annotations

from dataclasses import dataclass

from simsearch.api.dd_wire import Json, input_size, sections, take
from simsearch.core import Core
from simsearch.errors import BadInput
from simsearch.index import INDEX_KEYS, check_settings, faiss_index, index_settings, stored_settings
from simsearch.predict import ServiceCall
from simsearch.search import SearchOptions
from simsearch.store import ServiceRecord

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


@dataclass(frozen=True, slots=True)
class Parsed:
    """A service call as the core runs it, and what only the answer needs."""

    call: ServiceCall
    bbox: bool = False  # each class with its box (detector predicts)
    warnings: tuple[str, ...] = ()


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


def parse_call(core: Core, service: ServiceRecord, body: Json, data: list[str], index_uris: list[str] | None) -> Parsed:
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
    index, build, search = _flag(output, "index"), _flag(output, "build_index"), _flag(output, "search")
    # `best` (categories kept per box) is checked and needs nothing more: every simsearch detector gives
    # each box exactly one category, so any best >= 1 answers the same
    settings = index_settings(
        {k: output[k] for k in INDEX_KEYS if k in output}, base=stored_settings(service.index_settings)
    )
    per_search = ("nprobe", "ef_search", "search_k")  # apply to this call only (DeepDetect made nprobe sticky)
    changes = {k: output[k] for k in INDEX_KEYS if k in given and k not in per_search}
    values = _index_values(service, changes) if (index or build) and changes and service.dim > 0 else None
    warnings = gpu_warnings(settings.gpu) + ([RANDOM_WEIGHTS] if service.weights == "none" else [])
    if not data and not (build and not index and not search):
        raise BadInput("data", "missing data: give at least one file, directory or base64 image")
    core.intake.check_count(data)
    call = ServiceCall(
        service=service,
        data=tuple(data),
        index_uris=tuple(index_uris) if index_uris is not None else None,
        layer=mllib.get("extract_layer"),
        index=index,
        build=build,
        search=search,
        k=min(take(output, "search_nn", int, "parameters.output", 10), 10_000),
        binarized=_flag(output, "binarized"),
        depth=SearchOptions(nprobe=settings.nprobe, ef_search=settings.ef_search, search_k=settings.search_k),
        index_values=values,  # (a box-only detector has no index)
        rois=output.get("rois") is not None,
        multibox=wants_multibox(output),
        confidence_threshold=float(output.get("confidence_threshold", 0.0)),
    )
    return Parsed(call, bbox=_flag(output, "bbox"), warnings=tuple(warnings))


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
