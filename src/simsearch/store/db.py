"""Engines on any Postgres >= 15 with pgvector (or the embedded one, store.embedded), with timeouts and
outage handling; migrations."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config
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

__all__ = ["EMBEDDED_DATABASE", "Timeouts", "embedded_postgres", "make_engine", "unbounded", "upgrade"]

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


def unbounded(conn: Connection) -> None:
    """Lift the statement and lock timeouts for the rest of the caller's transaction, for work that may
    rightly take long: waiting for another build or migration, reading every vector of a service."""
    conn.execute(text("SELECT set_config('statement_timeout', '0', true), set_config('lock_timeout', '0', true)"))


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply the Alembic migrations up to `revision` (one transaction each). An advisory lock makes
    concurrent callers (several API workers starting at once) wait for each other."""
    with engine.connect() as lock:
        unbounded(lock)  # waiting for another process's migrations is the point
        lock.execute(text("SELECT pg_advisory_lock(:a, :b)"), _MIGRATION_LOCK)
        lock.commit()
        try:
            _create_vector_extension(lock)
            # Migrations may rewrite big tables: no timeouts, and no connection of theirs left in the pool.
            url = engine.url.render_as_string(hide_password=False)
            migrator = make_engine(url, poolclass=NullPool, log_outages=False)  # the caller reports errors
            try:
                command.upgrade(alembic_config(migrator), revision)
            finally:
                migrator.dispose()
        finally:
            lock.execute(text("SELECT pg_advisory_unlock(:a, :b)"), _MIGRATION_LOCK)
            lock.commit()
    engine.dispose()  # pooled connections opened before CREATE EXTENSION lack the vector type


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


def downgrade(engine: Engine, revision: str) -> None:
    command.downgrade(alembic_config(engine), revision)
    engine.dispose()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not conn.execute(text("SELECT to_regclass('alembic_version')")).scalar():
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
