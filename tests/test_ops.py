"""Operations, as an operator runs them: `simsearch db current|history|downgrade` and `simsearch serve
--no-migrate` as real processes, on a scratch database of the test server, with the owner's role and with
a role that may read and write rows but not change the schema."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from litestar.testing import TestClient
from sqlalchemy.engine import make_url
from tests.conftest import _fresh_database, subprocess_env
from tests.own_postgres import free_port
from tests.test_cli import SIMSEARCH, run

from simsearch import store
from simsearch.errors import Unavailable
from simsearch.settings import Settings

REVISIONS = [r.revision for r in store.db.revisions()]  # newest first
HEAD, PREVIOUS = REVISIONS[0], REVISIONS[1]
ROLE_PASSWORD = "app-role-pw"  # noqa: S105 - a scratch role's


@dataclass(frozen=True)
class Scratch:
    url: str  # the owner's (the test server's superuser)
    name: str


@pytest.fixture
def scratch(server_url: str) -> Iterator[Scratch]:
    """A new, empty database on the test server, dropped after the test."""
    name = f"ops_{uuid.uuid4().hex[:10]}"
    url = _fresh_database(server_url, name)
    yield Scratch(url, name)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrate_to(url: str, revision: str) -> None:
    engine = store.make_engine(url)
    try:
        store.upgrade(engine, revision)
    finally:
        engine.dispose()


def ops_env(tmp_path: Path, url: str, **extra: str) -> dict[str, str]:
    home = tmp_path / f"home-{uuid.uuid4().hex[:6]}"
    home.mkdir()
    return subprocess_env(home, database_url=url, **extra)


def psql_url(url: str) -> str:
    """`url` as libpq takes it (SQLAlchemy's +psycopg driver name dropped)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def app_role(server_url: str, scratch: Scratch) -> Iterator[str]:
    """The URL of a role that may connect and read and write the scratch database's rows (as the migrations
    leave them, and those a later migration adds) but create, alter and drop nothing."""
    role = f"ops_app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{ROLE_PASSWORD}'")
        conn.execute(f'GRANT CONNECT ON DATABASE "{scratch.name}" TO {role}')
    with psycopg.connect(psql_url(scratch.url), autocommit=True) as conn:
        conn.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        # the tables and sequences the owner's migrations create from now on
        for grant in ("SELECT, INSERT, UPDATE, DELETE ON TABLES", "USAGE, SELECT ON SEQUENCES"):
            conn.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT {grant} TO {role}")
    yield make_url(scratch.url).set(username=role, password=ROLE_PASSWORD).render_as_string(hide_password=False)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{scratch.name}" WITH (FORCE)')  # its grants go with it
        conn.execute(f"DROP ROLE IF EXISTS {role}")


def refused_in_one_line(done: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The command failed with one `error:` line naming each needle, and no traceback."""
    assert done.returncode != 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def serve(env: dict[str, str], *flags: str, timeout: float = 120) -> subprocess.CompletedProcess[str] | str:
    """Start `simsearch serve`: the finished process when it exits by itself (a refusal), else the base URL
    it answered /api/v1/health 200 on (the process is stopped before this returns)."""
    port = free_port()
    process = subprocess.Popen(
        [SIMSEARCH, "serve", "--port", str(port), *flags],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                stdout, stderr = process.communicate()
                return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
            try:
                if httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200:
                    check_rows(base)
                    return base
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError("serve neither answered nor exited")
    finally:
        if process.poll() is None:
            process.terminate()
            process.communicate(timeout=60)


def check_rows(base: str) -> None:
    """The served role reads and writes rows: a service is created, listed and deleted over HTTP (DeepDetect's
    face: its routes take the core from the request)."""
    name = f"ops{uuid.uuid4().hex[:6]}"
    body = {
        "mllib": "torch",
        "parameters": {"input": {"width": 32, "height": 32}, "mllib": {"template": "resnet18", "weights": "none"}},
    }
    created = httpx.put(f"{base}/services/{name}", json=body, timeout=120)
    assert created.status_code == 201, created.text
    assert name in httpx.get(f"{base}/info", timeout=30).text
    deleted = httpx.delete(f"{base}/services/{name}", params={"clear": "full"}, timeout=30)
    assert deleted.status_code == 200, deleted.text


def history_lines(env: dict[str, str]) -> list[str]:
    return [
        line for line in run(env, "db", "history").stdout.splitlines() if line.split() and line.split()[0].isdigit()
    ]


def test_db_current_history_and_downgrade(scratch: Scratch, tmp_path: Path) -> None:
    env = ops_env(tmp_path, scratch.url)
    empty = run(env, "db", "current").stdout
    assert "none" in empty
    assert "simsearch db upgrade" in empty
    assert run(env, "db", "current", "--check", ok=False).returncode == 1
    run(env, "db", "upgrade")
    assert run(env, "db", "current").stdout.split() == [HEAD, "(head)"]
    run(env, "db", "current", "--check")
    lines = history_lines(env)
    assert [line.split()[0] for line in lines] == REVISIONS  # newest first
    assert "current" in lines[0]
    assert "head" in lines[0]
    assert not any("current" in line for line in lines[1:])
    # without --yes it asks; anything but yes leaves the schema as it was
    declined = subprocess.run(
        [SIMSEARCH, "db", "downgrade", PREVIOUS], env=env, input="n\n", capture_output=True, text=True, check=False
    )
    assert declined.returncode != 0
    assert f"from revision {HEAD} to {PREVIOUS}" in declined.stdout + declined.stderr
    assert run(env, "db", "current").stdout.split()[0] == HEAD
    run(env, "db", "downgrade", PREVIOUS, "--yes")
    behind = run(env, "db", "current").stdout
    assert behind.split()[0] == PREVIOUS
    assert "behind" in behind
    assert HEAD in behind
    assert run(env, "db", "current", "--check", ok=False).returncode == 1
    lines = history_lines(env)
    assert [line.split()[0] for line in lines if "current" in line] == [PREVIOUS]
    unknown = run(env, "db", "downgrade", "0099", "--yes", ok=False)
    assert unknown.returncode == 2
    refused_in_one_line(unknown, "0099")
    assert "Example" in run(env, "db", "downgrade", "--help").stdout
    assert "Example" in run(env, "db", "history", "--help").stdout


def test_serve_no_migrate_refuses_a_database_behind_head(scratch: Scratch, tmp_path: Path) -> None:
    migrate_to(scratch.url, PREVIOUS)
    for env, flags in (
        (ops_env(tmp_path, scratch.url), ("--no-migrate",)),
        (ops_env(tmp_path, scratch.url, SIMSEARCH_MIGRATE="false"), ()),  # the setting, for a unit file
    ):
        done = serve(env, *flags)
        assert isinstance(done, subprocess.CompletedProcess), "served a database behind head"
        refused_in_one_line(done, PREVIOUS, HEAD, "simsearch db upgrade")
    engine = store.make_engine(scratch.url)
    try:
        assert store.db.current_revision(engine) == PREVIOUS  # untouched
    finally:
        engine.dispose()
    assert isinstance(serve(ops_env(tmp_path, scratch.url, SIMSEARCH_MIGRATE="false"), "--migrate"), str)


def leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


def test_the_app_checks_the_schema_instead_of_migrating_when_told(scratch: Scratch, tmp_path: Path) -> None:
    from simsearch.api import create_app  # here: the other tests run the app in its own process

    migrate_to(scratch.url, PREVIOUS)
    app = create_app(Settings.model_validate({"database_url": scratch.url, "home": tmp_path, "migrate": False}))
    with pytest.raises(BaseExceptionGroup) as raised, TestClient(app):  # the lifespan's error, grouped by anyio
        pass
    [refusal] = leaves(raised.value)
    assert isinstance(refusal, Unavailable)
    assert "simsearch db upgrade" in refusal.message
    engine = store.make_engine(scratch.url)
    try:
        assert store.db.current_revision(engine) == PREVIOUS
    finally:
        engine.dispose()


def test_a_role_without_ddl_rights_serves_with_no_migrate(scratch: Scratch, app_role: str, tmp_path: Path) -> None:
    migrate_to(scratch.url, PREVIOUS)
    env = ops_env(tmp_path, app_role)
    plain = serve(env)
    assert isinstance(plain, subprocess.CompletedProcess), "migrated without DDL rights"
    refused_in_one_line(plain, "may not change the schema", "simsearch db upgrade", "--no-migrate")
    behind = serve(env, "--no-migrate")
    assert isinstance(behind, subprocess.CompletedProcess)
    refused_in_one_line(behind, "simsearch db upgrade")
    run(ops_env(tmp_path, scratch.url), "db", "upgrade")  # once per release, by the owner
    assert isinstance(serve(env, "--no-migrate"), str)
