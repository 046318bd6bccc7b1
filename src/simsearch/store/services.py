"""Service rows: create, read, list, detach (clear=mem) and re-attach, delete."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Connection, Table, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from simsearch.errors import BadInput, Conflict, NotFound
from simsearch.store.read import run_prepared
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


# Every request looks its service up by name first: a prepared statement on the driver's connection, as
# the search's own statement, costs a third of SQLAlchemy's compiled select here (issue 14, item 5).
_COLUMNS = tuple(c.name for c in _service.c)
_BY_NAME = f"SELECT {', '.join(_COLUMNS)} FROM service WHERE name = %s"


def find_service(conn: Connection, name: str) -> ServiceRecord | None:
    """The service of that name, attached or detached; None when there is none."""
    if "\x00" in name:
        return None  # no stored name has one (text holds no NUL), and Postgres would refuse the query
    rows = run_prepared(conn, _BY_NAME, (name,))
    return ServiceRecord(**dict(zip(_COLUMNS, rows[0], strict=True))) if rows else None


def find_detached_by_repository(conn: Connection, repository: str) -> ServiceRecord | None:
    """The most recently detached service whose index files live in `repository` (its model.repository)."""
    row = conn.execute(
        select(_service)
        .where(_service.c.detached_at.is_not(None), _service.c.index_settings["repository"].astext == repository)
        .order_by(_service.c.detached_at.desc())
        .limit(1)
    ).one_or_none()
    return _record(row) if row is not None else None


def get_service(conn: Connection, name: str) -> ServiceRecord:
    """An attached service; `NotFound` otherwise."""
    record = find_service(conn, name)
    if record is None or record.detached_at is not None:
        raise NotFound(
            f"service {name!r} not found; create it first (`simsearch service create {name} ...`, "
            f"PUT /services/{name} or POST /api/v1/services)"
        )
    return record


def list_services(conn: Connection) -> list[ServiceRecord]:
    rows = conn.execute(select(_service).where(_service.c.detached_at.is_(None)).order_by(_service.c.name))
    return [_record(row) for row in rows]


def detach_service(conn: Connection, name: str) -> ServiceRecord:
    """Remove the service from the API but keep its vectors, builds and index files (clear=mem)."""
    row = conn.execute(
        update(_service)
        .where(_service.c.name == name, _service.c.detached_at.is_(None))
        .values(detached_at=func.now())
        .returning(*_service.c)
    ).one_or_none()
    if row is None:
        raise NotFound(f"service {name!r} not found")
    return _record(row)


def reattach_service(conn: Connection, service_id: int, **values: Any) -> ServiceRecord:  # noqa: ANN401
    row = conn.execute(
        update(_service).where(_service.c.id == service_id).values(detached_at=None, **values).returning(*_service.c)
    ).one()
    return _record(row)


def update_service(conn: Connection, service_id: int, **values: Any) -> ServiceRecord:  # noqa: ANN401
    """Change an attached service's columns (e.g. its index settings); NotFound once it was removed."""
    row = conn.execute(
        update(_service)
        .where(_service.c.id == service_id, _service.c.detached_at.is_(None))
        .values(**values)
        .returning(*_service.c)
    ).one_or_none()
    if row is None:
        raise NotFound(f"service {service_id} was removed meanwhile")
    return _record(row)


def set_layer(conn: Connection, service_id: int, layer: str, dim: int) -> ServiceRecord:
    """Record the layer (and its dimension) of a service that has no vectors yet."""
    row = conn.execute(
        update(_service).where(_service.c.id == service_id).values(layer=layer, dim=dim).returning(*_service.c)
    ).one()
    return _record(row)


def record_layer(conn: Connection, service_id: int, layer: str, dim: int) -> None:
    """Make `layer` (of dimension `dim`) the service's layer, in the caller's transaction, unless it
    already is; refused once the service stores vectors of another layer. The service row is locked
    first, so of two concurrent first calls with different layers only one can win."""
    current = conn.execute(select(_service.c.layer, _service.c.dim).where(_service.c.id == service_id)).one()
    if (current.layer, current.dim) == (layer, dim):
        return
    row = conn.execute(select(_service).where(_service.c.id == service_id).with_for_update()).one()
    if count_vectors(conn, service_id) > 0:
        raise BadInput(
            "extract_layer",
            f"{row.name} stores vectors of layer {row.layer!r} ({row.dim}-d); {layer!r} would make {dim}-d "
            f"vectors. Use {row.layer!r}, or another service",
        )
    set_layer(conn, service_id, layer, dim)


def delete_service(conn: Connection, name: str) -> ServiceRecord:
    """Delete the service (attached or detached) with its vectors, ROIs and build records (cascades),
    and the images no other service still uses."""
    record = find_service(conn, name)
    if record is None:
        raise NotFound(f"service {name!r} not found")
    orphans = conn.execute(
        text(
            "SELECT coalesce(array_agg(DISTINCT image_id), '{}') FROM ("
            " SELECT image_id FROM embedding WHERE service_id = :sid UNION ALL"
            " SELECT image_id FROM roi WHERE service_id = :sid) AS used"
        ),
        {"sid": record.id},
    ).scalar_one()
    conn.execute(_service.delete().where(_service.c.id == record.id))
    conn.execute(
        text(
            "DELETE FROM image i WHERE i.id = ANY(:ids)"
            " AND NOT EXISTS (SELECT 1 FROM embedding e WHERE e.image_id = i.id)"
            " AND NOT EXISTS (SELECT 1 FROM roi r WHERE r.image_id = i.id)"
        ),
        {"ids": list(orphans)},
    )
    return record


def count_vectors(conn: Connection, service_id: int) -> int:
    return int(conn.execute(select(func.count()).where(Embedding.service_id == service_id)).scalar_one())
