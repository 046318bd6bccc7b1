"""Benchmarks: `python -m bench` measures simsearch against references run in the same process and Postgres.

Every bench is a function that returns `Row`s (a measure, our number, the reference's number, their
ratio, and what the ratio should be), so the table and the JSON file come from the same values.
"""

from __future__ import annotations

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
    aim: str = ""  # e.g. "<= 1.3"; empty for rows that are information only
    key: str | None = None  # the JSON key of the ratio; None: not in the JSON file

    @property
    def ratio(self) -> float:
        return self.ours / self.reference if self.reference else float("nan")


def median_seconds(fn: Callable[[], object], *, warmup: int = 1, runs: int = 5) -> float:
    """Median wall time of `fn()` over `runs` timed calls, after `warmup` untimed ones (faiss's RepeatTimer)."""
    timer = RepeatTimer(warmup=warmup, runs=warmup + runs)
    for _ in timer:
        fn()
    return float(np.median(timer.times))
