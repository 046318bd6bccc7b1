"""The CLI, as a subprocess, when the database is not what it needs: one line on stderr saying what failed
and what to do, a non-zero exit, no traceback and no password."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url
from tests.conftest import subprocess_env
from tests.own_postgres import PASSWORD, ScratchPostgres, free_port, install_without_pgvector, own_postgres
from tests.test_cli import run


@pytest.fixture(scope="module")
def postgres() -> Iterator[ScratchPostgres]:
    with own_postgres() as server:
        yield server


def _env(tmp_path: Path, database_url: str) -> dict[str, str]:
    return subprocess_env(tmp_path, database_url=database_url, SIMSEARCH_DB_CONNECT_TIMEOUT_S="2")


def _one_line_error(env: dict[str, str], *args: str) -> str:
    done = run(env, *args, ok=False)
    assert done.returncode != 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), done.stderr
    return lines[0]


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    url = f"postgresql://someone:{PASSWORD}@127.0.0.1:{free_port()}/nowhere"
    line = _one_line_error(_env(tmp_path, url), "service", "list")
    assert "cannot connect to the database" in line
    assert "DATABASE_URL" in line
    assert PASSWORD not in line


def test_a_wrong_password_is_one_line(tmp_path: Path, postgres: ScratchPostgres) -> None:
    line = _one_line_error(_env(tmp_path, postgres.url(password="not-the-password")), "db", "upgrade")  # noqa: S106
    assert "password authentication failed" in line
    assert "user and password in DATABASE_URL" in line
    assert "not-the-password" not in line


def test_a_url_of_another_database_is_one_line(tmp_path: Path) -> None:
    line = _one_line_error(_env(tmp_path, "mysql://root:hunter2@localhost/photos"), "service", "list")
    assert "DATABASE_URL" in line
    assert "PostgreSQL" in line
    assert "hunter2" not in line


def test_upgrade_without_pgvector_on_the_server_says_to_install_it(tmp_path: Path) -> None:
    with install_without_pgvector() as bin_dir, own_postgres(bin_dir=bin_dir) as bare:
        line = _one_line_error(_env(tmp_path, bare.create_database("novector")), "db", "upgrade")
    assert "pgvector is not installed on the database server" in line
    assert "superuser" not in line


def test_upgrade_as_a_role_that_may_not_create_the_extension_says_who_must(server_url: str, tmp_path: Path) -> None:
    role, database = f"plain_{uuid.uuid4().hex[:8]}", f"noext_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER')
        conn.execute(f'CREATE DATABASE "{database}" OWNER "{role}"')
    url = make_url(server_url).set(username=role, database=database).render_as_string(hide_password=False)
    line = _one_line_error(_env(tmp_path, url), "db", "upgrade")
    assert "Docker" not in line
    assert f"a superuser must run `CREATE EXTENSION vector;` in database {database}" in line
    # what it says is enough: once a superuser has done it, the role migrates the rest itself
    with psycopg.connect(make_url(server_url).set(database=database).render_as_string(hide_password=False)) as conn:
        conn.execute("CREATE EXTENSION vector")
        conn.commit()
    assert "database at revision" in run(_env(tmp_path, url), "db", "upgrade").stderr
