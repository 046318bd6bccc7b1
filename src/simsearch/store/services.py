"""Service rows: create, read, list, delete."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Connection, Table, delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from simsearch.errors import Conflict, NotFound
from simsearch.store.records import ServiceRecord
from simsearch.store.tables import Embedding, Service

_service = cast(Table, Service.__table__)


def _record(row: Any) -> ServiceRecord:  # noqa: ANN401 - a SQLAlchemy Row of the service table
    return ServiceRecord(**row._mapping)


def create_service(conn: Connection, **values: Any) -> ServiceRecord:  # noqa: ANN401
    """Insert a service; `Conflict` when the name is taken. Runs in a savepoint so the caller's
    transaction survives the conflict."""
    try:
        with conn.begin_nested():
            row = conn.execute(insert(_service).values(**values).returning(*_service.c)).one()
    except IntegrityError as exc:
        if getattr(exc.orig, "sqlstate", None) == "23505":
            name = values.get("name")
            raise Conflict(f"service {name!r} already exists; delete it first or pick another name") from exc
        raise
    return _record(row)


def get_service(conn: Connection, name: str) -> ServiceRecord:
    row = conn.execute(select(_service).where(_service.c.name == name)).one_or_none()
    if row is None:
        raise NotFound(f"service {name!r} not found; create it with `simsearch service create {name} ...`")
    return _record(row)


def list_services(conn: Connection) -> list[ServiceRecord]:
    return [_record(row) for row in conn.execute(select(_service).order_by(_service.c.name))]


def delete_service(conn: Connection, name: str) -> None:
    """Delete the service with its vectors, ROIs and build records (cascades)."""
    result = conn.execute(delete(_service).where(_service.c.name == name))
    if result.rowcount == 0:
        raise NotFound(f"service {name!r} not found")


def count_vectors(conn: Connection, service_id: int) -> int:
    return int(conn.execute(select(func.count()).where(Embedding.service_id == service_id)).scalar_one())
