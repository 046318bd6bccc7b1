"""DeepDetect's /chain/{name}: a detector service call, actions (crop, filter), an extractor service call.

Translation only: the chain is checked whole (nothing is written when any part is refused), then run as
ONE object search call of `objects` (detect -> filter -> crop -> extract -> store/search), writing the
boxes as the detector's ROIs and the vectors in the extractor service. The answer nests each object's
result under its box, keyed by the extractor service's name, as DeepDetect does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from anyio import to_thread
from litestar import Request, Response, route
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath
from litestar.status_codes import HTTP_200_OK

from simsearch import services, store
from simsearch.api.context import Core, authorize, core_of
from simsearch.api.dd_call import (
    PredictCall,
    build_index,
    detect_objects,
    parse_call,
    ranked_nns,
    search_objects,
    set_index_settings,
)
from simsearch.api.dd_wire import (
    Json,
    dd_answer,
    found_class,
    joined_warnings,
    json_body,
    last_marked,
    object_nns,
    shown_uri,
    take,
    take_strings,
)
from simsearch.api.errors import DD_FIELDS, DDError, wrong_json
from simsearch.errors import BadInput
from simsearch.models import Extractor
from simsearch.objects import CropOptions, Detection
from simsearch.store import Hit, ServiceRecord

T = TypeVar("T")

ACTIONS = ("crop", "filter")
CROP_SIZES = ("fixed_width", "fixed_height", "min_width", "min_height")
MAX_PADDING = 100.0  # a larger ratio only pads past every edge (the crop is clamped to the image)
MAX_SIZE = 1 << 16  # pixels; larger than any image under the pixel limit
# a chain's first call detects: these flags belong to the extractor's call (rois to a detector's predict)
_NOT_ON_DETECTOR = ("index", "build_index", "search", "rois", "multibox_rois", "multibox_roi")
_INPUT_FIELDS = ("data", "index_uris", "parameters.input")


@dataclass(slots=True)
class _Chain:
    detector: PredictCall  # the first call: data, index_uris, bbox, confidence_threshold
    crop: CropOptions = field(default_factory=CropOptions)
    categories: tuple[str, ...] | None = None  # the filter action's whitelist
    child: PredictCall | None = None  # the extractor service's call (index, build_index, search, multibox_rois)
    child_at: int = 0  # its position in calls


def _in_call(i: int, parse: Callable[[], T]) -> T:
    """Run `parse` on chain.calls[i], naming the field of any refusal from there (codes as in predict)."""
    try:
        return parse()
    except BadInput as exc:
        name = DD_FIELDS.get(exc.field, exc.field)
        where = f"chain.calls[{i}].{name}"
        if name.startswith(_INPUT_FIELDS):
            raise DDError(400, 1005, f"Service Input Error: {where}: {exc.reason}") from exc
        raise DDError(400, 1006, f"Service Bad Request Error: {where}: {exc.reason}") from exc
    except DDError as exc:
        if exc.dd_code == 400 and exc.dd_msg:
            raise DDError(400, 400, f"chain.calls[{i}].{exc.dd_msg}") from exc
        raise


def _action_error(path: str, reason: str) -> DDError:
    return DDError(400, 1012, f"{path}: {reason}")


def _service(core: Core, call: Json, i: int) -> ServiceRecord:
    name = take(call, "service", str, f"chain.calls[{i}]")
    if name is None:
        raise wrong_json(f"chain.calls[{i}].service", "must be a service name, got null")
    with core.engine.connect() as conn:
        return store.get_service(conn, name.lower())  # NotFound: 404/1002


def _number(params: Json, key: str, path: str, *, integer: bool, most: float) -> Any:  # noqa: ANN401
    value = params.get(key)
    if value is None:
        return None
    kind = "an integer" if integer else "a number"
    right_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not right_type:  # a wrong JSON type is 400/400 anywhere (the contract)
        raise wrong_json(f"{path}.{key}", f"must be {kind}, got {json.dumps(value)[:80]}")
    if not 0 <= value <= most:  # NaN and infinity fail too; a huge integer is compared exactly
        raise _action_error(f"{path}.{key}", f"must be {kind} between 0 and {most:g}, got {value}")
    return value


def _crop(params: Json, path: str) -> CropOptions:
    """The crop action's parameters (DeepDetect's names; others are ignored, as DeepDetect does)."""
    padding = _number(params, "padding_ratio", path, integer=False, most=MAX_PADDING)
    sizes = {key: _number(params, key, path, integer=True, most=MAX_SIZE) for key in CROP_SIZES}
    square = params.get("force_square", False)
    if not isinstance(square, bool):
        raise wrong_json(f"{path}.force_square", f"must be a boolean, got {json.dumps(square)[:80]}")
    return CropOptions(
        padding_ratio=float(padding or 0.0),
        force_square=square,
        **{key: int(value or 0) for key, value in sizes.items()},
    )


def _filter(params: Json, path: str) -> tuple[str, ...]:
    """The filter action: `classes`, the categories kept (the others are dropped before the crop)."""
    classes = params.get("classes")
    if classes is None:
        raise _action_error(f"{path}.classes", 'missing: name the categories to keep, e.g. ["face"]')
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise wrong_json(f"{path}.classes", f"must be an array of strings, got {json.dumps(classes)[:80]}")
    return tuple(classes)


def _action(call: Json, i: int) -> tuple[str, Json]:
    path = f"chain.calls[{i}].action"
    action = take(call, "action", dict, f"chain.calls[{i}]")
    if action is None:
        raise wrong_json(path, "must be an object with a type (crop or filter), got null")
    kind = take(action, "type", str, path)
    if kind is None:
        raise wrong_json(f"{path}.type", "missing: crop or filter")
    if kind not in ACTIONS:
        raise _action_error(f"unknown action {kind} ({path}.type)", "simsearch chains have crop and filter")
    params = action.get("parameters", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise wrong_json(f"{path}.parameters", f"must be an object, got {json.dumps(params)[:80]}")
    return kind, params


def _detector_call(core: Core, service: ServiceRecord, call: Json) -> PredictCall:
    data = take_strings(call, "data", "") or []
    index_uris = take_strings(call, "index_uris", "")
    given = take(take(call, "parameters", dict, "", {}), "output", dict, "parameters", {})
    for key in _NOT_ON_DETECTOR:
        if given.get(key) not in (None, False):
            raise BadInput(
                f"parameters.output.{key}",
                "in a chain, index, build_index, search and multibox_rois go in the extractor service's call "
                "(the last one), which embeds each crop; rois is for a detector's own /predict",
            )
    detector = parse_call(core, service, call, data, index_uris)
    # the detector's own creation defaults (e.g. index for rois) do not apply in a chain
    detector.index = detector.build = detector.search = detector.rois = detector.multibox = False
    detector.index_values = None
    if not data:
        raise BadInput("data", "missing data: give at least one file, directory or base64 image")
    return detector


def _child_call(core: Core, service: ServiceRecord, call: Json, detector: PredictCall) -> PredictCall:
    child = parse_call(core, service, call, detector.data, detector.index_uris)
    if child.rois:
        raise BadInput(
            "parameters.output.rois", "in a chain the extractor embeds each crop; rois is for a detector's /predict"
        )
    return child


def _extractor(core: Core, child: PredictCall) -> Extractor:
    """The child's model at its extract_layer (loaded now: an unknown layer is refused before any write)."""
    found, extractor = services.extractor_at(
        core.engine, child.service, child.layer, stored=child.index or child.search
    )
    child.service = found if child.index_values is None else replace(found, index_settings=child.index_values)
    return extractor


def _parse_chain(core: Core, body: Json) -> _Chain:
    """The whole chain checked, nothing written."""
    spec = take(body, "chain", dict, "")
    if spec is None:
        raise wrong_json("chain", 'missing: send {"chain": {"calls": [...]}}')
    # "resource" ("predict" in DeepDetect's tutorial) is accepted and ignored
    calls = take(spec, "calls", list, "chain")
    if not calls:
        raise wrong_json(
            "chain.calls", "missing or empty: give a detector service call, actions (crop, filter), an extractor call"
        )
    for i, call in enumerate(calls):
        if not isinstance(call, dict):
            raise wrong_json(f"chain.calls[{i}]", f"must be an object, got {json.dumps(call)[:80]}")
    first = calls[0]
    if "service" not in first:
        raise BadInput(
            "chain.calls[0]", 'a chain starts with a call of a detector service ("service", "data"), not an action'
        )
    detector_service = _service(core, first, 0)
    if detector_service.kind != "detector":
        raise BadInput(
            "chain.calls[0].service",
            f"{detector_service.name} is an extractor service ({detector_service.model}); a chain starts with a "
            "detector service (e.g. dlib:frontal_face, opencv:haarcascade_frontalface_default, a fasterrcnn_* "
            "template) whose boxes the extractor service of the last call embeds",
        )
    chain = _Chain(detector=_in_call(0, lambda: _detector_call(core, detector_service, first)))
    ids: dict[str, int] = {}
    # the crop and filter in force after each call: a service call's parent_id picks one of them
    states: list[tuple[CropOptions, tuple[str, ...] | None]] = [(chain.crop, chain.categories)]
    seen: set[str] = set()
    for i, call in enumerate(calls):
        call_id = take(call, "id", str, f"chain.calls[{i}]")
        if call_id is not None and call_id in ids:
            raise BadInput(f"chain.calls[{i}].id", f"{call_id!r} is already the id of chain.calls[{ids[call_id]}]")
        if i == 0:
            ids |= {call_id: 0} if call_id is not None else {}
            continue
        if chain.child is not None:
            raise BadInput(
                f"chain.calls[{i}]",
                "nothing may follow the extractor service call: simsearch chains are a detector, actions "
                "(crop, filter), then one extractor service",
            )
        if "action" in call:
            kind, params = _action(call, i)
            path = f"chain.calls[{i}].action.parameters"
            if kind in seen:
                raise _action_error(f"chain.calls[{i}].action.type", f"a chain takes one {kind} action")
            seen.add(kind)
            if kind == "crop":
                chain.crop = _crop(params, path)
            else:
                chain.categories = _filter(params, path)
        elif "service" in call:
            parent = take(call, "parent_id", str, f"chain.calls[{i}]")
            if parent is not None:
                if parent not in ids:
                    raise BadInput(
                        f"chain.calls[{i}].parent_id", f"{parent!r} is the id of no earlier call (ids: {sorted(ids)})"
                    )
                chain.crop, chain.categories = states[ids[parent]]
            service = _service(core, call, i)
            if service.kind == "detector":
                raise BadInput(
                    f"chain.calls[{i}].service",
                    f"{service.name} is a detector service; after the actions a chain needs an extractor service "
                    "(e.g. resnet50, or dlib:face_descriptor for faces) to embed each crop",
                )
            chain.child = _in_call(i, lambda: _child_call(core, service, call, chain.detector))  # noqa: B023
            chain.child_at = i
        else:
            raise wrong_json(f"chain.calls[{i}]", 'needs "service" (a service call) or "action" (crop or filter)')
        if call_id is not None:
            ids[call_id] = i
        states.append((chain.crop, chain.categories))
    return chain


def run_chain(core: Core, body: Json, request: Request[Any, Any, Any]) -> Response[Json]:
    started = time.perf_counter()
    chain = _parse_chain(core, body)
    child, detector = chain.child, chain.detector
    if child is not None and (child.index or child.build):
        authorize(request, "admin")
    extractor = _in_call(chain.child_at, lambda: _extractor(core, child)) if child is not None else None
    how = Detection(
        services.detector_for(detector.service),
        extractor=extractor,
        confidence_threshold=detector.confidence_threshold,
        categories=chain.categories,
        crop=chain.crop,
        binarized_metric=child.service.metric if child is not None and child.binarized else None,
    )
    call = replace(detector, index=child is not None and child.index)
    try:
        images, skipped, stored = detect_objects(
            core, how, call, detector=detector.service, service=child.service if child is not None else None
        )
    except BadInput as exc:
        if exc.field.startswith(_INPUT_FIELDS):  # data[3], index_uris: the first call's
            raise DDError(400, 1005, f"Service Input Error: chain.calls[0].{exc.field}: {exc.reason}") from exc
        raise
    hits: list[list[list[Hit]]] = [[[] for _ in image.objects] for image in images]
    if child is not None:
        if child.build:
            build_index(core, child.service)
        if child.index_values is not None:  # reached only when the index and build steps succeeded
            set_index_settings(core, child.service.id, child.index_values)
        if child.search:
            hits = search_objects(core, child.service, images, child)
    predictions: list[Json] = []
    for image, found in zip(images, hits, strict=True):
        classes = []
        for o, h in zip(image.objects, found, strict=True):
            entry = found_class(o, with_bbox=True)
            if child is not None:
                result: Json = {"vals": o.vector.tolist()} if o.vector is not None else {}
                if image.stored_uri in stored:
                    result["indexed"] = True
                if h:
                    result["nns"] = object_nns(h)
                entry[child.service.name] = result
            classes.append(entry)
        prediction: Json = {"uri": shown_uri(image), "classes": classes}
        if child is not None and child.search and child.multibox:  # the query objects, the ranked images
            last_marked(classes)
            if ranked := ranked_nns(core, child.service, found):
                prediction["nns"] = ranked
        predictions.append(prediction)
    last_marked(predictions)
    warnings = detector.warnings + ([w for w in child.warnings if w not in detector.warnings] if child else [])
    head = {
        "method": "/chain",
        "time": round((time.perf_counter() - started) * 1000, 3),
        "skipped": skipped or None,
        "warning": joined_warnings(warnings),
    }
    return dd_answer(head, {"predictions": predictions})


@route("/chain/{name:str}", http_method=["PUT", "POST"], include_in_schema=False, status_code=HTTP_200_OK)
async def chain(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Json]:
    del name  # DeepDetect's chain name names nothing that is kept
    authorize(request, "read")  # and admin once the chain is known to write (run_chain)
    body = json_body(await request.body())
    return await to_thread.run_sync(run_chain, core_of(request), body, request)


ROUTES: list[HTTPRouteHandler] = [chain]
