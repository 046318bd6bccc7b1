"""`--load N`: N busy processes beside a measurement, as a production host's workers and ingest keep its
cores busy. A search that spreads over every core then waits for cores this load holds."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.synchronize import Event

START_TIMEOUT_S = 60.0  # a spawned interpreter imports this package first


def _spin(started: Event) -> None:
    """Keep one core busy in pure Python (holding no lock the bench needs) until terminated."""
    started.set()
    x = 1
    while True:
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF


@contextmanager
def busy_processes(n: int) -> Iterator[None]:
    """N processes spinning on a core each for the block; stopped (terminated, joined) on the way out,
    whatever happens inside."""
    if n < 1:
        yield
        return
    # spawn, not fork: a fresh interpreter takes none of this process's threads or database connections
    context = multiprocessing.get_context("spawn")
    running: list[multiprocessing.process.BaseProcess] = []
    try:
        events = [context.Event() for _ in range(n)]
        for i, event in enumerate(events):
            process = context.Process(target=_spin, args=(event,), name=f"bench-load-{i}", daemon=True)
            process.start()
            running.append(process)
        deadline = time.monotonic() + START_TIMEOUT_S
        for event in events:
            if not event.wait(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"a --load process did not start within {START_TIMEOUT_S:.0f} s")
        yield
    finally:
        for proc in running:
            proc.terminate()
        for child in running:
            child.join(10)
