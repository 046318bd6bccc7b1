"""DeepDetect's JSON in and out, shared by /predict (deepdetect.py) and /chain (chain.py): a body read
and checked key by key (each wrong type a 400/400 naming the field), and the envelope every answer of
the face is rendered in. No core and no database here."""

from __future__ import annotations

import json
from typing import Any

from litestar import Response

from simsearch.api.errors import DDError, wrong_json
from simsearch.input import is_utf8  # JSON's \ud800 escape decodes to a lone surrogate, which it refuses
from simsearch.objects import FoundObject, ObjectImage
from simsearch.store import Hit, RankedImage

Json = dict[str, Any]


def json_body(raw: bytes) -> Json:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise DDError(400, None, None) from exc
    if not isinstance(body, dict):
        raise wrong_json("body", "must be a JSON object")
    if (where := _lone_surrogate(body)) is not None:
        raise wrong_json(where, "contains a lone surrogate (an escape \\ud800-\\udfff that is no character)")
    return body


def _lone_surrogate(body: Json) -> str | None:
    """The path of the first string (or key) holding a lone surrogate, which no store or file name takes.
    A loop, not recursion: a body nested as deep as json.loads allows is walked too."""
    stack: list[tuple[str, Any]] = [("", body)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str) and not is_utf8(value):
            return path or "body"
        if isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in reversed(list(enumerate(value))))
        elif isinstance(value, dict):
            for key in value:
                if not is_utf8(key):
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


def sections(body: Json) -> tuple[Json, Json, Json]:
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


def input_size(inp: Json) -> tuple[int, int] | None:
    """(width, height) as given; one of them alone is a square. Images are resized to exactly that."""
    width = take(inp, "width", int, "parameters.input")
    height = take(inp, "height", int, "parameters.input")
    if width is None and height is None:
        return None
    return int(width if width is not None else height), int(height if height is not None else width)


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


def found_class(found: FoundObject, *, with_bbox: bool) -> Json:
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


def ranked_nns(ranked: list[RankedImage]) -> list[Json]:
    """multibox_rois: the images ranked by their objects' hits, each with its score as `dist`."""
    return [{"uri": r.uri, "dist": r.score} | ({"metadata": r.metadata} if r.metadata else {}) for r in ranked]
