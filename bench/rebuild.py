"""Rebuild under load: concurrent search clients (threads, as an API process serves them) look up the
current generation through `IndexCache` and search end to end, before, during and after a rebuild of the
same index in this process. Every exception, and every answer with fewer than k hits, is an error."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bench import percentile
from bench.data import Database
from simsearch.index import IndexCache, build_generation
from simsearch.search import SearchOptions, search_vectors
from simsearch.store import ServiceRecord

PHASES = ("before", "during", "after")
MAX_SAMPLES = 5  # error messages kept


@dataclass(frozen=True, slots=True)
class PhaseStats:
    phase: str
    seconds: float
    searches: int
    errors: int
    p50_ms: float
    p99_ms: float

    @property
    def qps(self) -> float:
        return self.searches / self.seconds if self.seconds else float("nan")


@dataclass(frozen=True, slots=True)
class RebuildResult:
    index_type: str
    clients: int
    listening: bool  # IndexCache followed LISTEN/NOTIFY announcements (as the API app does)
    rebuild_seconds: float
    old_generation: int
    new_generation: int
    swap_seconds: float  # from the rebuild's return to the first search answered by the new generation
    phases: list[PhaseStats]
    error_samples: list[str]

    @property
    def errors(self) -> int:
        return sum(p.errors for p in self.phases)

    def phase(self, name: str) -> PhaseStats:
        return next(p for p in self.phases if p.phase == name)


@dataclass
class _Log:
    """What the clients record, under one lock."""

    phase: str = "before"
    latencies: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PHASES})
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PHASES, 0))
    samples: list[str] = field(default_factory=list)
    first_new: float | None = None  # perf_counter when a search first answered from the new generation
    new_generation: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, phase: str, seconds: float, error: str | None, generation: int | None, done: float) -> None:
        with self.lock:
            self.latencies[phase].append(seconds)
            if error is not None:
                self.errors[phase] += 1
                if len(self.samples) < MAX_SAMPLES:
                    self.samples.append(f"{phase}: {error}")
            if self.first_new is None and generation is not None and generation == self.new_generation:
                self.first_new = done


def _start_listening(cache: IndexCache) -> bool:
    """Follow new generations by LISTEN/NOTIFY where this IndexCache can (as the API app does)."""
    listen: Callable[[], object] | None = getattr(cache, "listen", None)
    if listen is None:
        return False
    listen()
    wait: Callable[[float], bool] | None = getattr(cache, "wait_listening", None)
    return wait(10.0) if wait is not None else True


def bench_rebuild(
    db: Database,
    service: ServiceRecord,
    queries: np.ndarray,
    k: int,
    *,
    index_type: str,
    options: SearchOptions,
    clients: int = 8,
    before_seconds: float = 10.0,
    after_seconds: float = 3.0,
) -> RebuildResult:
    cache = IndexCache(db.engine)
    listening = _start_listening(cache)
    first = cache.current(service)
    assert first is not None
    log = _Log()
    stop = threading.Event()

    def client(number: int) -> None:
        i = number
        while not stop.is_set():
            query = queries[i % len(queries)][None, :]
            i += clients
            phase = log.phase
            started = time.perf_counter()
            error: str | None = None
            generation: int | None = None
            try:
                loaded = cache.current(service)
                generation = loaded.build.id if loaded is not None else None
                hits = search_vectors(db.engine, service, loaded, query, k, options)[0]
                if len(hits) != k:
                    error = f"{len(hits)} hits instead of {k}"
            except Exception as exc:  # every failure counts, whatever it is
                error = f"{type(exc).__name__}: {exc}"[:300]
            done = time.perf_counter()
            log.record(phase, done - started, error, generation, done)

    threads = [threading.Thread(target=client, args=(n,), name=f"bench-client-{n}") for n in range(clients)]
    marks = {"before": time.perf_counter()}
    for thread in threads:
        thread.start()
    try:
        time.sleep(before_seconds)
        log.phase, marks["during"] = "during", time.perf_counter()
        record = build_generation(db.engine, service, db.folder / "indexes", index_type=index_type)
        log.new_generation = record.id
        log.phase, marks["after"] = "after", time.perf_counter()
        time.sleep(after_seconds)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        close: Callable[[], object] | None = getattr(cache, "close", None)
        if close is not None:
            close()
    marks["end"] = time.perf_counter()
    ends = {"before": marks["during"], "during": marks["after"], "after": marks["end"]}
    phases = [
        PhaseStats(
            phase=p,
            seconds=ends[p] - marks[p],
            searches=len(log.latencies[p]),
            errors=log.errors[p],
            p50_ms=1000 * percentile(log.latencies[p], 50),
            p99_ms=1000 * percentile(log.latencies[p], 99),
        )
        for p in PHASES
    ]
    return RebuildResult(
        index_type=index_type,
        clients=clients,
        listening=listening,
        rebuild_seconds=marks["after"] - marks["during"],
        old_generation=first.build.id,
        new_generation=record.id,
        swap_seconds=log.first_new - marks["after"] if log.first_new is not None else float("nan"),
        phases=phases,
        error_samples=log.samples,
    )
