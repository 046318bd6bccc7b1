"""What Postgres can store: text and jsonb hold no NUL character, and deep JSON is refused before
Postgres (or json.dumps) recurses on it. Checked before a write, so the error names the field."""

from __future__ import annotations

from typing import Any

from simsearch.errors import BadInput

MAX_JSON_DEPTH = 32  # metadata and filters nest no deeper (Postgres and json.dumps recurse on them)
# A uri is a key of the unique btree index on image.uri, whose rows hold at most about 2,700 bytes once
# compressed: longer than a path can be (PATH_MAX), a uri is refused before anything is read; one that
# compresses badly fails in Postgres and store.upsert_images refuses it then (the transaction rolls back).
MAX_URI_BYTES = 4096


def check_uri(uri: str, field: str) -> None:
    """A uri Postgres can store and index, checked before the write so the error names the field."""
    check_storable(uri, field)
    size = len(uri.encode("utf-8", "surrogatepass"))
    if size > MAX_URI_BYTES:
        raise BadInput(field, f"is {size} bytes long; a stored uri has at most {MAX_URI_BYTES} (give a shorter one)")


def check_storable(value: Any, field: str) -> None:  # noqa: ANN401 - any decoded JSON
    """Refuse what Postgres cannot store (NUL characters: text and jsonb have none) and JSON nested
    absurdly deep, naming the field; iterative, so it cannot exhaust the stack itself."""
    pending = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise BadInput(field, "must not contain NUL (\\u0000) characters")
        elif isinstance(item, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise BadInput(field, f"is nested deeper than {MAX_JSON_DEPTH} levels")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
