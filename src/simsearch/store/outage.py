"""What a database outage looks like from here: the errors that mean "Postgres cannot be reached,
refused us, or did not answer in time" become one `DatabaseUnavailable` (a 503 on both faces, one line
on the command line), an outage is logged once, and a pooled connection is checked with a deadline.
"""

from __future__ import annotations

import logging
import selectors
import threading
import time
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq
from sqlalchemy import exc as sa_exc

from simsearch.errors import DatabaseUnavailable

log = logging.getLogger("simsearch.store")

_CONNECT_HINT = "check that the server is running and reachable, and the host, port, user and password in DATABASE_URL"
_RETRY_HINT = "retry; check that the database server is running"
_TIMEOUTS = (pg_errors.QueryCanceled, pg_errors.LockNotAvailable)
_SHUTTING_DOWN = (pg_errors.AdminShutdown, pg_errors.CrashShutdown, pg_errors.CannotConnectNow)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return " ".join(lines[0].split()) if lines else type(error).__name__


def database_unavailable(error: BaseException, *, connecting: bool = False) -> DatabaseUnavailable | None:
    """`error` as a DatabaseUnavailable, or None when it is not about reaching the database (a bug, a
    constraint, a bad query stay what they are). `connecting`: it was raised while opening a connection."""
    if isinstance(error, DatabaseUnavailable):
        return error
    if isinstance(error, sa_exc.TimeoutError):  # the pool's: every connection stayed busy
        return DatabaseUnavailable(
            f"no free database connection in time ({_first_line(error)})",
            "retry; raise SIMSEARCH_DB_POOL_TIMEOUT_S, or serve with more workers",
        )
    if isinstance(error, sa_exc.DBAPIError):
        cause = error.orig if error.orig is not None else error
        if isinstance(cause, psycopg.OperationalError):
            return database_unavailable(cause, connecting=connecting)
        if error.connection_invalidated:
            return DatabaseUnavailable(f"lost the connection to the database ({_first_line(cause)})", _RETRY_HINT)
        return None
    if not isinstance(error, psycopg.OperationalError) or isinstance(error, pg_errors.ProgramLimitExceeded):
        return None  # (a value too large for an index is psycopg's OperationalError too, but no outage)
    text = _first_line(error)
    if isinstance(error, pg_errors.ConnectionTimeout):
        return DatabaseUnavailable(
            f"the database did not answer within the connect timeout ({text})",
            f"{_CONNECT_HINT}; or raise SIMSEARCH_DB_CONNECT_TIMEOUT_S",
        )
    if connecting:
        return DatabaseUnavailable(f"cannot connect to the database ({text})", _CONNECT_HINT)
    if isinstance(error, pg_errors.QueryCanceled):
        return DatabaseUnavailable(
            f"a statement was cancelled ({text})", "retry; raise SIMSEARCH_DB_STATEMENT_TIMEOUT_S for longer work"
        )
    if isinstance(error, pg_errors.LockNotAvailable):
        return DatabaseUnavailable(
            f"waited too long for a lock another transaction holds ({text})",
            "retry; raise SIMSEARCH_DB_LOCK_TIMEOUT_S, or find the long transaction in pg_stat_activity",
        )
    if isinstance(error, _SHUTTING_DOWN):
        return DatabaseUnavailable(f"the database is shutting down or starting up ({text})", "retry in a moment")
    return DatabaseUnavailable(f"the database could not serve the request ({text})", _RETRY_HINT)


def is_statement_timeout(error: BaseException) -> bool:
    """A statement or lock timeout: the database is up, one statement took too long."""
    cause = error.orig if isinstance(error, sa_exc.DBAPIError) else error
    return isinstance(cause, _TIMEOUTS)


class OutageLog:
    """Logs an outage once, when it starts (the operator's detail, no traceback), and once more when
    the database answers again; the requests that fail in between add nothing."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._down = False
        self._lock = threading.Lock()

    def failed(self, error: DatabaseUnavailable) -> None:
        with self._lock:
            if self._down:
                return
            self._down = True
        log.error(
            "database unavailable (%s): %s; requests answer 503 until it is back",
            self._name,
            error.for_operator(),
        )

    def answered(self) -> None:
        if not self._down:  # the usual case, without taking the lock
            return
        with self._lock:
            if not self._down:
                return
            self._down = False
        log.warning("database %s answers again", self._name)


def ping(conn: psycopg.Connection[Any], timeout_s: float | None) -> None:
    """`SELECT 1` on an idle connection, waiting at most `timeout_s` seconds for the answer.

    libpq has no limit for a server that took the query and then stays silent (a frozen one), and the
    server's statement_timeout cannot fire while it is stopped: this deadline is ours. Raises
    psycopg.OperationalError when the connection is broken or the time is up (it is unusable then).
    """
    pgconn = conn.pgconn
    if pgconn.transaction_status != pq.TransactionStatus.IDLE:
        return
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    pgconn.send_query(b"SELECT 1")
    with selectors.DefaultSelector() as selector:
        selector.register(pgconn.socket, selectors.EVENT_WRITE)
        while pgconn.flush():
            _wait(selector, deadline, timeout_s)
        selector.modify(pgconn.socket, selectors.EVENT_READ)
        while True:
            pgconn.consume_input()
            while not pgconn.is_busy():
                result = pgconn.get_result()
                if result is None:
                    return
                if result.status != pq.ExecStatus.TUPLES_OK:
                    raise psycopg.OperationalError((result.error_message or b"ping failed").decode(errors="replace"))
            _wait(selector, deadline, timeout_s)


def _wait(selector: selectors.BaseSelector, deadline: float | None, timeout_s: float | None) -> None:
    remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
    if not selector.select(remaining):
        raise psycopg.OperationalError(f"the database did not answer a ping within {timeout_s:g} s")
