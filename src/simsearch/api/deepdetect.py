"""DeepDetect's simsearch API (/info, /services/{name}, /predict, /chain/{name}): translation only.

Requests are parsed by hand so that each wrong key gets DeepDetect's own error code; the work is done
by `services`, `ingest`, `objects`, `index` and `search`, the same functions as the native face and the
CLI. Chains (/chain/{name}) are parsed and run in `chain.py`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from anyio import to_thread
from litestar import Request, Response, delete, get, post, route
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery
from litestar.status_codes import HTTP_200_OK

from simsearch import __version__, objects, services, store
from simsearch.api.app import Core, authorize, core_of, read_guard
from simsearch.api.errors import DDError, wrong_json
from simsearch.errors import BadInput, NotFound
from simsearch.index import INDEX_KEYS, build_generation, check_settings, faiss_index, index_settings, stored_settings
from simsearch.ingest import ingest
from simsearch.input import under_roots
from simsearch.models import is_detector
from simsearch.objects import Detection, ObjectImage
from simsearch.search import SearchOptions, search_vectors
from simsearch.store import Hit, RankedImage, ServiceRecord

_OTHER_LIBS = ("caffe", "caffe2", "tf", "tensorflow", "tensorrt", "ncnn", "xgboost", "dlib", "tsne")
_RANDOM_WEIGHTS = "weights: none: random initialisation, the vectors mean nothing (for tests only)"
Json = dict[str, Any]
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


def _json_body(raw: bytes) -> Json:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise DDError(400, None, None) from exc
    if not isinstance(body, dict):
        raise wrong_json("body", "must be a JSON object")
    if (where := _lone_surrogate(body)) is not None:
        raise wrong_json(where, "contains a lone surrogate (an escape \\ud800-\\udfff that is no character)")
    return body


def _is_unicode(text: str) -> bool:
    try:
        text.encode()  # fails on a lone surrogate: JSON's \ud800 escape decodes to one
    except UnicodeEncodeError:
        return False
    return True


def _lone_surrogate(body: Json) -> str | None:
    """The path of the first string (or key) holding a lone surrogate, which no store or file name takes.
    A loop, not recursion: a body nested as deep as json.loads allows is walked too."""
    stack: list[tuple[str, Any]] = [("", body)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str) and not _is_unicode(value):
            return path or "body"
        if isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in reversed(list(enumerate(value))))
        elif isinstance(value, dict):
            for key in value:
                if not _is_unicode(key):
                    return f"{path or 'body'} (a key)"
            stack.extend((f"{path}.{k}" if path else k, v) for k, v in reversed(list(value.items())))
    return None


def take(obj: Json, key: str, kind: type | tuple[type, ...], path: str, default: Any = None) -> Any:  # noqa: ANN401
    """obj[key] checked against a JSON type (400/400 naming the field when it is of the wrong type)."""
    if key not in obj or obj[key] is None:
        return default
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        ok = False
    else:
        ok = isinstance(value, kinds) or (float in kinds and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        names = " or ".join(
            {
                bool: "a boolean",
                int: "an integer",
                float: "a number",
                str: "a string",
                list: "an array",
                dict: "an object",
            }[k]
            for k in kinds
        )
        raise wrong_json(f"{path}.{key}" if path else key, f"must be {names}, got {json.dumps(value)[:80]}")
    return value


def take_strings(obj: Json, key: str, path: str) -> list[str] | None:
    values = take(obj, key, list, path)
    if values is None:
        return None
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise wrong_json(f"{path}{key}[{i}]", f"must be a string, got {json.dumps(value)[:80]}")
    return list(values)


def _sections(body: Json) -> tuple[Json, Json, Json]:
    params = take(body, "parameters", dict, "", {})
    return (
        take(params, "input", dict, "parameters", {}),
        take(params, "mllib", dict, "parameters", {}),
        take(params, "output", dict, "parameters", {}),
    )


def without_nulls(value: Any) -> Any:  # noqa: ANN401 - any JSON value
    """The JSON value with every null member (at any depth) left out: DeepDetect omits what would be null."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]  # positions matter: items are kept
    return value


def dd_answer(head: Json, body: Json | None = None, status: int = 200, msg: str = "OK") -> Response[Json]:
    """Every answer of this face is rendered here, so no null member reaches a client."""
    answer: Json = {"status": {"code": status, "msg": msg}}
    if head := without_nulls(head):
        answer["head"] = head
    if body is not None:
        answer["body"] = without_nulls(body)
    return Response(answer, status_code=status)


def joined_warnings(warnings: list[str]) -> str | None:
    return "; ".join(warnings) if warnings else None


def _input_size(inp: Json) -> tuple[int, int] | None:
    """(width, height) as given; one of them alone is a square. Images are resized to exactly that."""
    width = take(inp, "width", int, "parameters.input")
    height = take(inp, "height", int, "parameters.input")
    if width is None and height is None:
        return None
    return int(width if width is not None else height), int(height if height is not None else width)


def _created(service: ServiceRecord) -> Json:
    """What the service's DeepDetect creation recorded (type, parameters, model); {} for a service made by
    the CLI or the native face."""
    created: Json = service.params.get("deepdetect", {})
    return created


def _service_type(service: ServiceRecord) -> str:
    """The type the service was created with; supervised (the creation's default) when none was given."""
    return str(_created(service).get("type", "supervised"))


def _service_info(core: Core, service: ServiceRecord, *, full: bool) -> Json:
    created = _created(service)
    info: Json = {
        "name": service.name,
        "description": service.description,
        "mllib": "torch",
        "type": _service_type(service),
    }
    if not full:
        return info
    settings = stored_settings(service.index_settings)
    with core.engine.connect() as conn:
        count = store.count_vectors(conn, service.id)
        build = store.current_build(conn, service.id)
    info |= {
        "parameters": created.get("parameters", {"mllib": {"template": service.model, "weights": service.weights}}),
        "repository": service.index_settings.get("repository") or str(core.settings.index_dir / service.name),
        "index": {
            "backend": settings.backend,
            "index_type": settings.index_type,
            "metric": service.metric,
            "dimension": service.dim,
            "count": count,
            "generation": build.id if build else None,
            "built_at": build.finished_at.isoformat() if build and build.finished_at else None,
        },
    }
    return info


@get("/info", sync_to_thread=True, include_in_schema=False, guards=[read_guard])
def info(request: Request[Any, Any, Any]) -> Response[Json]:
    core = core_of(request)
    with core.engine.connect() as conn:
        listed = store.list_services(conn)
    head = {"method": "/info", "version": __version__, "services": [_service_info(core, s, full=False) for s in listed]}
    return dd_answer(head)


# ---- service creation --------------------------------------------------------------------------


def _create(core: Core, name: str, body: Json) -> Response[Json]:
    mllib = take(body, "mllib", str, "")
    if mllib is None:
        raise wrong_json("mllib", 'missing: simsearch services use "mllib": "torch"')
    if mllib.lower() in _OTHER_LIBS:
        raise BadInput("mllib", f'{mllib} is not available in simsearch: use "torch" with a torchvision template')
    if mllib.lower() != "torch":
        raise DDError(404, 1000, f'Unknown Library: {mllib} (use "torch")')
    kind = take(body, "type", str, "")
    if kind is not None and kind not in ("supervised", "unsupervised"):
        raise BadInput("type", f"{kind!r}: use supervised or unsupervised")
    description = take(body, "description", str, "")
    inp, mllib_params, output = _sections(body)
    connector = take(inp, "connector", str, "parameters.input", "image")
    if connector != "image":
        raise DDError(404, 1004, f'Input Connector Not Found: {connector} (simsearch reads images: use "image")')
    template = take(mllib_params, "template", str, "parameters.mllib")
    if template is not None and not template.strip():
        raise BadInput("parameters.mllib.template", "is empty: name a torchvision model, e.g. resnet50")
    weights = take(mllib_params, "weights", str, "parameters.mllib")
    layer = take(mllib_params, "extract_layer", str, "parameters.mllib")
    for key, kinds in (("nclasses", int), ("gpu", bool), ("gpuid", (int, list))):
        take(mllib_params, key, kinds, "parameters.mllib")
    model = take(body, "model", dict, "", {})
    for key in ("description", "parameters", "model"):  # stored as given (text, jsonb): refused here, named
        store.check_storable(body.get(key), key)
    repository = take(model, "repository", str, "model")
    _check_output(output)  # they become the defaults of every predict: refused now, not on each call
    size = _input_size(inp)  # None: 224 for extractors, a detector's own input size (cascades: the image's)
    folder = _repository(core, repository)
    # a creation that leaves model settings out re-attaches the detached service of that name (or, without
    # a template, of that repository) with its stored ones, as DeepDetect reloads a model from its repository
    stored = services.detached_service(core.engine, name, folder if template is None else None)
    if stored is not None and template not in (None, stored.model):
        stored = None  # another model: create_service says whether its vectors may be re-attached
    if template is None and stored is None:
        raise BadInput(
            "model",
            "missing: name a torchvision model, e.g. resnet50 (no service of this name or model.repository "
            "was removed with clear=mem, so there are no stored settings to re-attach)",
        )
    base = _stored_creation(stored)
    template = template or base["template"]
    if not is_detector(template):
        _no_object_flags(output.get("rois") is not None, _multibox(output), f"{template} makes whole-image vectors")
    settings = index_settings({k: output[k] for k in INDEX_KEYS if k in output}, base=base["index"])
    width, height = size or base["size"] or (None, None)
    folder = folder or base["repository"]
    parameters = _merged(base["parameters"], take(body, "parameters", dict, "", {}))
    default_metric = base["metric"] or ("cosine" if settings.backend == "annoy" else "l2")
    metric: str = output["metric"] if output.get("metric") is not None else default_metric
    record = services.create_service(
        core.engine,
        name,
        model=template,
        weights=weights or base["weights"],
        layer=layer,
        size=width,
        height=height,
        metric=metric,
        index=settings,
        repository=folder,
        description=description if description is not None else base["description"],
        params={
            "deepdetect": {
                "type": kind or base["type"],
                "parameters": parameters,
                "model": base["model"] | model,
            }
        },
        weights_roots=[*core.roots, core.settings.home],
        reattach=stored,
    )
    if folder is not None:  # made only once the service exists: a refused one leaves no folder behind
        folder.mkdir(parents=True, exist_ok=True)
    warnings = [_RANDOM_WEIGHTS] if record.weights == "none" else []
    warnings += _gpu_warnings(settings.gpu)
    return dd_answer({"warning": joined_warnings(warnings)}, status=201, msg="Created")


def _stored_creation(stored: ServiceRecord | None) -> Json:
    """The settings a creation takes from the detached service it re-attaches, for what it leaves out
    (defaults when there is none)."""
    if stored is None:
        return {
            "template": None,
            "weights": "DEFAULT",
            "size": None,
            "metric": None,
            "index": None,
            "repository": None,
            "description": "",
            "type": "supervised",
            "parameters": {},
            "model": {},
        }
    created = _created(stored)
    repository = stored.index_settings.get("repository")
    return {
        "template": stored.model,
        "weights": stored.weights,
        "size": (stored.input_size, stored.input_height),
        "metric": stored.metric,
        "index": stored_settings(stored.index_settings),
        "repository": Path(repository) if repository else None,
        "description": stored.description,
        "type": _service_type(stored),
        "parameters": created.get("parameters", {"mllib": {"template": stored.model, "weights": stored.weights}}),
        "model": created.get("model", {}),
    }


def _merged(stored: Json, given: Json) -> Json:
    """The parameters as created: the stored sections, updated by those of this creation."""
    merged = {key: dict(value) if isinstance(value, dict) else value for key, value in stored.items()}
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merged[key] | value
        else:
            merged[key] = value
    return merged


def _repository(core: Core, repository: str | None) -> Path | None:
    """The repository folder, checked (under an allowed root, creatable) but not created yet."""
    if repository is None:
        return None
    path = Path(repository).expanduser().resolve()
    if not under_roots(path, [*core.settings.data_roots, core.settings.home]):
        raise BadInput("model.repository", f"{repository} is outside the allowed roots; set SIMSEARCH_DATA_ROOTS")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise BadInput("model.repository", f"cannot create {repository}: {existing} is not a writable folder")
    return path


def _gpu_warnings(gpu: bool) -> list[str]:
    """DeepDetect's clients send index_gpu whatever the machine: run on the CPU then, and say so."""
    if gpu and faiss_index.gpu_count() == 0:
        # no "; " inside a warning: it is the separator between warnings in head.warning
        return ["index_gpu: faiss sees no GPU here (faiss-cpu or no device), so the index runs on the CPU"]
    return []


@route("/services/{name:str}", http_method=["PUT", "POST"], include_in_schema=False, status_code=201)
async def create_service(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Json]:
    authorize(request, "admin")
    body = _json_body(await request.body())
    return await to_thread.run_sync(_create, core_of(request), name, body)


@get("/services/{name:str}", include_in_schema=False, guards=[read_guard])
async def get_service(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Json]:
    return await to_thread.run_sync(_describe, core_of(request), name)


def _describe(core: Core, name: FromPath[str]) -> Response[Json]:
    with core.engine.connect() as conn:
        service = store.get_service(conn, name.lower())
    return dd_answer({"method": "/services", "service": service.name}, _service_info(core, service, full=True))


@delete("/services/{name:str}", sync_to_thread=True, include_in_schema=False, status_code=HTTP_200_OK)
def delete_service(
    request: Request[Any, Any, Any], name: FromPath[str], clear: FromQuery[str] = "mem"
) -> Response[Json]:
    authorize(request, "admin")
    if clear not in ("mem", "index", "lib", "full", "dir"):
        raise wrong_json("clear", f"{clear!r}: use mem, index, lib, full or dir")
    core = core_of(request)
    try:
        record = services.remove_service(
            core.engine, name, clear="mem" if clear == "mem" else "full", index_dir=core.settings.index_dir
        )
    except NotFound as exc:
        raise DDError(404, None, None) from exc
    core.indexes.forget(record.id)
    return dd_answer({"method": "/services", "service": name.lower()})


# ---- predict -------------------------------------------------------------------------------------


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


def _check_output(output: Json) -> None:
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


def _multibox(output: Json) -> bool:
    """`multibox_rois`, or `multibox_roi` as DeepDetect's tutorial spells it."""
    return bool(output.get("multibox_rois") or output.get("multibox_roi"))


def _no_object_flags(rois: bool, multibox: bool, what: str) -> None:
    """rois and multibox_rois need a detector service: refused for an extractor (`what` says which)."""
    if rois or multibox:
        raise BadInput(
            f"parameters.output.{'rois' if rois else 'multibox_rois'}",
            f"object search needs a detector service, and {what}: create one with a detection template "
            "(e.g. fasterrcnn_mobilenet_v3_large_fpn) for rois, or run a /chain of a detector, a crop and this service",
        )


def _parse_predict(core: Core, body: Json) -> PredictCall:
    """Everything checked, nothing written: a bad request leaves the service as it was."""
    name = body.get("service")
    if not isinstance(name, str):
        raise DDError(400, None, None) if name is None else wrong_json("service", "must be a string")
    with core.engine.connect() as conn:
        service = store.get_service(conn, name.lower())
    data = take_strings(body, "data", "") or []
    index_uris = take_strings(body, "index_uris", "")
    call = parse_call(core, service, body, data, index_uris)
    if service.kind == "detector":
        _check_detector_call(call)
    else:
        _no_object_flags(call.rois, call.multibox, f"{service.name} is an extractor service ({service.model})")
    return call


def parse_call(
    core: Core, service: ServiceRecord, body: Json, data: list[str], index_uris: list[str] | None
) -> PredictCall:
    """A call's `parameters` checked against its service (the service's creation defaults under the call's
    own output flags); `data` and `index_uris` are the call's (a chain's extractor call: the detector's)."""
    inp, mllib, given = _sections(body)
    output = service.params.get("deepdetect", {}).get("parameters", {}).get("output", {}) | given
    size = _input_size(inp)
    created = (service.input_size, service.input_height or service.input_size)
    if size is not None and size != created:
        which = "width" if size[0] != created[0] else "height"
        raise BadInput(
            f"parameters.input.{which}",
            f"{size[0]}x{size[1]}: {service.name} was created for {service.input_shape} images (width x height)",
        )
    for key, kinds in _PREDICT_MLLIB_TYPES.items():
        take(mllib, key, kinds, "parameters.mllib")
    _check_output(output)
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
        _multibox(output),
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
    request.warnings += _gpu_warnings(settings.gpu)
    if service.weights == "none":
        request.warnings.append(_RANDOM_WEIGHTS)
    if not data and not (request.build and not request.index and not request.search):
        raise BadInput("data", "missing data: give at least one file, directory or base64 image")
    if data and len(data) > core.settings.max_items:
        raise BadInput("data", f"{len(data)} items; at most {core.settings.max_items} per call (SIMSEARCH_MAX_ITEMS)")
    return request


def _check_detector_call(call: PredictCall) -> None:
    """What a predict on a detector service can do: boxes, stored with index; with rois (a detector that
    makes box vectors), each box's vector indexed, built and searched in the detector service itself."""
    service = call.service
    if call.layer is not None and call.layer != service.layer:
        raise BadInput(
            "parameters.mllib.extract_layer",
            f"{call.layer!r}: {service.name} is a detector service"
            + (f"; its box vectors come from {service.layer!r}" if service.dim else " and makes no vectors"),
        )
    if call.rois and service.dim == 0:
        raise BadInput(
            "parameters.output.rois",
            f"{service.name} ({service.model}) makes no vector per box: use a Faster R-CNN template "
            "(e.g. fasterrcnn_mobilenet_v3_large_fpn) for rois, or a /chain of this detector, a crop and an "
            "extractor service (e.g. resnet50 or dlib:face_descriptor)",
        )
    if call.rois:
        return
    if call.search:
        raise BadInput(
            "parameters.output.search",
            f'{service.name} is a detector service: search its objects with "rois" (Faster R-CNN templates) '
            "or through a /chain with an extractor service",
        )
    if call.multibox:
        raise BadInput(
            "parameters.output.multibox_rois", "ranks images by their objects' hits: it needs rois and search"
        )
    if call.build and service.dim == 0:
        raise BadInput(
            "parameters.output.build_index",
            f"{service.name} ({service.model}) stores boxes, no vectors: there is no index to build; "
            "build the extractor service of your /chain instead",
        )


def _index_values(service: ServiceRecord, changes: Json) -> Json:
    """Index keys on an index/build call, checked now; they become the service's settings (as on
    DeepDetect's first `index`) only when the call succeeds."""
    merged = index_settings(changes, base=stored_settings(service.index_settings))
    check_settings(merged, service.dim, service.metric)
    return service.index_settings | merged.to_dict()


def set_index_settings(core: Core, service_id: int, values: Json) -> None:
    with core.engine.begin() as conn:
        store.update_service(conn, service_id, index_settings=values)


def _nns(hits: list[Hit]) -> list[Json]:
    return [{"uri": h.uri, "dist": h.dist} | ({"metadata": h.metadata} if h.metadata else {}) for h in hits]


def build_index(core: Core, service: ServiceRecord) -> None:
    build_generation(core.engine, service, core.settings.index_dir)
    core.indexes.invalidate(service.id)  # this call's own search sees the new generation


def _predict(core: Core, body: Json, request: Request[Any, Any, Any]) -> Response[Json]:
    started = time.perf_counter()
    call = _parse_predict(core, body)
    if call.index or call.build:  # also when a creation default turns them on
        authorize(request, "admin")
    if call.service.kind == "detector":
        predictions, skipped = _predict_objects(core, call)
    else:
        predictions, skipped = _predict_images(core, call)
    last_marked(predictions)
    head = {
        "method": "/predict",
        "service": call.service.name,
        "time": round((time.perf_counter() - started) * 1000, 3),
        "skipped": skipped or None,
        "warning": joined_warnings(call.warnings),
    }
    return dd_answer(head, {"predictions": predictions})


def _predict_images(core: Core, call: PredictCall) -> tuple[list[Json], int]:
    """Whole-image vectors of an extractor service: index, build_index, search."""
    # Nothing is written before the input is read: the layer and new index settings are stored after.
    service, extractor = services.extractor_at(core.engine, call.service, call.layer, stored=call.index or call.search)
    if call.index_values is not None:
        service = replace(service, index_settings=call.index_values)
    predictions: list[Json] = []
    vectors: list[np.ndarray] = []
    skipped = 0
    if call.data:
        report = ingest(
            core.engine,
            service,
            extractor,
            call.data,
            roots=core.roots,
            max_pixels=core.settings.max_pixels,
            batch_size=core.settings.batch_size,
            atomic=True,
            uris=call.index_uris,
            write=call.index,
            keep_vectors=True,
            binarized=call.binarized,
            urls=core.urls,
        )
        skipped = report.skipped
        for p in report.predictions:
            entry: Json = {"uri": str(p.position) if p.from_bytes else p.source_uri, "vals": p.vector.tolist()}
            if call.index:
                entry["indexed"] = True
            predictions.append(entry)
        vectors = [p.vector for p in report.predictions]
    # (a new extract_layer was recorded by ingest, in the transaction of the first vectors)
    if call.build:
        build_index(core, service)
    if call.index_values is not None:  # reached only when the index and build steps succeeded
        set_index_settings(core, service.id, call.index_values)
    if call.search and predictions:
        options = SearchOptions(nprobe=call.nprobe, ef_search=call.ef_search, search_k=call.search_k)
        hits = search_vectors(core.engine, service, core.indexes.current(service), np.stack(vectors), call.k, options)
        for entry, found in zip(predictions, hits, strict=True):
            if found:
                entry["nns"] = _nns(found)
    return predictions, skipped


# ---- objects: detector services (and the chains of chain.py) -----------------------------------


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


def last_marked(entries: list[Json]) -> list[Json]:
    """`last: true` on the last entry, as DeepDetect marks its lists of classes and predictions."""
    if entries:
        entries[-1]["last"] = True
    return entries


def shown_uri(image: ObjectImage) -> str:
    """A prediction's uri: the string as given, or the position in `data` of base64 content."""
    return str(image.position) if image.from_bytes else image.source_uri


def bbox(box: tuple[float, float, float, float]) -> Json:
    return {"xmin": box[0], "ymin": box[1], "xmax": box[2], "ymax": box[3]}


def found_class(found: objects.FoundObject, *, with_bbox: bool) -> Json:
    return {"cat": found.category, "prob": found.prob} | ({"bbox": bbox(found.bbox)} if with_bbox else {})


def object_nns(hits: list[Hit]) -> list[Json]:
    """Object hits: the image's uri, the distance, and the stored object's box, category and probability."""
    out = []
    for h in hits:
        entry: Json = {"uri": h.uri, "dist": h.dist}
        if h.bbox is not None:
            entry["bbox"] = bbox(h.bbox)
        if h.category is not None:
            entry["cat"] = h.category
        if h.prob is not None:
            entry["prob"] = h.prob
        if h.metadata:
            entry["metadata"] = h.metadata
        out.append(entry)
    return out


def _predict_objects(core: Core, call: PredictCall) -> tuple[list[Json], int]:
    """A detector service: its boxes (`classes`), stored with index; with rois each box's own vector
    (`rois`), indexed, built and searched in the detector service itself."""
    service = call.service if call.index_values is None else replace(call.service, index_settings=call.index_values)
    how = Detection(
        services.detector_for(service),
        box_vectors=call.rois,
        confidence_threshold=call.confidence_threshold,
        binarized_metric=service.metric if call.binarized and call.rois else None,
    )
    images, skipped, stored = detect_objects(core, how, call, detector=service, service=service if call.rois else None)
    if call.build:
        build_index(core, service)
    if call.index_values is not None:  # reached only when the index and build steps succeeded
        set_index_settings(core, service.id, call.index_values)
    search = call.search and call.rois
    hits = search_objects(core, service, images, call) if search else [[[] for _ in i.objects] for i in images]
    predictions: list[Json] = []
    for image, found in zip(images, hits, strict=True):
        entry: Json = {"uri": shown_uri(image)}
        if call.rois:
            entry["rois"] = [
                found_class(o, with_bbox=True)
                | ({"vals": o.vector.tolist()} if o.vector is not None else {})
                | ({"nns": object_nns(h)} if h else {})
                for o, h in zip(image.objects, found, strict=True)
            ]
        else:
            entry["classes"] = [found_class(o, with_bbox=call.bbox) for o in image.objects]
        if image.stored_uri in stored:
            entry["indexed"] = True
        if search and call.multibox:  # DeepDetect's multibox answer: the query objects and the ranked images
            entry["classes"] = last_marked([found_class(o, with_bbox=True) for o in image.objects])
            if ranked := ranked_nns(core, service, found):
                entry["nns"] = ranked
        predictions.append(entry)
    return predictions, skipped


@post("/predict", include_in_schema=False, status_code=HTTP_200_OK)
async def predict(request: Request[Any, Any, Any]) -> Response[Json]:
    authorize(request, "read")
    body = _json_body(await request.body())
    return await to_thread.run_sync(_predict, core_of(request), body, request)


@route("/chain/{name:str}", http_method=["PUT", "POST"], include_in_schema=False, status_code=HTTP_200_OK)
async def chain(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Json]:
    from simsearch.api.chain import run_chain  # chain.py builds on this module's parsing and rendering

    del name  # DeepDetect's chain name names nothing that is kept
    authorize(request, "read")  # and admin once the chain is known to write (run_chain)
    body = _json_body(await request.body())
    return await to_thread.run_sync(run_chain, core_of(request), body, request)


ROUTES: list[HTTPRouteHandler] = [info, create_service, get_service, delete_service, predict, chain]
