"""index_build rows: one per generation, building -> ready (the newest ready is current) or failed."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Connection, Table, func, insert, select, text, update

from simsearch.store.db import unbounded
from simsearch.store.notify import announce_generation
from simsearch.store.records import BuildRecord
from simsearch.store.tables import IndexBuild

_build = cast(Table, IndexBuild.__table__)


_BUILD_LOCK = 0x51D5  # first key of the advisory locks that serialise the builds of one service
_WRITE_FENCE = 0x51D6  # first key of the locks that writers of a service share and a build's snapshot excludes


def lock_builds(conn: Connection, service_id: int) -> None:
    """Wait for, then hold until `conn` closes, the lock that serialises builds of one service (every
    process and replica of the API agrees on it, because it lives in Postgres)."""
    unbounded(conn)  # waiting for the other build, however long it takes, is the point
    conn.execute(text("SELECT pg_advisory_lock(:a, :b)"), {"a": _BUILD_LOCK, "b": service_id})


def unlock_builds(conn: Connection, service_id: int) -> None:
    conn.execute(text("SELECT pg_advisory_unlock(:a, :b)"), {"a": _BUILD_LOCK, "b": service_id})


def join_writers(conn: Connection, service_id: int) -> None:
    """Mark the caller's transaction as one that writes vectors of the service (held until it ends).

    Embedding ids are drawn when rows are written, not when they commit, so a build's snapshot must not
    be taken while such a transaction is open: a row it commits later could have an id below the
    build's watermark and be in neither the index nor the exact tail. Writers share this lock; a build
    takes it exclusively for the instant of its snapshot (`fence_writers`).
    """
    key = {"a": _WRITE_FENCE, "b": service_id}
    if conn.execute(text("SELECT pg_try_advisory_xact_lock_shared(:a, :b)"), key).scalar_one():
        return  # the usual case: no build is taking its snapshot (one round trip)
    # A build waits for the open writers to commit: wait for its snapshot however long those writers
    # take (they are requests like this one), then restore the timeouts for the rest of this write.
    previous = conn.execute(text("SELECT current_setting('statement_timeout'), current_setting('lock_timeout')")).one()
    unbounded(conn)  # a statement of its own: the next one's statement timer starts unbounded
    conn.execute(text("SELECT pg_advisory_xact_lock_shared(:a, :b)"), key)
    conn.execute(
        text("SELECT set_config('statement_timeout', :statement, true), set_config('lock_timeout', :lock, true)"),
        {"statement": previous[0], "lock": previous[1]},
    )


def fence_writers(conn: Connection, service_id: int) -> None:
    """In the caller's (short) transaction: wait until every open write transaction of the service has
    ended, and keep new ones from writing until this transaction ends. A build takes its snapshot in
    between, so every row committed after that snapshot was drawn after it, above its watermark."""
    unbounded(conn)  # waiting for writers to commit is the point
    conn.execute(text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": _WRITE_FENCE, "b": service_id})


def start_build(conn: Connection, service_id: int, backend: str, index_type: str, params: dict[str, Any]) -> int:
    row = conn.execute(
        insert(_build)
        .values(service_id=service_id, backend=backend, index_type=index_type, params=params, status="building")
        .returning(_build.c.id)
    ).one()
    return int(row[0])


def finish_build(
    conn: Connection,
    build_id: int,
    *,
    vector_count: int,
    watermark: int,
    path: str,
    timings: dict[str, Any],
    artefact: dict[str, Any] | None = None,
) -> None:
    """Mark the build ready and retire the generations it replaces, in the caller's transaction.

    `artefact`: where its files were published (artefact_key, artefact_size, artefact_sha256,
    artefact_files); replicas fetch them from there, `path` is only the builder's own folder."""
    service_id = conn.execute(
        update(_build)
        .where(_build.c.id == build_id)
        .values(
            status="ready",
            vector_count=vector_count,
            watermark=watermark,
            path=path,
            timings=timings,
            finished_at=text("now()"),
            **(artefact or {}),
        )
        .returning(_build.c.service_id)
    ).scalar_one()
    conn.execute(
        update(_build)
        .where(_build.c.service_id == service_id, _build.c.status == "ready", _build.c.id < build_id)
        .values(status="retired")
    )
    announce_generation(conn, service_id, build_id)


def fail_interrupted_builds(conn: Connection, service_id: int) -> int:
    """Mark `building` rows failed: called under the build lock, so no live process is building them
    (their builder died, e.g. SIGKILL or a machine crash). Returns how many there were."""
    result = conn.execute(
        update(_build)
        .where(_build.c.service_id == service_id, _build.c.status == "building")
        .values(
            status="failed",
            error="interrupted: the process building it stopped before it finished",
            finished_at=text("now()"),
        )
    )
    return int(result.rowcount)


def fail_build(conn: Connection, build_id: int, error: str) -> None:
    conn.execute(
        update(_build)
        .where(_build.c.id == build_id)
        .values(status="failed", error=error[:4000], finished_at=text("now()"))
    )


def current_build(conn: Connection, service_id: int) -> BuildRecord | None:
    row = conn.execute(
        select(_build)
        .where(_build.c.service_id == service_id, _build.c.status == "ready")
        .order_by(_build.c.id.desc())
        .limit(1)
    ).one_or_none()
    return BuildRecord(**row._mapping) if row is not None else None


def current_builds(conn: Connection, service_ids: list[int]) -> dict[int, BuildRecord]:
    """The current generation of each of the services that has one (one query: the poll of replicas
    that hear no announcements, e.g. on a read-only standby)."""
    if not service_ids:
        return {}
    newest = (
        select(func.max(_build.c.id))
        .where(_build.c.service_id.in_(service_ids), _build.c.status == "ready")
        .group_by(_build.c.service_id)
    )
    rows = conn.execute(select(_build).where(_build.c.id.in_(newest)))
    return {int(row.service_id): BuildRecord(**row._mapping) for row in rows}


def list_builds(conn: Connection, service_id: int) -> list[BuildRecord]:
    rows = conn.execute(select(_build).where(_build.c.service_id == service_id).order_by(_build.c.id.desc()))
    return [BuildRecord(**row._mapping) for row in rows]
