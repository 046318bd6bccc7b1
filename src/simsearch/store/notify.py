"""Generation announcements over Postgres LISTEN/NOTIFY: every API process (and replica) learns that a
service has a new ready index generation the moment the build commits."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from sqlalchemy import Connection, Engine, text

from simsearch.store.outage import database_unavailable

CHANNEL = "simsearch_generation"
log = logging.getLogger("simsearch.store")


def announce_generation(conn: Connection, service_id: int, build_id: int) -> None:
    """Queue the announcement in the caller's transaction: listeners hear it only if it commits."""
    conn.execute(
        text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": f"{service_id}:{build_id}"}
    )


def listen_generations(
    engine: Engine,
    stop: threading.Event,
    on_generation: Callable[[int, int], None],
    on_connect: Callable[[], None],
    on_disconnect: Callable[[], None],
    *,
    poll_s: float = 1.0,
    retry_s: float = 2.0,
) -> None:
    """Call `on_generation(service_id, build_id)` for each announcement until `stop` is set.

    Runs on its own connection, taken out of the pool. `on_connect()` is called after every (re)connect,
    because announcements sent while no connection listened are lost (the caller re-reads what is
    current); `on_disconnect()` when the connection fails (a Postgres restart), retried every `retry_s`.
    A failing callback is logged and does not stop the listening.
    """
    failing = False  # log a lost connection once, not at every retry
    while not stop.is_set():
        try:
            raw = engine.raw_connection()
            conn = raw.driver_connection
            raw.detach()  # a session of its own: LISTEN must not leak into pooled connections
            if not isinstance(conn, psycopg.Connection):
                raise TypeError("LISTEN needs a psycopg connection")
            try:
                conn.rollback()
                conn.autocommit = True
                conn.execute(f"LISTEN {CHANNEL}")
                on_connect()
                failing = False
                while not stop.is_set():
                    for note in conn.notifies(timeout=poll_s):
                        service_id, _, build_id = note.payload.partition(":")
                        if service_id.isdigit() and build_id.isdigit():
                            try:
                                on_generation(int(service_id), int(build_id))
                            except Exception:
                                log.exception("loading announced generation %s failed", note.payload)
            finally:
                conn.close()
        except Exception as exc:
            if not failing:
                outage = database_unavailable(exc)  # an outage is no bug: its one line, without a traceback
                detail = outage.for_operator() if outage is not None else str(exc)
                log.warning(
                    "generation announcements: connection lost (%s), retrying every %.0f s",
                    detail,
                    retry_s,
                    exc_info=outage is None,
                )
            failing = True
            on_disconnect()
            stop.wait(retry_s)
