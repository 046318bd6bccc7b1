"""Benchmarks: `python -m bench` measures simsearch against references run in the same process and Postgres.

Every bench is a function that returns `Row`s (a measure, our number, the reference's number, their
ratio, and what the ratio should be), so the table and the JSON file come from the same values.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from faiss.contrib.evaluation import RepeatTimer


@dataclass(frozen=True, slots=True)
class Row:
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
    """Median wall time of `fn()` over `runs` timed calls after `warmup` untimed ones (faiss's RepeatTimer)."""
    timer = RepeatTimer(warmup=warmup, runs=warmup + runs)
    for _ in timer:
        fn()
    return float(np.median(timer.times))


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
