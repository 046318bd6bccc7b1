"""DeepDetect's simsearch API (/info, /services/{name}, /predict): translation only.

Requests are parsed by hand so that each wrong key gets DeepDetect's own error code; the work is done
by `services`, `ingest`, `objects`, `index` and `search`, the same functions as the native face and the
CLI. Chains (/chain/{name}) are parsed and run in `chain.py`; what both routes share is in `dd_wire.py`
(the JSON in and out) and `dd_call.py` (a service call checked, and the steps it runs).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from anyio import to_thread
from litestar import Request, Response, delete, get, post, route
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery
from litestar.status_codes import HTTP_200_OK

from simsearch import __version__, services, store
from simsearch import predict as calls
from simsearch.api.context import authorize, core_of, read_guard
from simsearch.api.dd_call import RANDOM_WEIGHTS, Parsed, check_output, gpu_warnings, parse_call, wants_multibox
from simsearch.api.dd_wire import (
    Json,
    dd_answer,
    found_class,
    input_size,
    joined_warnings,
    json_body,
    last_marked,
    object_nns,
    ranked_nns,
    sections,
    shown_uri,
    take,
    take_strings,
)
from simsearch.api.errors import DDError, wrong_json
from simsearch.core import Core
from simsearch.core import service_named as core_service
from simsearch.errors import BadInput, NotFound
from simsearch.index import INDEX_KEYS, index_settings, stored_settings
from simsearch.input import under_roots
from simsearch.models import is_detector
from simsearch.predict import ServiceCall
from simsearch.store import Hit, ServiceRecord

_OTHER_LIBS = ("caffe", "caffe2", "tf", "tensorflow", "tensorrt", "ncnn", "xgboost", "dlib", "tsne")


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
        "repository": service.index_settings.get("repository") or str(core.index_dir / service.name),
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


def _check_library(body: Json) -> Json:
    """`mllib`, `type` and the input connector: what simsearch runs; the input section, checked."""
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
    take(body, "description", str, "")
    inp, mllib_params, _ = sections(body)
    connector = take(inp, "connector", str, "parameters.input", "image")
    if connector != "image":
        raise DDError(404, 1004, f'Input Connector Not Found: {connector} (simsearch reads images: use "image")')
    template = take(mllib_params, "template", str, "parameters.mllib")
    if template is not None and not template.strip():
        raise BadInput("parameters.mllib.template", "is empty: name a torchvision model, e.g. resnet50")
    for key, kinds in (
        ("weights", str),
        ("extract_layer", str),
        ("nclasses", int),
        ("gpu", bool),
        ("gpuid", (int, list)),
    ):
        take(mllib_params, key, kinds, "parameters.mllib")
    return mllib_params


def _reattached(core: Core, name: str, template: str | None, folder: Path | None) -> ServiceRecord | None:
    """A creation that leaves model settings out re-attaches the detached service of that name (or, without
    a template, of that repository) with its stored ones, as DeepDetect reloads a model from its repository."""
    stored = services.detached_service(core.engine, name, folder if template is None else None)
    if stored is not None and template not in (None, stored.model):
        stored = None  # another model: create_service says whether its vectors may be re-attached
    if template is None and stored is None:
        raise BadInput(
            "model",
            "missing: name a torchvision model, e.g. resnet50 (no service of this name or model.repository "
            "was removed with clear=mem, so there are no stored settings to re-attach)",
        )
    return stored


def _create(core: Core, name: str, body: Json) -> Response[Json]:
    mllib_params = _check_library(body)
    inp, _, output = sections(body)
    kind, description = body.get("type"), body.get("description")
    template, weights, layer = (mllib_params.get(k) for k in ("template", "weights", "extract_layer"))
    model = take(body, "model", dict, "", {})
    for key in ("description", "parameters", "model"):  # stored as given (text, jsonb): refused here, named
        store.check_storable(body.get(key), key)
    repository = take(model, "repository", str, "model")
    check_output(output)  # they become the defaults of every predict: refused now, not on each call
    size = input_size(inp)  # None: 224 for extractors, a detector's own input size (cascades: the image's)
    folder = _repository(core, repository)
    stored = _reattached(core, name, template, folder)
    base = _stored_creation(stored)
    template = template or base["template"]
    if not is_detector(template):
        calls.refuse_object_flags(
            output.get("rois") is not None, wants_multibox(output), f"{template} makes whole-image vectors"
        )
    settings = index_settings({k: output[k] for k in INDEX_KEYS if k in output}, base=base["index"])
    width, height = size or base["size"] or (None, None)
    folder = folder or base["repository"]
    parameters = _merged(base["parameters"], take(body, "parameters", dict, "", {}))
    default_metric = base["metric"] or ("cosine" if settings.backend == "annoy" else "l2")
    metric: str = output["metric"] if output.get("metric") is not None else default_metric
    created = services.create_service(
        core.engine,
        core.models,
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
        weights_roots=core.weights_roots,
        reattach=stored,
    )
    if folder is not None:  # made only once the service exists: a refused one leaves no folder behind
        folder.mkdir(parents=True, exist_ok=True)
    warnings = [RANDOM_WEIGHTS] if created.weights == "none" else []
    warnings += gpu_warnings(settings.gpu)
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
    if not under_roots(path, core.weights_roots):
        raise BadInput("model.repository", f"{repository} is outside the allowed roots; set SIMSEARCH_DATA_ROOTS")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise BadInput("model.repository", f"cannot create {repository}: {existing} is not a writable folder")
    return path


@route("/services/{name:str}", http_method=["PUT", "POST"], include_in_schema=False, status_code=201)
async def create_service(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Json]:
    authorize(request, "admin")
    body = json_body(await request.body())
    return await to_thread.run_sync(_create, core_of(request), name, body)


@get("/services/{name:str}", include_in_schema=False, guards=[read_guard])
async def get_service(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Json]:
    return await to_thread.run_sync(_describe, core_of(request), name)


def _describe(core: Core, name: FromPath[str]) -> Response[Json]:
    service = core_service(core, name.lower())
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
            core.engine, name, clear="mem" if clear == "mem" else "full", index_dir=core.index_dir
        )
    except NotFound as exc:
        raise DDError(404, None, None) from exc
    core.indexes.forget(record.id)
    return dd_answer({"method": "/services", "service": name.lower()})


# ---- predict -------------------------------------------------------------------------------------


def _parse_predict(core: Core, body: Json) -> Parsed:
    """Everything checked, nothing written: a bad request leaves the service as it was."""
    name = body.get("service")
    if not isinstance(name, str):
        raise DDError(400, None, None) if name is None else wrong_json("service", "must be a string")
    service = core_service(core, name.lower())
    data = take_strings(body, "data", "") or []
    parsed = parse_call(core, service, body, data, take_strings(body, "index_uris", ""))
    calls.check_call(parsed.call)
    return parsed


def _nns(hits: list[Hit]) -> list[Json]:
    return [{"uri": h.uri, "dist": h.dist} | ({"metadata": h.metadata} if h.metadata else {}) for h in hits]


def _predict(core: Core, body: Json, request: Request[Any, Any, Any]) -> Response[Json]:
    started = time.perf_counter()
    parsed = _parse_predict(core, body)
    call = parsed.call
    if call.index or call.build:  # also when a creation default turns them on
        authorize(request, "admin")
    if call.service.kind == "detector":
        found = calls.run_object_call(core, call)
        predictions, skipped = _object_predictions(found, call, bbox=parsed.bbox), found.skipped
    else:
        images = calls.run_image_call(core, call)
        predictions, skipped = _image_predictions(images), images.skipped
    last_marked(predictions)
    head = {
        "method": "/predict",
        "service": call.service.name,
        "time": round((time.perf_counter() - started) * 1000, 3),
        "skipped": skipped or None,
        "warning": joined_warnings(list(parsed.warnings)),
    }
    return dd_answer(head, {"predictions": predictions})


def _image_predictions(outcome: calls.ImageOutcome) -> list[Json]:
    """Whole-image vectors: each image's `vals`, `indexed`, and its `nns` when searched."""
    predictions: list[Json] = []
    for i, p in enumerate(outcome.predictions):
        entry: Json = {"uri": str(p.position) if p.from_bytes else p.source_uri, "vals": p.vector.tolist()}
        if outcome.indexed:
            entry["indexed"] = True
        if outcome.hits is not None and outcome.hits[i]:
            entry["nns"] = _nns(outcome.hits[i])
        predictions.append(entry)
    return predictions


def _object_predictions(outcome: calls.ObjectOutcome, call: ServiceCall, *, bbox: bool) -> list[Json]:
    """A detector service's boxes (`classes`); with rois each box's own vector and hits (`rois`); with
    multibox the query objects and the ranked images."""
    predictions: list[Json] = []
    for n, (image, found) in enumerate(zip(outcome.images, outcome.hits, strict=True)):
        entry: Json = {"uri": shown_uri(image)}
        if call.rois:
            entry["rois"] = [
                found_class(o, with_bbox=True)
                | ({"vals": o.vector.tolist()} if o.vector is not None else {})
                | ({"nns": object_nns(h)} if h else {})
                for o, h in zip(image.objects, found, strict=True)
            ]
        else:
            entry["classes"] = [found_class(o, with_bbox=bbox) for o in image.objects]
        if image.stored_uri in outcome.stored:
            entry["indexed"] = True
        if outcome.ranked is not None:  # DeepDetect's multibox answer: the query objects and the ranked images
            entry["classes"] = last_marked([found_class(o, with_bbox=True) for o in image.objects])
            if ranked := ranked_nns(outcome.ranked[n]):
                entry["nns"] = ranked
        predictions.append(entry)
    return predictions


@post("/predict", include_in_schema=False, status_code=HTTP_200_OK)
async def predict(request: Request[Any, Any, Any]) -> Response[Json]:
    authorize(request, "read")
    body = json_body(await request.body())
    return await to_thread.run_sync(_predict, core_of(request), body, request)


ROUTES: list[HTTPRouteHandler] = [info, create_service, get_service, delete_service, predict]
