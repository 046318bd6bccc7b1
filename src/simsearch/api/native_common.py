"""What the native face's handlers share: OpenAPI problem entries, the core and service lookups, field
renaming in errors, and the upload forms' JSON fields."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Request
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Operation, RequestBody
from litestar.params import FromPath, PathParameter

from simsearch import services, store
from simsearch.api.context import Core, core_of
from simsearch.api.errors import body_error
from simsearch.api.schemas import (
    MAX_ID,
    IndexOptions,
    ObjectOptions,
    ObjectSearchForm,
    Problem,
    RankOptions,
    UploadForm,
)
from simsearch.errors import BadInput, NotFound
from simsearch.input import under_roots
from simsearch.store import ServiceRecord

ImageId = Annotated[int, PathParameter(ge=1, le=MAX_ID, description="A stored image id")]

_PROBLEMS = {
    400: "Bad input: `field` names the request field at fault, `detail` says why",
    401: "A bearer token is configured and the request has none, or a wrong one",
    403: "The read token may only read and search",
    404: "No such service or image",
    409: "A service of that name exists already",
    413: "The request body is larger than SIMSEARCH_MAX_REQUEST_BYTES",
}


def problems(*codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the problem details a route may answer (errors.py renders them)."""
    return {
        code: ResponseSpec(
            Problem, description=_PROBLEMS[code], media_type="application/problem+json", generate_examples=False
        )
        for code in (400, 401, *codes)
    }


@dataclass
class OptionalBody(Operation):
    """The OpenAPI operation of a route whose JSON body may be left out (Litestar marks every body required)."""

    def __post_init__(self) -> None:
        if isinstance(self.request_body, RequestBody):
            self.request_body.required = False


READS = problems(404)
WRITES = problems(403, 404)
SENDS = problems(403, 404, 413)  # writes with a body


def core_dependency(request: Request[Any, Any, Any]) -> Core:
    return core_of(request)


def service_named(core: Core, name: FromPath[str]) -> ServiceRecord:
    try:
        stored = services.check_name(name)
    except BadInput:  # no service can have this name
        raise NotFound(f"service {name[:100]!r} not found") from None
    with core.engine.connect() as conn:
        return store.get_service(conn, stored)


@contextmanager
def fields_renamed(rename: Callable[[str], str]) -> Iterator[None]:
    """Core errors name `data[i]` (the position in the call); name the request's own field instead."""
    try:
        yield
    except BadInput as exc:
        field = rename(exc.field)
        if field == exc.field:
            raise
        raise BadInput(field, exc.reason) from exc


def data_as(name: str) -> Callable[[str], str]:
    return lambda field: re.sub(r"^data\[(\d+)\]", name, field)


def is_directory(core: Core, item: str) -> bool:
    """A directory under the data roots (others are refused by ingest as outside the roots)."""
    try:
        return os.path.isdir(item) and under_roots(item, core.roots)
    except (OSError, ValueError):
        return False


def _form_json(raw: str | None, field: str) -> Any:  # noqa: ANN401 - any JSON value
    """A form field that holds JSON (crop, filter, category lists); None when left empty."""
    if raw is None or not raw.strip():
        return None
    try:
        value = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise BadInput(field, f"must be JSON: {exc}") from exc
    store.check_storable(value, field)
    return value


_Options = TypeVar("_Options", IndexOptions, ObjectOptions, RankOptions)
_FORM_JSON = ("crop", "query_categories", "categories", "filter")  # form fields that hold JSON


def form_options(form: UploadForm | ObjectSearchForm, kind: type[_Options]) -> _Options:
    """An upload form's fields as the JSON body's options, validated the same way."""
    values = {
        f: _form_json(getattr(form, f), f) if f in _FORM_JSON else getattr(form, f)
        for f in kind.__struct_fields__
        if hasattr(form, f)
    }
    try:
        return msgspec.convert({k: v for k, v in values.items() if v is not None}, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise body_error(str(exc)) from None
