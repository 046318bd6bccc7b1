"""Observability of the HTTP app: request ids, the access and slow-request log lines, text or JSON logs, and
GET /metrics (Prometheus). `create_app` wires it: `configure_logging` once, `Observer` around Litestar's
whole ASGI handler (so 404s, 405s and errors of either face are observed too), `metrics` as a route.

Logs go through the standard library's `logging` with a small JSON formatter of ours rather than structlog:
every logger of the process (granian's, SQLAlchemy's, ours) then writes the same lines through one
handler, with no second logging system to configure and one dependency fewer."""

from __future__ import annotations

import hmac
import json
import logging
import re
import sys
import time
import traceback
import uuid
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from litestar import Request, Response, get
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import QueuePool

from simsearch import metrics
from simsearch.api.context import authorize, core_of, settings_of
from simsearch.core import Core
from simsearch.errors import DatabaseUnavailable, SimsearchError
from simsearch.settings import Settings

log = logging.getLogger("simsearch.access")

# a label value per method a client may send would be a label explosion: the rest count as OTHER
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# What a client's id may be: what tracing systems send (uuids, hex, ULIDs, "Root=1-..."-style), and nothing
# that could forge a log line or a header (spaces, quotes, control characters, non-ASCII). Else: a new one.
_SAFE_ID = re.compile(r"[A-Za-z0-9._:=+/-]{1,128}")
_request_id: ContextVar[str | None] = ContextVar("simsearch_request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request this code runs for (None outside a request)."""
    return _request_id.get()


def request_id_of(given: str | None) -> str:
    """The client's X-Request-ID when it is a safe one, else a new random id."""
    if given is not None and _SAFE_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


# ---- logs ------------------------------------------------------------------------------------------

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
# LogRecord's own attributes: everything else on a record came as `extra=` and goes into the JSON object
_RECORD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request_id"}


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every record (`-` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, request_id, the record's extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", "-")
        if request_id != "-":
            line["request_id"] = request_id
        line |= {k: v for k, v in record.__dict__.items() if k not in _RECORD_FIELDS and not k.startswith("_")}
        if record.exc_info:
            line["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return json.dumps(line, default=str, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever sys.stderr is when a line is written (a test runner swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # under the handler's lock: handle() holds it around emit()
        super().emit(record)


_OURS = "_simsearch_handler"


def configure_logging(settings: Settings) -> None:
    """Every log line of the process, on stderr, in the settings' format with the request id. Idempotent:
    a second app (tests) replaces the first one's handler. Granian's own loggers, where granian configured
    them (a worker of `simsearch serve`), write through the same handler."""
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else logging.Formatter(_TEXT_FORMAT))
    handler.addFilter(RequestIdFilter())
    setattr(handler, _OURS, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)  # as Litestar's own logging config had it: the same lines, in our format
    for name in ("_granian", "granian.access"):
        other = logging.getLogger(name)
        if other.handlers:
            other.handlers = [handler]


def granian_log_config(settings: Settings) -> dict[str, Any]:
    """Granian's `log_dictconfig` for `simsearch serve`: granian's own lines (its main process starts and
    stops workers; create_app never runs there) on stderr in the settings' format, like the app's."""
    formatter = {"()": JsonFormatter} if settings.log_format == "json" else {"format": _TEXT_FORMAT}
    handler = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "simsearch"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"simsearch": formatter},
        "handlers": {"simsearch": handler | {"filters": ["request_id"]}},
        "loggers": {
            "_granian": {"handlers": ["simsearch"], "level": "INFO", "propagate": False},
            "granian.access": {"handlers": ["simsearch"], "level": "INFO", "propagate": False},
        },
    }


# ---- the request wrapper ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Answer:
    status: int = 500  # when the app fails before it starts a response, the server answers 500


class Observer:
    """ASGI middleware around Litestar's whole handler: gives each HTTP request its id (a contextvar every
    log line reads, and the X-Request-ID header of the response), counts it by route template and status,
    times it, and writes its access line and slow-request warning."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.access_log = settings.access_log
        self.slow_ms = settings.slow_request_ms

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), None)
        request_id = request_id_of(given)
        token = _request_id.set(request_id)
        answer = _Answer()
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer.status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message["headers"] = [*headers, (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._done(scope, answer.status, time.perf_counter() - started)
            _request_id.reset(token)

    def _done(self, scope: HTTPScope, status: int, seconds: float) -> None:
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        route = scope.get("path_template") or "unmatched"  # set by Litestar's router once a route matched
        metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
        metrics.HTTP_REQUEST_SECONDS.labels(method, route).observe(seconds)
        ms = round(seconds * 1000, 1)
        fields = {"method": method, "route": route, "path": scope["path"], "status": status, "duration_ms": ms}
        if self.access_log:
            log.info("%s %s %d %.1f ms", method, scope["path"], status, ms, extra=fields)
        if self.slow_ms and seconds * 1000 > self.slow_ms:
            log.warning(
                "slow request: %s %s %d took %.1f ms (SIMSEARCH_SLOW_REQUEST_MS=%g)",
                *(method, scope["path"], status, ms, self.slow_ms),
                extra=fields,
            )


# ---- /metrics --------------------------------------------------------------------------------------

_SCRAPE_STATEMENT_MS = 3000  # the database part of a scrape: Prometheus' default scrape timeout is 10 s
_MAX_SERVICES = 1000  # a bound on the series of one scrape
_STATE_SQL = text(
    f"""
SELECT s.id, s.name, b.id AS generation, b.vector_count, b.finished_at,
       extract(epoch FROM b.finished_at - b.started_at) AS build_s,
       extract(epoch FROM now() - b.finished_at) AS age_s,
       (SELECT count(*) FROM embedding e WHERE e.service_id = s.id AND e.id > coalesce(b.watermark, 0)) AS unindexed
FROM service s
LEFT JOIN LATERAL (
    SELECT * FROM index_build ib WHERE ib.service_id = s.id AND ib.status = 'ready' ORDER BY ib.id DESC LIMIT 1
) b ON true
WHERE s.detached_at IS NULL
ORDER BY s.id
LIMIT {_MAX_SERVICES}
"""
)
_BUILDS_SQL = text(
    "SELECT service_id, status, count(*) AS builds, extract(epoch FROM max(finished_at)) AS last_finished"
    " FROM index_build GROUP BY service_id, status"
)


@dataclass(frozen=True, slots=True)
class _State:
    services: list[Any]  # rows of _STATE_SQL
    builds: list[Any]  # rows of _BUILDS_SQL


def _read_state(engine: Engine) -> _State:
    with engine.begin() as conn:
        conn.execute(text(f"SET LOCAL statement_timeout = {_SCRAPE_STATEMENT_MS}"))
        return _State(list(conn.execute(_STATE_SQL)), list(conn.execute(_BUILDS_SQL)))


def _gauge(name: str, documentation: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


def _pool_metrics(engine: Engine) -> Iterator[Metric]:
    pool = engine.pool
    if not isinstance(pool, QueuePool):  # a NullPool (migrations, some tests) has nothing to report
        return
    size = _gauge("simsearch_db_pool_size", "Connections the pool keeps open (its pool_size).")
    size.add_metric([], pool.size())
    used = _gauge("simsearch_db_pool_checked_out", "Database connections in use by this process now.")
    used.add_metric([], pool.checkedout())
    overflow = _gauge("simsearch_db_pool_overflow", "Connections open beyond pool_size now (negative: fewer open).")
    overflow.add_metric([], pool.overflow())
    yield from (size, used, overflow)


def _service_metrics(state: _State, loaded: dict[int, int]) -> Iterator[Metric]:
    current = _gauge("simsearch_generation_current", "The service's current (newest ready) generation.", ["service"])
    here = _gauge("simsearch_generation_loaded", "The generation this process has loaded.", ["service"])
    lag = _gauge(
        "simsearch_generation_lag_seconds",
        "For a service this process serves: 0 when it has the current generation loaded, else seconds since "
        "that generation was ready.",
        ["service"],
    )
    in_index = _gauge("simsearch_generation_vectors", "Vectors in the current generation.", ["service"])
    tail = _gauge(
        "simsearch_unindexed_vectors",
        "Vectors stored since the current generation (all of them when none): searched exactly on every query.",
        ["service"],
    )
    took = _gauge("simsearch_generation_build_seconds", "How long the current generation took to build.", ["service"])
    for row in state.services:
        labels = [row.name]
        tail.add_metric(labels, row.unindexed)
        if row.generation is not None:
            current.add_metric(labels, row.generation)
            in_index.add_metric(labels, row.vector_count)
            took.add_metric(labels, float(row.build_s or 0))
        if row.id in loaded:
            here.add_metric(labels, loaded[row.id])
            behind = row.generation is not None and loaded[row.id] < row.generation
            lag.add_metric(labels, float(row.age_s or 0) if behind else 0.0)
    yield from (current, here, lag, in_index, tail, took)


def _build_metrics(state: _State) -> Iterator[Metric]:
    names = {row.id: row.name for row in state.services}
    builds = _gauge(
        "simsearch_builds", "Index builds recorded in the database, by service and status.", ["service", "status"]
    )
    last = _gauge(
        "simsearch_build_last_finished_timestamp_seconds",
        "When the service's last build of this status (ready, failed, retired) finished, as a Unix time.",
        ["service", "status"],
    )
    for row in state.builds:
        if (name := names.get(row.service_id)) is None:
            continue
        builds.add_metric([name, row.status], row.builds)
        if row.last_finished is not None:
            last.add_metric([name, row.status], float(row.last_finished))
    yield from (builds, last)


class StateCollector(Collector):
    """What is read at scrape time: the database's state of each service (one bounded round trip), this
    process's loaded generations and its pool. A database that does not answer is `simsearch_database_up 0`,
    not a failed scrape."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def collect(self) -> Iterator[Metric]:
        yield from _pool_metrics(self.core.engine)
        up = _gauge("simsearch_database_up", "1 when the database answered this scrape's queries, else 0.")
        try:
            state = _read_state(self.core.engine)
        except (SQLAlchemyError, SimsearchError) as exc:
            if not isinstance(exc, DatabaseUnavailable):  # an outage is logged once, by its engine
                log.warning("metrics: the database state was not read: %s", str(exc).splitlines()[0][:300])
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from _service_metrics(state, self.core.indexes.loaded())
        yield from _build_metrics(state)


def _bearer_is(connection: ASGIConnection[Any, Any, Any, Any], *tokens: str | None) -> bool:
    header = connection.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return False
    return any(t is not None and hmac.compare_digest(given.strip().encode(), t.encode()) for t in tokens)


def metrics_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """SIMSEARCH_METRICS_TOKEN (or the admin token) when it is set; otherwise what reads take."""
    settings = settings_of(connection)
    if settings.metrics_token is None:
        authorize(connection, "read")
        return
    admin = settings.api_token.get_secret_value() if settings.api_token else None
    if not _bearer_is(connection, settings.metrics_token.get_secret_value(), admin):
        raise NotAuthorizedException(
            "GET /metrics needs `Authorization: Bearer <SIMSEARCH_METRICS_TOKEN>`",
            headers={"WWW-Authenticate": "Bearer"},
        )


# Prometheus' classic text format: what every Prometheus version parses (prometheus-client's "latest" is 1.0.0)
_TEXT_FORMAT_0_0_4 = "text/plain; version=0.0.4; charset=utf-8"


@get("/metrics", guards=[metrics_guard], include_in_schema=False, sync_to_thread=True)
def metrics_route(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Prometheus metrics of this process: its requests and searches, and the state read at scrape time."""
    state = CollectorRegistry(auto_describe=False)
    state.register(StateCollector(core_of(request)))
    body = generate_latest(REGISTRY) + generate_latest(state)
    return Response(body, media_type=_TEXT_FORMAT_0_0_4)
