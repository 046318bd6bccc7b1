"""One place that turns exceptions into answers: DeepDetect's envelope on its routes, RFC 9457 problem
details on /api/v1. The server stays up whatever a handler raises."""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException

from simsearch import store
from simsearch.errors import BadInput, Conflict, DatabaseUnavailable, NotFound, SimsearchError
from simsearch.index import INDEX_KEYS

log = logging.getLogger("simsearch.api")

NATIVE_PREFIXES = ("/api/", "/schema")

# Core fields named as a DeepDetect client wrote them.
DD_FIELDS = {
    "layer": "parameters.mllib.extract_layer",
    "extract_layer": "parameters.mllib.extract_layer",
    "weights": "parameters.mllib.weights",
    "model": "parameters.mllib.template",
    "size": "parameters.input.width",
    "height": "parameters.input.height",
    "k": "parameters.output.search_nn",
    "vector": "parameters.mllib.extract_layer",
    "metric": "parameters.output.metric",
    **{key: f"parameters.output.{key}" for key in ("rois", "multibox_rois", "search", "build_index")},
    **{key: f"parameters.output.{key}" for key in INDEX_KEYS},
}
_INPUT_FIELDS = ("data", "index_uris", "parameters.input")


class DDError(Exception):
    """An answer decided by the DeepDetect translation itself (a key missing or of the wrong type,
    an unknown library or connector)."""

    def __init__(self, status: int, dd_code: int | None, dd_msg: str | None) -> None:
        super().__init__(dd_msg or HTTPStatus(status).phrase)
        self.status = status
        self.dd_code = dd_code
        self.dd_msg = dd_msg


def wrong_json(field: str, reason: str) -> DDError:
    """A required key missing, or a value of the wrong JSON type: 400 with dd_code 400."""
    return DDError(400, 400, f"{field}: {reason}")


_MSG = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    413: "PayloadTooLarge",
    500: "InternalError",
    503: "ServiceUnavailable",
}


def dd_envelope(status: int, dd_code: int | None = None, dd_msg: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": status, "msg": _MSG.get(status, HTTPStatus(status).phrase.replace(" ", ""))}
    if dd_code is not None:
        body["dd_code"] = dd_code
    if dd_msg is not None:
        body["dd_msg"] = dd_msg
    return {"status": body}


def _dd_answer(exc: Exception) -> tuple[int, int | None, str | None]:
    if isinstance(exc, DDError):
        return exc.status, exc.dd_code, exc.dd_msg
    if isinstance(exc, BadInput):
        field = DD_FIELDS.get(exc.field, exc.field)
        if field.startswith(_INPUT_FIELDS):
            return 400, 1005, f"Service Input Error: {field}: {exc.reason}"
        return 400, 1006, f"Service Bad Request Error: {field}: {exc.reason}"
    if isinstance(exc, NotFound):
        return 404, 1002, f"Service Not Found: {exc.message}"
    if isinstance(exc, Conflict):
        return 409, 1014, f"Service already exists: {exc.message}"
    if isinstance(exc, SimsearchError):
        return exc.status, 1007, exc.message
    if isinstance(exc, ValidationException):
        return 400, 400, _validation_detail(exc)
    if isinstance(exc, HTTPException):
        return exc.status_code, None, exc.detail if exc.status_code not in (404, 405) else None
    return 500, 1007, unexpected(exc)


def unexpected(exc: Exception) -> str:
    """The text of an unexpected error, for the client: its first line only (SQLAlchemy appends the SQL
    and its parameters, which stay in the server's log)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:500]}"


_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_NAMED = re.compile(r"(?:missing required|unknown) field `(?P<name>[^`]+)`")


def body_error(message: str) -> BadInput:
    """A msgspec validation message ("Expected `int`, got `str` - at `$.items[0].k`", "Object missing
    required field `name`") as a BadInput naming the field at fault."""
    match = _AT.match(message)
    reason = match.group("message") if match else message
    path = (match.group("path") or "").lstrip(".") if match else ""
    if named := _NAMED.search(reason):
        path = f"{path}.{named.group('name')}" if path else named.group("name")
    return BadInput(path or "body", reason)


def _validation_problems(exc: ValidationException) -> list[BadInput]:
    problems = exc.extra if isinstance(exc.extra, list) else []
    found = []
    for problem in problems:
        if not isinstance(problem, dict):
            continue
        key, message = str(problem.get("key") or ""), str(problem.get("message") or "")
        if key in ("", "data") and problem.get("source") in (None, "body"):
            found.append(body_error(message))  # Litestar names the handler's argument: find the field
        else:
            found.append(BadInput(key or "body", message))
    return found or [BadInput("body", exc.detail)]


def _validation_detail(exc: ValidationException) -> str:
    return "; ".join(p.message for p in _validation_problems(exc))


def _problem(exc: Exception) -> tuple[int, dict[str, Any]]:
    extra: dict[str, Any] = {}
    if isinstance(exc, BadInput):
        status, detail, extra = 400, exc.message, {"field": exc.field}
    elif isinstance(exc, SimsearchError):
        status, detail = exc.status, exc.message
    elif isinstance(exc, ValidationException):
        problems = _validation_problems(exc)
        status, detail, extra = 400, "; ".join(p.message for p in problems), {"field": problems[0].field}
    elif isinstance(exc, HTTPException) and isinstance(exc.__cause__, SerializationException):
        status, detail, extra = 400, f"body: not valid JSON ({exc.__cause__})", {"field": "body"}
    elif isinstance(exc, HTTPException):
        status, detail = exc.status_code, exc.detail
    else:
        status, detail = 500, unexpected(exc)
    return status, {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **extra,
    }


def _outage(request: Request[Any, Any, Any], exc: Exception) -> Exception:
    """The database being unreachable or too slow is a 503 whose text tells a client nothing of it
    (no host, port, socket or driver). An outage that passed through an engine is DatabaseUnavailable
    already; one that did not (raw psycopg COPY, the pool's own timeout) becomes it here, in one line."""
    if isinstance(exc, DatabaseUnavailable):
        return exc
    unavailable = store.database_unavailable(exc)
    if unavailable is None:
        return exc
    log.warning("%s %s: %s", request.method, request.url.path, unavailable.for_operator())
    return unavailable


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Render any exception for the face the request came through."""
    exc = _outage(request, exc)
    status = exc.status_code if isinstance(exc, HTTPException) else getattr(exc, "status", 500)
    expected = isinstance(exc, SimsearchError | HTTPException | DDError) and status < 500
    if not expected and not isinstance(exc, DatabaseUnavailable):  # an outage is logged once, by its engine
        log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
    if request.url.path.startswith(NATIVE_PREFIXES):
        status, problem = _problem(exc)
        return Response(problem, status_code=status, media_type="application/problem+json", headers=headers)
    status, dd_code, dd_msg = _dd_answer(exc)
    return Response(dd_envelope(status, dd_code, dd_msg), status_code=status, headers=headers)
