"""DeepDetect's simsearch API (/info, /services/{name}, /predict, /chain/{name}): translation only.

Requests are parsed by hand so that each wrong key gets DeepDetect's own error code; the work is done
by `services`, `ingest`, `index` and `search`, the same functions as the native face and the CLI.
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

from simsearch import __version__, services, store
from simsearch.api.app import Core, authorize, core_of, read_guard
from simsearch.api.errors import DDError, wrong_json
from simsearch.errors import BadInput, NotFound
from simsearch.index import INDEX_KEYS, build_generation, check_settings, faiss_index, index_settings, stored_settings
from simsearch.ingest import ingest
from simsearch.input import under_roots
from simsearch.search import SearchOptions, search_vectors
from simsearch.store import Hit, ServiceRecord

_OTHER_LIBS = ("caffe", "caffe2", "tf", "tensorflow", "tensorrt", "ncnn", "xgboost", "dlib", "tsne")
_RANDOM_WEIGHTS = "weights: none: random initialisation, the vectors mean nothing (for tests only)"
_JSON = dict[str, Any]
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


def _json_body(raw: bytes) -> _JSON:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise DDError(400, None, None) from exc
    if not isinstance(body, dict):
        raise wrong_json("body", "must be a JSON object")
    return body


def _take(obj: _JSON, key: str, kind: type | tuple[type, ...], path: str, default: Any = None) -> Any:  # noqa: ANN401
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


def _strings(obj: _JSON, key: str, path: str) -> list[str] | None:
    values = _take(obj, key, list, path)
    if values is None:
        return None
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise wrong_json(f"{path}{key}[{i}]", f"must be a string, got {json.dumps(value)[:80]}")
    return list(values)


def _sections(body: _JSON) -> tuple[_JSON, _JSON, _JSON]:
    params = _take(body, "parameters", dict, "", {})
    return (
        _take(params, "input", dict, "parameters", {}),
        _take(params, "mllib", dict, "parameters", {}),
        _take(params, "output", dict, "parameters", {}),
    )


def _ok(head: _JSON, body: _JSON | None = None, status: int = 200, msg: str = "OK") -> Response[_JSON]:
    answer: _JSON = {"status": {"code": status, "msg": msg}}
    if head := {k: v for k, v in head.items() if v is not None}:
        answer["head"] = head
    if body is not None:
        answer["body"] = body
    return Response(answer, status_code=status)


def _warning(warnings: list[str]) -> str | None:
    return "; ".join(warnings) if warnings else None


def _input_size(inp: _JSON) -> int | None:
    width = _take(inp, "width", int, "parameters.input")
    height = _take(inp, "height", int, "parameters.input")
    if width is not None and height is not None and width != height:
        raise BadInput(
            "parameters.input", f"width {width} and height {height} differ: simsearch models take square inputs"
        )
    return int(width) if width is not None else (int(height) if height is not None else None)


def _service_info(core: Core, service: ServiceRecord, *, full: bool) -> _JSON:
    created = service.params.get("deepdetect", {})
    info: _JSON = {
        "name": service.name,
        "description": service.description,
        "mllib": "torch",
        "type": created.get("type", "unsupervised"),
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
def info(request: Request[Any, Any, Any]) -> Response[_JSON]:
    core = core_of(request)
    with core.engine.connect() as conn:
        listed = store.list_services(conn)
    head = {"method": "/info", "version": __version__, "services": [_service_info(core, s, full=False) for s in listed]}
    return _ok(head)


# ---- service creation --------------------------------------------------------------------------


def _create(core: Core, name: str, body: _JSON) -> Response[_JSON]:
    mllib = _take(body, "mllib", str, "")
    if mllib is None:
        raise wrong_json("mllib", 'missing: simsearch services use "mllib": "torch"')
    if mllib.lower() in _OTHER_LIBS:
        raise BadInput("mllib", f'{mllib} is not available in simsearch: use "torch" with a torchvision template')
    if mllib.lower() != "torch":
        raise DDError(404, 1000, f'Unknown Library: {mllib} (use "torch")')
    kind = _take(body, "type", str, "", "supervised")
    if kind not in ("supervised", "unsupervised"):
        raise BadInput("type", f"{kind!r}: use supervised or unsupervised")
    description = _take(body, "description", str, "", "")
    inp, mllib_params, output = _sections(body)
    connector = _take(inp, "connector", str, "parameters.input", "image")
    if connector != "image":
        raise DDError(404, 1004, f'Input Connector Not Found: {connector} (simsearch reads images: use "image")')
    template = _take(mllib_params, "template", str, "parameters.mllib")
    if template is None:
        raise wrong_json("parameters.mllib.template", "missing: name a torchvision model, e.g. resnet50")
    weights = _take(mllib_params, "weights", str, "parameters.mllib", "DEFAULT")
    layer = _take(mllib_params, "extract_layer", str, "parameters.mllib")
    for key, kinds in (("nclasses", int), ("gpu", bool), ("gpuid", (int, list))):
        _take(mllib_params, key, kinds, "parameters.mllib")
    model = _take(body, "model", dict, "", {})
    repository = _take(model, "repository", str, "model")
    _check_output(output)  # they become the defaults of every predict: refused now, not on each call
    backend = output.get("index_backend", "faiss")
    metric = output.get("metric", "cosine" if backend == "annoy" else "l2")
    settings = index_settings({k: output[k] for k in INDEX_KEYS if k in output})
    size = _input_size(inp) or 224
    folder = _repository(core, repository)
    record = services.create_service(
        core.engine,
        name,
        model=template,
        weights=weights,
        layer=layer,
        size=size,
        metric=metric,
        index=settings,
        repository=folder,
        description=description,
        params={"deepdetect": {"type": kind, "parameters": body.get("parameters", {}), "model": model}},
        weights_roots=[*core.roots, core.settings.home],
    )
    if folder is not None:  # made only once the service exists: a refused one leaves no folder behind
        folder.mkdir(parents=True, exist_ok=True)
    warnings = [_RANDOM_WEIGHTS] if record.weights == "none" else []
    warnings += _gpu_warnings(settings.gpu)
    return _ok({"warning": _warning(warnings)}, status=201, msg="Created")


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
async def create_service(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[_JSON]:
    authorize(request, "admin")
    body = _json_body(await request.body())
    return await to_thread.run_sync(_create, core_of(request), name, body)


@get("/services/{name:str}", include_in_schema=False, guards=[read_guard])
async def get_service(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[_JSON]:
    return await to_thread.run_sync(_describe, core_of(request), name)


def _describe(core: Core, name: FromPath[str]) -> Response[_JSON]:
    with core.engine.connect() as conn:
        service = store.get_service(conn, name.lower())
    return _ok({"method": "/services", "service": service.name}, _service_info(core, service, full=True))


@delete("/services/{name:str}", sync_to_thread=True, include_in_schema=False, status_code=HTTP_200_OK)
def delete_service(
    request: Request[Any, Any, Any], name: FromPath[str], clear: FromQuery[str] = "mem"
) -> Response[_JSON]:
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
    return _ok({"method": "/services", "service": name.lower()})


# ---- predict -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Predict:
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
    index_values: _JSON | None = None  # new index settings of an index/build call, stored once it succeeded
    warnings: list[str] = field(default_factory=list)


def _flag(output: _JSON, key: str) -> bool:
    return bool(_take(output, key, bool, "parameters.output", False))


def _check_output(output: _JSON) -> None:
    """`parameters.output` of a creation or a predict: JSON types, then the values this face decides."""
    for key, kinds in _OUTPUT_TYPES.items():
        _take(output, key, kinds, "parameters.output")
    k = output.get("search_nn")
    if k is not None and k < 1:
        raise BadInput("parameters.output.search_nn", f"must be at least 1, got {k}")
    if output.get("rois") is not None or output.get("multibox_rois") or output.get("multibox_roi"):
        key = "rois" if output.get("rois") is not None else "multibox_rois"
        raise BadInput(f"parameters.output.{key}", "object search (rois, multibox_rois, /chain) is not available yet")


def _parse_predict(core: Core, body: _JSON) -> _Predict:
    """Everything checked, nothing written: a bad request leaves the service as it was."""
    name = body.get("service")
    if not isinstance(name, str):
        raise DDError(400, None, None) if name is None else wrong_json("service", "must be a string")
    with core.engine.connect() as conn:
        service = store.get_service(conn, name.lower())
    data = _strings(body, "data", "") or []
    index_uris = _strings(body, "index_uris", "")
    inp, mllib, given = _sections(body)
    output = service.params.get("deepdetect", {}).get("parameters", {}).get("output", {}) | given
    size = _input_size(inp)
    if size is not None and size != service.input_size:
        raise BadInput(
            "parameters.input.width", f"{size}: {service.name} was created for {service.input_size}px images"
        )
    for key, kinds in _PREDICT_MLLIB_TYPES.items():
        _take(mllib, key, kinds, "parameters.mllib")
    _check_output(output)
    if given.get("metric", service.metric) != service.metric:
        # the metric shapes the vectors themselves (cosine ones are normalised): silently ignoring it would lie
        raise BadInput(
            "parameters.output.metric", f"{given['metric']!r}: {service.name} uses {service.metric!r}, set at creation"
        )
    request = _Predict(service=service, data=data, index_uris=index_uris, layer=mllib.get("extract_layer"))
    request.index, request.build, request.search = (
        _flag(output, "index"),
        _flag(output, "build_index"),
        _flag(output, "search"),
    )
    request.binarized = _flag(output, "binarized")
    request.k = min(_take(output, "search_nn", int, "parameters.output", 10), 10_000)
    settings = index_settings(
        {k: output[k] for k in INDEX_KEYS if k in output}, base=stored_settings(service.index_settings)
    )
    request.nprobe, request.ef_search, request.search_k = settings.nprobe, settings.ef_search, settings.search_k
    per_search = ("nprobe", "ef_search", "search_k")  # apply to this call only (DeepDetect made nprobe sticky)
    changes = {k: output[k] for k in INDEX_KEYS if k in given and k not in per_search}
    if (request.index or request.build) and changes:
        request.index_values = _index_values(service, changes)
    request.warnings += _gpu_warnings(settings.gpu)
    if service.weights == "none":
        request.warnings.append(_RANDOM_WEIGHTS)
    if not data and not (request.build and not request.index and not request.search):
        raise BadInput("data", "missing data: give at least one file, directory or base64 image")
    if data and len(data) > core.settings.max_items:
        raise BadInput("data", f"{len(data)} items; at most {core.settings.max_items} per call (SIMSEARCH_MAX_ITEMS)")
    return request


def _index_values(service: ServiceRecord, changes: _JSON) -> _JSON:
    """Index keys on an index/build call, checked now; they become the service's settings (as on
    DeepDetect's first `index`) only when the call succeeds."""
    merged = index_settings(changes, base=stored_settings(service.index_settings))
    check_settings(merged, service.dim, service.metric)
    return service.index_settings | merged.to_dict()


def _set_index_settings(core: Core, service_id: int, values: _JSON) -> None:
    with core.engine.begin() as conn:
        store.update_service(conn, service_id, index_settings=values)


def _nns(hits: list[Hit]) -> list[_JSON]:
    return [{"uri": h.uri, "dist": h.dist} | ({"metadata": h.metadata} if h.metadata else {}) for h in hits]


def _predict(core: Core, body: _JSON, request: Request[Any, Any, Any]) -> Response[_JSON]:
    started = time.perf_counter()
    call = _parse_predict(core, body)
    if call.index or call.build:  # also when a creation default turns them on
        authorize(request, "admin")
    # Nothing is written before the input is read: the layer and new index settings are stored after.
    service, extractor = services.extractor_at(core.engine, call.service, call.layer, stored=call.index or call.search)
    if call.index_values is not None:
        service = replace(service, index_settings=call.index_values)
    predictions: list[_JSON] = []
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
            entry: _JSON = {"uri": str(p.position) if p.from_bytes else p.source_uri, "vals": p.vector.tolist()}
            if call.index:
                entry["indexed"] = True
            predictions.append(entry)
        vectors = [p.vector for p in report.predictions]
    # (a new extract_layer was recorded by ingest, in the transaction of the first vectors)
    if call.build:
        build_generation(core.engine, service, core.settings.index_dir)
        core.indexes.invalidate(service.id)  # this call's own search sees the new generation
    if call.index_values is not None:  # reached only when the index and build steps succeeded
        _set_index_settings(core, service.id, call.index_values)
    if call.search and predictions:
        options = SearchOptions(nprobe=call.nprobe, ef_search=call.ef_search, search_k=call.search_k)
        hits = search_vectors(core.engine, service, core.indexes.current(service), np.stack(vectors), call.k, options)
        for entry, found in zip(predictions, hits, strict=True):
            if found:
                entry["nns"] = _nns(found)
    if predictions:
        predictions[-1]["last"] = True
    head = {
        "method": "/predict",
        "service": service.name,
        "time": round((time.perf_counter() - started) * 1000, 3),
        "skipped": skipped or None,
        "warning": _warning(call.warnings),
    }
    return _ok(head, {"predictions": predictions})


@post("/predict", include_in_schema=False, status_code=HTTP_200_OK)
async def predict(request: Request[Any, Any, Any]) -> Response[_JSON]:
    authorize(request, "read")
    body = _json_body(await request.body())
    return await to_thread.run_sync(_predict, core_of(request), body, request)


@route("/chain/{name:str}", http_method=["PUT", "POST"], include_in_schema=False, status_code=HTTP_200_OK)
async def chain(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[_JSON]:
    authorize(request, "admin")
    _json_body(await request.body())
    raise BadInput("chain", f"/chain/{name}: chains (object search with detectors and crops) are not available yet")


ROUTES: list[HTTPRouteHandler] = [info, create_service, get_service, delete_service, predict, chain]
