"""What the native face's handlers share: OpenAPI problem entries, the core and service lookups, the core's
field names as the request's, and the upload forms' JSON fields."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Request
from litestar.datastructures import UploadFile
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Operation, RequestBody
from litestar.params import FromPath, PathParameter

from simsearch import services, store
from simsearch.api.context import core_of
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
from simsearch.core import Core
from simsearch.core import service_named as core_service
from simsearch.errors import BadInput, NotFound
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
    return core_service(core, stored)


@contextmanager
def fields_renamed(rename: Callable[[str], str]) -> Iterator[None]:
    """Core errors name the call's own fields (`data[i]`, `image`); name the request's fields instead."""
    try:
        yield
    except BadInput as exc:
        field = rename(exc.field)
        if field == exc.field:
            raise
        raise BadInput(field, exc.reason) from exc


_ITEM_FIELD = re.compile(r"^(data|index_uris|metadata)(?:\[(\d+)\])?(?!\w)")
_PER_ITEM = {"index_uris": "uri", "metadata": "metadata"}


def items_as(whole: str, item: str) -> Callable[[str], str]:
    """An indexing call's fields: the item count (`data`) as `whole`, `data[i]` as `item[i]`, an item's uri
    (`index_uris[i]`) and metadata (`metadata[i]`) as `items[i].uri` and `items[i].metadata`."""

    def rename(field: str) -> str:
        found = _ITEM_FIELD.match(field)
        if found is None:
            return field
        kind, i, rest = found[1], found[2], field[found.end() :]
        if kind == "data":
            return (whole if i is None else f"{item}[{i}]") + rest
        return field if i is None else f"items[{i}].{_PER_ITEM[kind]}{rest}"

    return rename


def image_as(field: str) -> Callable[[str], str]:
    """A query's errors name its image `image`; an upload's is `file`."""
    return lambda given: re.sub(r"^image(?=$|[\[.])", field, given)


def storable(**values: Any) -> None:  # noqa: ANN401 - any decoded JSON
    """Refuse what Postgres cannot store, naming the field, where no core call checks it: a whole-image
    search's filter, an index type, new metadata, the categories an indexing call keeps, a query image's text
    (the input step refuses a NUL there too, less clearly). The core checks the rest: ingest an item's uri and
    metadata, a query its filter and categories, create_service the model's strings."""
    for field, value in values.items():
        store.check_storable(value, field)


def one_file(given: object) -> UploadFile:
    """The one query image of an upload form."""
    if not isinstance(given, UploadFile):
        raise BadInput("file", "send exactly one image as a file part named `file` (multipart/form-data)")
    return given


def _form_json(raw: str | None, field: str) -> Any:  # noqa: ANN401 - any JSON value
    """A form field that holds JSON (crop, filter, category lists); None when left empty. What Postgres cannot
    store is refused by the core call that receives it, as for the JSON body."""
    if raw is None or not raw.strip():
        return None
    try:
        return msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise BadInput(field, f"must be JSON: {exc}") from exc


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
