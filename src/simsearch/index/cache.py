"""IndexCache: each service's current generation, loaded once per process and swapped when a newer one is
ready; degraded, never dark, when it cannot be loaded.

A replica learns of new generations from the announcements (LISTEN/NOTIFY), from a poll of `index_build`
(where announcements cannot arrive: a read-only standby), and at start (every service's current
generation is fetched and loaded before the replica says it is ready). A generation that cannot be
loaded (store unreachable, missing file, checksum mismatch, unreadable) leaves the one held serving, or
none: searches then go exactly through Postgres. Its load is retried with backoff by a background
thread, logged once per generation and reason, and reported by `states()` for readiness.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

from simsearch import store
from simsearch.errors import Unavailable
from simsearch.index.artefacts import ArtefactError, ArtefactStore
from simsearch.index.generations import LoadedIndex, load_build
from simsearch.store import BuildRecord, ServiceRecord

log = logging.getLogger("simsearch.index")
_TICK_S = 0.25  # how often the upkeep thread looks for due retries and polls


@dataclass(frozen=True, slots=True)
class GenerationState:
    """One service as this process serves it (for readiness and metrics)."""

    service_id: int
    service: str
    current: int | None  # the newest ready generation this process has seen in Postgres
    loaded: int | None  # the generation it holds (answers come from it, plus the exact tail)
    degraded: str | None  # why `current` is not loaded: store unreachable, missing file, checksum mismatch, ...
    lag_s: float  # seconds since `current` was made ready while this process does not hold it (0: current)
    attempts: int  # failed loads of `current` so far


class _Slot:
    """A served service: what is held, what is current, and how loading the current one went."""

    def __init__(self, service: ServiceRecord) -> None:
        self.service = service
        self.held: LoadedIndex | None = None
        self.current: BuildRecord | None = None
        self.failed: int | None = None  # the generation whose load failed (retried at next_attempt)
        self.reason: str | None = None
        self.attempts = 0
        self.next_attempt = 0.0
        self.loading = threading.Lock()  # one loader per service; searches keep what they hold


class IndexCache:
    """Each service's current generation in this process.

    Without `listen()`, each lookup asks Postgres which generation is current (one indexed query) and
    loads a newer one itself. After `listen()`, a thread hears every new generation as its build commits
    and loads it for the services this process serves, so lookups cost nothing; another thread loads
    every service's generation at start, retries failed loads with backoff and, every `poll_s` seconds
    (0: never), asks Postgres for what the announcements may have missed. With `source` and `cache_dir`,
    generations are fetched from the artefact store into `cache_dir` and checked before loading; without,
    they are read in place from the folder their build recorded (one host).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        source: ArtefactStore | None = None,
        cache_dir: Path | None = None,
        poll_s: float = 0.0,
        retry_s: float = 1.0,
        max_retry_s: float = 60.0,
        announcements: bool = True,
    ) -> None:
        self._engine = engine
        self._source, self._cache_dir = source, cache_dir
        self._poll_s, self._retry_s, self._max_retry_s = poll_s, retry_s, max_retry_s
        self._announcements = announcements  # False: poll only (LISTEN cannot run, e.g. on a standby)
        self._slots: dict[int, _Slot] = {}
        self._known: set[int] = set()  # services whose current generation the announcements keep up to date
        self._logged: set[tuple[int, int, str]] = set()  # (service, generation, reason) already logged
        self._lock = threading.Lock()
        self._listening = threading.Event()
        self._warm = threading.Event()  # every service's generation was tried once at start
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---- lifecycle ---------------------------------------------------------------------------------

    def listen(self) -> None:
        """Start following the announcements, warming up and retrying (idempotent)."""
        if self._threads:
            return
        listener = threading.Thread(
            target=store.listen_generations,
            args=(self._engine, self._stop, self._announced, self._connected, self._listening.clear),
            name="simsearch-generations",
            daemon=True,
        )
        upkeep = threading.Thread(target=self._upkeep, name="simsearch-generation-upkeep", daemon=True)
        self._threads = [listener, upkeep] if self._announcements else [upkeep]
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def wait_listening(self, timeout: float) -> bool:
        return self._listening.wait(timeout)

    def wait_warm(self, timeout: float) -> bool:
        return self._warm.wait(timeout)

    @property
    def warm(self) -> bool:
        """Every service's generation was tried once since start (always true without `listen()`)."""
        return self._warm.is_set() or not self._threads

    def _connected(self) -> None:
        with self._lock:
            self._known.clear()  # what was announced while nobody listened is unknown: ask Postgres
        self._listening.set()

    # ---- lookups -----------------------------------------------------------------------------------

    def current(self, service: ServiceRecord) -> LoadedIndex | None:
        """The generation to search with (None: none is loaded, search exactly through Postgres)."""
        slot = self._slot(service)
        if self._listening.is_set() and service.id in self._known:
            return slot.held
        with self._engine.connect() as conn:
            build = store.current_build(conn, service.id)
        loaded = self._settle(slot, build, background=False)
        if self._listening.is_set():
            with self._lock:
                self._known.add(service.id)
        return loaded

    def invalidate(self, service_id: int) -> None:
        """Ask Postgres at the next lookup (this process just built: its own next search sees the build)."""
        with self._lock:
            self._known.discard(service_id)
            slot = self._slots.get(service_id)
            if slot is not None:
                slot.next_attempt = 0.0

    def forget(self, service_id: int) -> None:
        with self._lock:
            self._slots.pop(service_id, None)
            self._known.discard(service_id)

    def loaded(self) -> dict[int, int]:
        """service id -> generation loaded in this process (for health checks)."""
        with self._lock:
            return {sid: slot.held.build.id for sid, slot in self._slots.items() if slot.held is not None}

    def states(self) -> dict[int, GenerationState]:
        """service id -> how this process serves it (the services it serves or tried to)."""
        now = datetime.now(UTC)
        with self._lock:
            return {sid: _state(slot, now) for sid, slot in self._slots.items()}

    # ---- loading -----------------------------------------------------------------------------------

    def _slot(self, service: ServiceRecord) -> _Slot:
        with self._lock:
            slot = self._slots.get(service.id)
            if slot is None:  # before reading: an announcement from now on is acted on
                slot = self._slots[service.id] = _Slot(service)
            else:
                slot.service = service
            return slot

    def _settle(self, slot: _Slot, build: BuildRecord | None, *, background: bool) -> LoadedIndex | None:
        """Make `build` the held generation if it is newer and can be loaded; return what to search with.
        A request never retries a failed load while the upkeep thread does (nor before its backoff ends)."""
        with self._lock:
            if build is None or slot.current is None or slot.current.id <= build.id:
                slot.current = build
            if build is None:  # no generation any more (cleared): nothing to retry
                slot.failed, slot.reason, slot.attempts = None, None, 0
        if build is None:
            return None
        held = slot.held
        if held is not None and held.build.id >= build.id:
            return held
        if slot.failed == build.id and ((not background and self._threads) or time.monotonic() < slot.next_attempt):
            return held
        with slot.loading:
            held = slot.held
            if held is not None and held.build.id >= build.id:
                return held
            if slot.failed == build.id and time.monotonic() < slot.next_attempt:
                return held  # it failed while we waited for the lock
            try:
                fresh = load_build(slot.service, build, source=self._source, cache_dir=self._cache_dir)
            except Unavailable as exc:
                self._failed(slot, build, exc)
                return slot.held
            self._loaded(slot, fresh)
            return fresh

    def _loaded(self, slot: _Slot, fresh: LoadedIndex) -> None:
        with self._lock:
            recovered = slot.failed is not None and slot.failed <= fresh.build.id
            attempts = slot.attempts
            if slot.held is None or slot.held.build.id < fresh.build.id:
                slot.held = fresh
            if recovered:
                slot.failed, slot.reason, slot.attempts = None, None, 0
        if recovered:
            log.info(
                "generation %d of %s loaded after %d failed attempt(s)", fresh.build.id, slot.service.name, attempts
            )
        self._drop_cached(slot.service, keep=fresh.build.id)

    def _failed(self, slot: _Slot, build: BuildRecord, exc: Unavailable) -> None:
        reason = exc.reason if isinstance(exc, ArtefactError) else "unavailable"
        with self._lock:
            if slot.failed != build.id:
                slot.attempts = 0
            slot.failed, slot.reason = build.id, reason
            slot.attempts += 1
            delay = min(self._max_retry_s, self._retry_s * 2 ** (slot.attempts - 1))
            slot.next_attempt = time.monotonic() + delay
            first = (slot.service.id, build.id, reason) not in self._logged
            self._logged.add((slot.service.id, build.id, reason))
            held = slot.held.build.id if slot.held is not None else None
        if first:  # one line per generation and reason: no traceback, and not one per request or retry
            serving = f"generation {held}" if held is not None else "exact search through Postgres"
            log.warning(
                "generation %d of %s cannot be loaded (%s); serving %s meanwhile, retrying with backoff up to %.0f s",
                build.id,
                slot.service.name,
                exc.message,
                serving,
                self._max_retry_s,
            )

    def _drop_cached(self, service: ServiceRecord, *, keep: int) -> None:
        """Remove this replica's cached copies of older generations (a mapped file lives on until unmapped)."""
        if self._cache_dir is None or self._source is None:
            return
        for folder in (self._cache_dir / service.name).glob("gen-*"):
            if folder.name < f"gen-{keep:08d}":
                shutil.rmtree(folder, ignore_errors=True)

    # ---- background --------------------------------------------------------------------------------

    def _announced(self, service_id: int, build_id: int) -> None:
        slot = self._slots.get(service_id)
        if slot is None or (slot.held is not None and slot.held.build.id >= build_id):
            return  # not served here (loaded on first use), or already current
        with self._engine.connect() as conn:
            build = store.current_build(conn, service_id)  # the announced one, or newer still
        self._settle(slot, build, background=True)

    def _upkeep(self) -> None:
        """Warm up at start, then retry failed loads when due and poll every `poll_s`, until closed."""
        next_poll = time.monotonic() + self._poll_s
        reported = ""
        while not self._stop.is_set():
            try:
                if not self._warm.is_set():
                    self._warm_up()
                self._retry_due()
                if self._poll_s > 0 and time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + self._poll_s
                    self._poll()
            except Exception as exc:
                # an outage is logged once by the engine; anything else once per message, then retried
                message = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
                if store.database_unavailable(exc) is None and message != reported:
                    log.warning("generation upkeep failed (%s); retrying", message, exc_info=True)
                    reported = message
            self._stop.wait(_TICK_S)

    def _warm_up(self) -> None:
        """Load every service's current generation (a replica started after a build serves it at once)."""
        with self._engine.connect() as conn:
            services = store.list_services(conn)
            current = store.current_builds(conn, [s.id for s in services])
        for service in services:
            if service.id in current and not self._stop.is_set():
                self._settle(self._slot(service), current[service.id], background=True)
        self._warm.set()

    def _retry_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [s for s in self._slots.values() if s.failed is not None and s.next_attempt <= now]
        for slot in due:
            with self._engine.connect() as conn:
                build = store.current_build(conn, slot.service.id)
            self._settle(slot, build, background=True)

    def _poll(self) -> None:
        """Ask Postgres for the current generation of every served service (one query)."""
        with self._lock:
            slots = dict(self._slots)
        with self._engine.connect() as conn:
            current = store.current_builds(conn, list(slots))
        for service_id, build in current.items():
            slot = slots[service_id]
            if slot.held is None or slot.held.build.id < build.id:
                self._settle(slot, build, background=True)


def _state(slot: _Slot, now: datetime) -> GenerationState:
    current = slot.current.id if slot.current is not None else None
    loaded = slot.held.build.id if slot.held is not None else None
    behind = current is not None and (loaded is None or loaded < current)
    finished = slot.current.finished_at if slot.current is not None else None
    lag = max(0.0, (now - finished).total_seconds()) if behind and finished is not None else 0.0
    return GenerationState(
        service_id=slot.service.id,
        service=slot.service.name,
        current=current,
        loaded=loaded,
        degraded=slot.reason if behind and slot.failed == current else None,
        lag_s=round(lag, 3),
        attempts=slot.attempts if slot.failed == current else 0,
    )
