"""Engines on any Postgres >= 15 with pgvector (or the embedded one, store.embedded), with timeouts and
outage handling; migrations."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import psycopg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from pgvector.psycopg import register_vector
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError, ProgrammingError
from sqlalchemy.pool import ConnectionPoolEntry, NullPool, PoolProxiedConnection

from simsearch.errors import BadInput, Unavailable
from simsearch.store.embedded import EMBEDDED_DATABASE, embedded_postgres
from simsearch.store.outage import OutageLog, database_unavailable, is_statement_timeout, ping
from simsearch.store.sqlfiles import migrations_dir

log = logging.getLogger(__name__)

__all__ = [
    "EMBEDDED_DATABASE",
    "Revision",
    "SchemaState",
    "Timeouts",
    "check_at_head",
    "check_downgrade",
    "downgrade",
    "embedded_postgres",
    "make_engine",
    "revisions",
    "schema_state",
    "unbounded",
    "upgrade",
]

# TCP only (libpq ignores them on a Unix socket): a peer host that vanished without a word (no RST) is
# noticed by keepalives on an idle connection, and by tcp_user_timeout while data we sent stays unacked.
_TCP = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}
_TCP_USER_TIMEOUT_MS = 30_000
_MIGRATION_LOCK = {"a": 20949, "b": 0}  # pg_advisory_lock(a, b) keys


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long to wait for Postgres, in seconds (Settings.db_*; see the README's configuration table).

    `connect_s` bounds opening a connection (libpq's connect_timeout) and the ping of a pooled one before
    each use; `statement_s` and `lock_s` are the server's statement_timeout and lock_timeout (0: none);
    `pool_s` the wait for a free pooled connection."""

    connect_s: float
    statement_s: float
    lock_s: float
    pool_s: float


def sqlalchemy_url(url: str) -> str:
    """Accept postgres://, postgresql:// and postgresql+psycopg:// alike; we always drive psycopg 3."""
    try:
        parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    except ArgumentError:
        raise BadInput("DATABASE_URL", "not a URL; give postgresql://user:password@host:port/database") from None
    if parsed.get_backend_name() != "postgresql":
        raise BadInput(
            "DATABASE_URL",
            f"must be a PostgreSQL URL (postgresql://user:password@host:port/database), "
            f"not {parsed.get_backend_name()!r}",
        )
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def masked_url(url: str) -> str:
    """`url` with its password (in the authority or as ?password=) replaced by ***."""
    parsed = make_url(url)
    if "password" in parsed.query:
        parsed = parsed.update_query_dict({"password": "***"})
    return parsed.render_as_string(hide_password=True)


def _milliseconds(seconds: float) -> int:
    return math.ceil(seconds * 1000)


def _connect_args(url: URL, timeouts: Timeouts) -> dict[str, Any]:
    options = [
        str(url.query.get("options") or ""),
        f"-c statement_timeout={_milliseconds(timeouts.statement_s)}",
        f"-c lock_timeout={_milliseconds(timeouts.lock_s)}",
    ]
    return {
        "connect_timeout": max(1, math.ceil(timeouts.connect_s)),  # libpq: whole seconds (and 2 at least)
        "options": " ".join(o for o in options if o),
        "tcp_user_timeout": _TCP_USER_TIMEOUT_MS,
        **_TCP,
    }


def make_engine(
    url: str,
    *,
    timeouts: Timeouts | None = None,
    log_outages: bool = True,
    **kwargs: Any,  # noqa: ANN401 - create_engine's
) -> Engine:
    """An engine whose connections know pgvector's `vector` type (binary, as numpy arrays).

    Every pooled connection is pinged before use, within `timeouts.connect_s` (a frozen server does not
    answer at all); errors that mean the database is unreachable or too slow are raised as
    DatabaseUnavailable, and an outage is logged once (`log_outages=False`: the caller reports the
    error itself, as the CLI does). Without `timeouts`, nothing is bounded.
    """
    parsed = make_url(sqlalchemy_url(url))
    if timeouts is not None:
        kwargs = {"connect_args": _connect_args(parsed, timeouts), "pool_timeout": timeouts.pool_s, **kwargs}
    engine = create_engine(parsed, **kwargs)
    outage = OutageLog(masked_url(parsed.render_as_string(hide_password=False)))
    ping_s = timeouts.connect_s if timeouts is not None else None

    def connected(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:  # noqa: ANN401 - SQLAlchemy's
        _register_vector(dbapi_connection)
        record.info["fresh"] = True  # no ping needed before its first use
        outage.answered()

    def checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection) -> None:  # noqa: ANN401
        if record.info.pop("fresh", False):
            return
        try:
            ping(dbapi_connection, ping_s)
        except psycopg.Error as exc:
            raise DisconnectionError(f"pooled connection failed its ping: {exc}") from exc  # the pool reconnects
        outage.answered()

    def failed(context: ExceptionContext) -> BaseException | None:
        error = database_unavailable(context.original_exception, connecting=context.connection is None)
        if error is None or not log_outages:
            return error
        if is_statement_timeout(context.original_exception):
            log.warning("database: %s", error.for_operator())  # one request's statement, not an outage
        else:
            outage.failed(error)
        return error

    event.listen(engine, "connect", connected)
    event.listen(engine, "checkout", checkout)
    event.listen(engine, "handle_error", failed, retval=True)
    return engine


def _register_vector(dbapi_connection: Any) -> None:  # noqa: ANN401 - a psycopg connection
    try:
        register_vector(dbapi_connection)
    except psycopg.ProgrammingError:
        # The extension is created by `upgrade`, which disposes the pool afterwards.
        dbapi_connection.rollback()


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A connection for reads that need no common snapshot (one statement, or a search's rounds): in
    autocommit, so no BEGIN and ROLLBACK round trips around them (half of a service lookup's time)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        yield conn


def unbounded(conn: Connection) -> None:
    """Lift the statement and lock timeouts for the rest of the caller's transaction, for work that may
    rightly take long: waiting for another build or migration, reading every vector of a service."""
    conn.execute(
        text(
            "SELECT set_config('statement_timeout', '0', true), set_config('lock_timeout', '0', true), "
            # a build's snapshot stays open, idle, while it trains and writes: a server limit must not end it
            "set_config('idle_in_transaction_session_timeout', '0', true)"
        )
    )


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    config.attributes["engine"] = engine
    return config


@dataclass(frozen=True, slots=True)
class Revision:
    """One migration script: its id, the one it follows (None for the first) and its first docstring line."""

    revision: str
    down_revision: str | None
    description: str


@dataclass(frozen=True, slots=True)
class SchemaState:
    """Where a database's schema is (`current`: None for a database never migrated) and where this
    simsearch's migrations end (`head`)."""

    current: str | None
    head: str
    known: tuple[str, ...]  # every revision this simsearch has, newest first

    @property
    def at_head(self) -> bool:
        return self.current == self.head

    @property
    def ahead(self) -> bool:
        """Migrated by a newer simsearch: a revision these scripts do not have."""
        return self.current is not None and self.current not in self.known

    def describe(self) -> str:
        """`0004 (head)`, `0003 (behind head 0004: ...)`, as `db current` prints it."""
        if self.at_head:
            return f"{self.current} (head)"
        if self.ahead:
            return f"{self.current} (unknown to this simsearch, whose head is {self.head}: a newer one migrated it)"
        shown = self.current or "none (empty database)"
        return f"{shown} (behind head {self.head}: run `simsearch db upgrade`)"


def _scripts() -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return ScriptDirectory.from_config(config)


def revisions() -> list[Revision]:
    """This simsearch's migrations, newest first."""
    return [
        Revision(str(script.revision), cast("str | None", script.down_revision), str(script.doc or "").strip())
        for script in _scripts().walk_revisions()
    ]


def schema_state(engine: Engine) -> SchemaState:
    known = tuple(r.revision for r in revisions())
    return SchemaState(current=current_revision(engine), head=known[0], known=known)


def check_at_head(engine: Engine) -> SchemaState:
    """The schema's state when it is at this simsearch's head; otherwise Unavailable, saying what to run.
    For a process that may not (or should not) migrate: `serve --no-migrate`, SIMSEARCH_MIGRATE=false."""
    state = schema_state(engine)
    if state.at_head:
        return state
    if state.ahead:
        raise _ahead(state)
    raise Unavailable(
        f"database schema at revision {state.current or 'none (empty database)'}, this simsearch needs "
        f"{state.head} and may not migrate (--no-migrate, SIMSEARCH_MIGRATE=false): run `simsearch db upgrade` "
        "once with a role that may change the schema (DDL), then start again"
    )


def _ahead(state: SchemaState) -> Unavailable:
    return Unavailable(
        f"database schema at revision {state.current}, which this simsearch (head {state.head}) does not know: "
        f"a newer simsearch migrated it; run that version, or `simsearch db downgrade {state.head}` with it"
    )


@contextmanager
def _migrating(engine: Engine) -> Iterator[tuple[Connection, Config]]:
    """The migration lock held, and an Alembic config on an engine of its own: concurrent callers (several
    API workers starting at once) wait for each other."""
    with engine.connect() as lock:
        unbounded(lock)  # waiting for another process's migrations is the point
        lock.execute(text("SELECT pg_advisory_lock(:a, :b)"), _MIGRATION_LOCK)
        lock.commit()
        # Migrations may rewrite big tables: no timeouts, and no connection of theirs left in the pool.
        url = engine.url.render_as_string(hide_password=False)
        migrator = make_engine(url, poolclass=NullPool, log_outages=False)  # the caller reports errors
        try:
            yield lock, alembic_config(migrator)
        finally:
            migrator.dispose()
            lock.execute(text("SELECT pg_advisory_unlock(:a, :b)"), _MIGRATION_LOCK)
            lock.commit()
    engine.dispose()  # pooled connections opened before CREATE EXTENSION lack the vector type


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply the Alembic migrations up to `revision` (one transaction each), under the migration lock.
    A role that may not change the schema is told so in one line, with what to run instead."""
    with _migrating(engine) as (lock, config):
        _create_vector_extension(lock)
        state = schema_state(engine)
        if state.ahead:  # Alembic would say only that it cannot locate the revision
            raise _ahead(state)
        before = state.current
        try:
            command.upgrade(config, revision)
        except ProgrammingError as exc:
            if not isinstance(exc.orig, psycopg.errors.InsufficientPrivilege):
                raise
            raise _no_ddl(lock, before, exc.orig) from None


def _no_ddl(conn: Connection, before: str | None, error: psycopg.Error) -> Unavailable:
    conn.rollback()
    role, database = conn.execute(text("SELECT current_user, current_database()")).one()
    reason = " ".join(str(error).split("\n", 1)[0].split())
    return Unavailable(
        f"role {role} may not change the schema of database {database} (migrating from revision "
        f"{before or 'none'}: {reason}): run `simsearch db upgrade` once per release with a role that may (DDL), "
        "and serve with --no-migrate (SIMSEARCH_MIGRATE=false)"
    )


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate down to `revision` (a revision id, or `base`: nothing left), under the migration lock."""
    with _migrating(engine) as (_lock, config):
        try:
            command.downgrade(config, revision)
        except CommandError as exc:
            raise BadInput("REVISION", " ".join(str(exc).split())) from None


def check_downgrade(state: SchemaState, revision: str) -> None:
    """BadInput unless `revision` is one a downgrade from `state` may reach: a known revision not above
    the current one, or `base` (nothing left)."""
    known = list(state.known)
    if revision != "base" and revision not in known:
        raise BadInput("REVISION", f"unknown revision {revision!r}: give one of {', '.join(known)} or base")
    if state.current is None or state.current not in known:
        raise BadInput("REVISION", f"the database is at revision {state.current or 'none'}: nothing to downgrade")
    if revision != "base" and known.index(revision) < known.index(state.current):
        raise BadInput(
            "REVISION", f"{revision} is above the current revision {state.current}: go up with `simsearch db upgrade`"
        )


def _create_vector_extension(conn: Connection) -> None:
    """CREATE EXTENSION vector, or say precisely why it cannot be: pgvector is not installed on the
    server, or this role may not create it (only a superuser may: pgvector is not a trusted extension)."""
    created, available, database, role = conn.execute(
        text(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector'),"
            " EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector'), current_database(), current_user"
        )
    ).one()
    conn.commit()
    if created:
        return
    if not available:
        raise Unavailable(
            f"pgvector is not installed on the database server (database {database}): install it there "
            "(https://github.com/pgvector/pgvector#installation, or run the pgvector/pgvector Docker image), "
            "or leave DATABASE_URL unset for the embedded PostgreSQL, which has it"
        )
    try:
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
        conn.commit()
    except ProgrammingError as exc:
        conn.rollback()
        if not isinstance(exc.orig, psycopg.errors.InsufficientPrivilege):
            raise
        raise Unavailable(
            f"role {role} may not create the vector extension (pgvector is installed on the server): "
            f"a superuser must run `CREATE EXTENSION vector;` in database {database} once, then run "
            "`simsearch db upgrade` again"
        ) from None


def current_revision(engine: Engine) -> str | None:
    """The database's Alembic revision; None when it was never migrated."""
    with engine.connect() as conn:
        if not conn.execute(text("SELECT to_regclass('alembic_version')")).scalar():
            return None
        try:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except ProgrammingError as exc:
            if not isinstance(exc.orig, psycopg.errors.InsufficientPrivilege):
                raise
            conn.rollback()
            role = conn.execute(text("SELECT current_user")).scalar()
            raise Unavailable(
                f"role {role} may not read the table alembic_version: grant it SELECT, INSERT, UPDATE, DELETE on "
                "simsearch's tables (README, Without Docker)"
            ) from None
