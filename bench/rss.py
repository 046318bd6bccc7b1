"""Peak memory of a build: `build_generation` in a fresh Python process (`python -m bench.rss ...`), which
imports only the store and the index engine, then reports its RSS just before the build and its peak RSS
after, with the build's wall time and the size of the index it wrote.

The peak is the kernel's high-water mark of the process's own memory (`VmHWM`, reset just before the build
where /proc/self/clear_refs allows). `ru_maxrss` is reported too but cannot serve: Linux carries the
parent's peak RSS into a child's `ru_maxrss` across fork + exec, so in a child of this (large) bench process
it starts at the bench's own peak."""

from __future__ import annotations

import contextlib
import gc
import json
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.data import Database
from simsearch import store
from simsearch.index import build_generation
from simsearch.store import ServiceRecord

ROOT = Path(__file__).resolve().parent.parent  # the checkout: `-m bench.rss` runs from here


@dataclass(frozen=True, slots=True)
class ChildBuild:
    index_type: str
    seconds: float  # build_generation, wall time
    vector_count: int
    rss_before: int  # bytes resident just before the build (after imports and the first connection)
    hwm_before: int  # VmHWM just before the build (after the reset, when it worked), bytes
    peak: int  # VmHWM after the build: the process's peak RSS, bytes
    maxrss_before: int  # ru_maxrss just before the build (inherits the parent's peak, see above), bytes
    maxrss_after: int  # ru_maxrss after the build, bytes
    index_bytes: int  # the generation's files on disk

    @property
    def peak_delta(self) -> int:
        """What the build added to the process at its peak."""
        return self.peak - self.rss_before


def build_in_fresh_process(db: Database, service: ServiceRecord, index_dir: Path, index_type: str) -> ChildBuild:
    """Run one build (a new current generation) in a fresh process and return what it measured."""
    command = [sys.executable, "-m", "bench.rss", db.url, service.name, str(index_dir), index_type]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise RuntimeError(f"the build in a fresh process failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return ChildBuild(**json.loads(done.stdout.strip().splitlines()[-1]))


def _status_bytes(field: str) -> int:
    """A memory field of /proc/self/status (Linux: VmRSS now, VmHWM the peak), bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0); without it, VmHWM keeps the imports' peak."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def _child(url: str, service_name: str, index_dir: Path, index_type: str) -> ChildBuild:
    engine = store.make_engine(url)
    with engine.connect() as conn:
        service = store.get_service(conn, service_name)
    gc.collect()
    _reset_peak()
    rss_before, hwm_before, maxrss_before = _status_bytes("VmRSS"), _status_bytes("VmHWM"), _maxrss_bytes()
    started = time.perf_counter()
    record = build_generation(engine, service, index_dir, index_type=index_type)
    seconds = time.perf_counter() - started
    peak, maxrss_after = _status_bytes("VmHWM"), _maxrss_bytes()
    engine.dispose()
    folder = Path(str(record.path))
    return ChildBuild(
        index_type=index_type,
        seconds=seconds,
        vector_count=record.vector_count,
        rss_before=rss_before,
        hwm_before=hwm_before,
        peak=peak,
        maxrss_before=maxrss_before,
        maxrss_after=maxrss_after,
        index_bytes=sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()),
    )


if __name__ == "__main__":
    url, name, folder, kind = sys.argv[1:5]
    print(json.dumps(asdict(_child(url, name, Path(folder), kind))))
