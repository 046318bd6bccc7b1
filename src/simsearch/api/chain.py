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
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from anyio import to_thread
from litestar import Request, Response, route
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath
from litestar.status_codes import HTTP_200_OK

from simsearch.api.context import authorize, core_of
from simsearch.api.dd_call import Parsed, parse_call
from simsearch.api.dd_wire import (
    Json,
    dd_answer,
    found_class,
    joined_warnings,
    json_body,
    last_marked,
    object_nns,
    ranked_nns,
    shown_uri,
    take,
    take_strings,
)
from simsearch.api.errors import DD_FIELDS, DDError, wrong_json
from simsearch.core import Core
from simsearch.core import service_named as core_service
from simsearch.errors import BadInput
from simsearch.input import NO_CROP, Crop
from simsearch.objects import ObjectImage
from simsearch.predict import ChainCall, ObjectOutcome, ServiceCall, extractor_service, run_chain
from simsearch.store import Hit, ServiceRecord

T = TypeVar("T")

ACTIONS = ("crop", "filter")
CROP_SIZES = ("fixed_width", "fixed_height", "min_width", "min_height")
MAX_PADDING = 100.0  # a larger ratio only pads past every edge (the crop is clamped to the image)
MAX_SIZE = 1 << 16  # pixels; larger than any image under the pixel limit
# a chain's first call detects: these flags belong to the extractor's call (rois to a detector's predict)
_NOT_ON_DETECTOR = ("index", "build_index", "search", "rois", "multibox_rois", "multibox_roi")
_INPUT_FIELDS = ("data", "index_uris", "parameters.input")


@dataclass(frozen=True, slots=True)
class _Chain:
    """The chain checked: the core's call, and what only the answer needs."""

    call: ChainCall
    child_at: int = 0  # the extractor service call's position in calls
    warnings: tuple[str, ...] = ()


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
    return core_service(core, name.lower())  # NotFound: 404/1002


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


def _crop(params: Json, path: str) -> Crop:
    """The crop action's parameters (DeepDetect's names; others are ignored, as DeepDetect does)."""
    padding = _number(params, "padding_ratio", path, integer=False, most=MAX_PADDING)
    sizes = {key: _number(params, key, path, integer=True, most=MAX_SIZE) for key in CROP_SIZES}
    square = params.get("force_square", False)
    if not isinstance(square, bool):
        raise wrong_json(f"{path}.force_square", f"must be a boolean, got {json.dumps(square)[:80]}")
    return Crop(
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


def _detector_call(core: Core, service: ServiceRecord, call: Json) -> Parsed:
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
    parsed = parse_call(core, service, call, data, index_uris)
    # the detector's own creation defaults (e.g. index for rois) do not apply in a chain
    detector = replace(parsed.call, index=False, build=False, search=False, rois=False, multibox=False)
    if not data:
        raise BadInput("data", "missing data: give at least one file, directory or base64 image")
    return replace(parsed, call=replace(detector, index_values=None))


def _child_call(core: Core, service: ServiceRecord, call: Json, detector: ServiceCall) -> Parsed:
    child = parse_call(core, service, call, list(detector.data), _listed(detector.index_uris))
    if child.call.rois:
        raise BadInput(
            "parameters.output.rois", "in a chain the extractor embeds each crop; rois is for a detector's /predict"
        )
    return child


def _listed(values: tuple[str | None, ...] | None) -> list[str] | None:
    return [str(v) for v in values] if values is not None else None


def _calls(body: Json) -> list[Json]:
    spec = take(body, "chain", dict, "")
    if spec is None:
        raise wrong_json("chain", 'missing: send {"chain": {"calls": [...]}}')
    # "resource" ("predict" in DeepDetect's tutorial) is accepted and ignored
    calls: list[Json] = take(spec, "calls", list, "chain")
    if not calls:
        raise wrong_json(
            "chain.calls", "missing or empty: give a detector service call, actions (crop, filter), an extractor call"
        )
    for i, call in enumerate(calls):
        if not isinstance(call, dict):
            raise wrong_json(f"chain.calls[{i}]", f"must be an object, got {json.dumps(call)[:80]}")
    if "service" not in calls[0]:
        raise BadInput(
            "chain.calls[0]", 'a chain starts with a call of a detector service ("service", "data"), not an action'
        )
    return calls


def _first_call(core: Core, first: Json) -> Parsed:
    service = _service(core, first, 0)
    if service.kind != "detector":
        raise BadInput(
            "chain.calls[0].service",
            f"{service.name} is an extractor service ({service.model}); a chain starts with a "
            "detector service (e.g. dlib:frontal_face, opencv:haarcascade_frontalface_default, a fasterrcnn_* "
            "template) whose boxes the extractor service of the last call embeds",
        )
    return _in_call(0, lambda: _detector_call(core, service, first))


def _extractor_step(core: Core, call: Json, i: int, detector: ServiceCall) -> Parsed:
    service = _service(core, call, i)
    if service.kind == "detector":
        raise BadInput(
            f"chain.calls[{i}].service",
            f"{service.name} is a detector service; after the actions a chain needs an extractor service "
            "(e.g. resnet50, or dlib:face_descriptor for faces) to embed each crop",
        )
    return _in_call(i, lambda: _child_call(core, service, call, detector))


_State = tuple[Crop, tuple[str, ...] | None]  # the crop and the filter's categories in force


def _parent_state(call: Json, i: int, ids: dict[str, int], states: list[_State]) -> _State | None:
    """The crop and filter in force after the call `parent_id` names (None: no parent_id)."""
    parent = take(call, "parent_id", str, f"chain.calls[{i}]")
    if parent is None:
        return None
    if parent not in ids:
        raise BadInput(f"chain.calls[{i}].parent_id", f"{parent!r} is the id of no earlier call (ids: {sorted(ids)})")
    return states[ids[parent]]


def _action_step(call: Json, i: int, state: _State, seen: set[str]) -> _State:
    kind, params = _action(call, i)
    if kind in seen:
        raise _action_error(f"chain.calls[{i}].action.type", f"a chain takes one {kind} action")
    seen.add(kind)
    path = f"chain.calls[{i}].action.parameters"
    return (_crop(params, path), state[1]) if kind == "crop" else (state[0], _filter(params, path))


def _parse_chain(core: Core, body: Json) -> _Chain:
    """The whole chain checked, nothing written."""
    calls = _calls(body)
    first = _first_call(core, calls[0])
    state: _State = (NO_CROP, None)
    child, child_at = None, 0
    first_id = take(calls[0], "id", str, "chain.calls[0]")
    ids: dict[str, int] = {first_id: 0} if first_id is not None else {}
    states: list[_State] = [state]  # after each call: a service call's parent_id picks one of them
    seen: set[str] = set()
    for i, call in enumerate(calls[1:], start=1):
        call_id = take(call, "id", str, f"chain.calls[{i}]")
        if call_id is not None and call_id in ids:
            raise BadInput(f"chain.calls[{i}].id", f"{call_id!r} is already the id of chain.calls[{ids[call_id]}]")
        if child is not None:
            raise BadInput(
                f"chain.calls[{i}]",
                "nothing may follow the extractor service call: simsearch chains are a detector, actions "
                "(crop, filter), then one extractor service",
            )
        if "action" in call:
            state = _action_step(call, i, state, seen)
        elif "service" in call:
            state = _parent_state(call, i, ids, states) or state
            child, child_at = _extractor_step(core, call, i, first.call), i
        else:
            raise wrong_json(f"chain.calls[{i}]", 'needs "service" (a service call) or "action" (crop or filter)')
        if call_id is not None:
            ids[call_id] = i
        states.append(state)
    chain = ChainCall(first.call, state[0], state[1], child.call if child is not None else None)
    warnings = first.warnings + (tuple(w for w in child.warnings if w not in first.warnings) if child else ())
    return _Chain(chain, child_at, warnings)


def _classes(image: ObjectImage, found: list[list[Hit]], outcome: ObjectOutcome, child: str | None) -> list[Json]:
    """Each box of the image, with the extractor service's result for it under that service's name."""
    classes = []
    for o, h in zip(image.objects, found, strict=True):
        entry = found_class(o, with_bbox=True)
        if child is not None:
            result: Json = {"vals": o.vector.tolist()} if o.vector is not None else {}
            if image.stored_uri in outcome.stored:
                result["indexed"] = True
            if h:
                result["nns"] = object_nns(h)
            entry[child] = result
        classes.append(entry)
    return classes


def _run(core: Core, chain: _Chain) -> ObjectOutcome:
    """The chain run by the core, its refusals named by the call they come from."""
    if (child := chain.call.child) is not None:  # its model at its layer: refused first, named by its call
        _in_call(chain.child_at, lambda: extractor_service(core, child))
    try:
        return run_chain(core, chain.call)
    except BadInput as exc:
        if exc.field.startswith(_INPUT_FIELDS):  # data[3], index_uris: the first call's
            raise DDError(400, 1005, f"Service Input Error: chain.calls[0].{exc.field}: {exc.reason}") from exc
        raise


def answer_chain(core: Core, body: Json, request: Request[Any, Any, Any]) -> Response[Json]:
    started = time.perf_counter()
    chain = _parse_chain(core, body)
    child = chain.call.child
    if child is not None and (child.index or child.build):
        authorize(request, "admin")
    outcome = _run(core, chain)
    name = child.service.name if child is not None else None
    predictions: list[Json] = []
    for n, (image, found) in enumerate(zip(outcome.images, outcome.hits, strict=True)):
        classes = _classes(image, found, outcome, name)
        prediction: Json = {"uri": shown_uri(image), "classes": classes}
        if outcome.ranked is not None:  # the query objects, the ranked images
            last_marked(classes)
            if ranked := ranked_nns(outcome.ranked[n]):
                prediction["nns"] = ranked
        predictions.append(prediction)
    last_marked(predictions)
    head = {
        "method": "/chain",
        "time": round((time.perf_counter() - started) * 1000, 3),
        "skipped": outcome.skipped or None,
        "warning": joined_warnings(list(chain.warnings)),
    }
    return dd_answer(head, {"predictions": predictions})


@route("/chain/{name:str}", http_method=["PUT", "POST"], include_in_schema=False, status_code=HTTP_200_OK)
async def chain(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Json]:
    del name  # DeepDetect's chain name names nothing that is kept
    authorize(request, "read")  # and admin once the chain is known to write (answer_chain)
    body = json_body(await request.body())
    return await to_thread.run_sync(answer_chain, core_of(request), body, request)


ROUTES: list[HTTPRouteHandler] = [chain]
