"""Benchmarks: `python -m bench` measures simsearch against references run in the same process and Postgres.

Every bench returns typed results; the headline numbers become `Row`s (a measure, a number A, a number B,
their ratio A / B, and what the ratio should be), so the table and the JSON file come from the same values.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Row:
    """A headline number: `ratio` = `ours` / `reference`. For "pgvector's time / ours" rows, `ours` holds
    pgvector's time (the measure's text says which is which; the table heads the columns A and B)."""

    measure: str
    ours: float
    reference: float
    unit: str
    aim: str = ""  # the design target for the ratio, e.g. "<= 1.3"; empty for rows that only inform
    key: str | None = None  # the ratio's key in the JSON file; None: not written

    @property
    def ratio(self) -> float:
        return self.ours / self.reference if self.reference else float("nan")


def median_seconds(fn: Callable[[], object], *, warmup: int = 1, runs: int = 3) -> float:
    """Median wall time of `fn()` over `runs` timed calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def paired_median_seconds(
    ours: Callable[[], object], reference: Callable[[], object], *, warmup: int = 1, runs: int = 3
) -> tuple[float, float]:
    """Median wall times of `ours()` and `reference()`, timed in alternation (ABBA order) after `warmup`
    untimed calls of each, so that load from elsewhere on the machine weighs on both alike."""
    for _ in range(warmup):
        ours()
        reference()
    times: dict[int, list[float]] = {0: [], 1: []}
    fns = (ours, reference)
    for i in range(runs):
        for which in (0, 1) if i % 2 == 0 else (1, 0):
            started = time.perf_counter()
            fns[which]()
            times[which].append(time.perf_counter() - started)
    return statistics.median(times[0]), statistics.median(times[1])


def interleaved_medians(fns: dict[str, Callable[[], object]], *, runs: int) -> dict[str, float]:
    """Median wall time of each function over `runs` rounds; each round calls every function once, in
    alternating order (forwards, then backwards), so load from elsewhere weighs on all of them alike."""
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(runs):
        for name in names if i % 2 == 0 else reversed(names):
            started = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) for name, t in times.items()}


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of `values`, NaN when there are none."""
    return float(np.percentile(values, q)) if values else float("nan")


def percentiles(samples_ms: list[float]) -> tuple[float, float]:
    ordered = sorted(samples_ms)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def concurrent_qps(make_worker: Callable[[], Callable[[int], object]], count: int, clients: int) -> tuple[float, float]:
    """(calls per second, p99 ms) of `clients` threads sharing `count` calls, each thread its own worker
    (its own HTTP client or database connection), all released at once by a barrier."""
    workers = [make_worker() for _ in range(clients)]
    for worker in workers:
        worker(0)  # warm: connected, prepared
    barrier = threading.Barrier(clients + 1)
    latencies: list[list[float]] = [[] for _ in range(clients)]

    def run(n: int) -> None:
        barrier.wait()
        for i in range(n, count, clients):
            started = time.perf_counter()
            workers[n](i)
            latencies[n].append((time.perf_counter() - started) * 1000)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    return count / seconds, percentiles([x for per in latencies for x in per])[1]
