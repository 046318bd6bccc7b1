"""The bench's results as tables on stdout."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from bench import Row
from bench.results import MIB, Results, headline_rows, ratio
from bench.search import PGVECTOR_HNSW, TARGET_RECALL

out = Console() if sys.stdout.isatty() else Console(width=200)  # no wrapped rows in a log file


def fmt(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def print_search(res: Results, *, loaded: bool = False) -> None:
    pg = res.search_row(PGVECTOR_HNSW, loaded=loaded)
    beside = f", beside {res.load} busy processes (--load)" if loaded else ""
    table = Table(
        title=f"search, end to end (kNN + exact tail + SQL join to image rows), {res.nq} queries, k={res.k}{beside}",
        caption=f"recall@{res.k} vs exact faiss.knn over the stored vectors; settings: smallest of a sweep reaching "
        f"{TARGET_RECALL}; QPS: median of interleaved runs (pgvector exact: 1 run); ratios: QPS / pgvector hnsw's",
    )
    for name in ("system", "index", "setting", f"recall@{res.k}", "QPS 1 client", f"QPS batched ({res.nq}/call)"):
        table.add_column(name, justify="left" if name in ("system", "index", "setting") else "right")
    table.add_column("1 client / pg hnsw", justify="right", style="bold")
    table.add_column("batched / pg hnsw", justify="right", style="bold")
    for r in res.search_loaded if loaded else res.search:
        table.add_row(
            r.system,
            r.index,
            r.setting,
            f"{r.recall:.3f}",
            fmt(r.single_qps),
            fmt(r.batched_qps),
            fmt(ratio(r.single_qps, pg.single_qps if pg else None)),
            fmt(ratio(r.batched_qps, pg.batched_qps if pg else None)),
        )
    out.print(table)


def print_build(res: Results) -> None:
    copy_s = res.flat.copy_seconds if res.flat else float("nan")
    table = Table(
        title=f"build from Postgres: {res.n} x {res.dim} vectors",
        caption="ours: build_generation (COPY, train, add, write + fsync, record); Flat: median of the paired runs, "
        "others: 1 run in a fresh process; bare COPY: median; pgvector: CREATE INDEX ... USING hnsw, 1 run",
    )
    for name in ("index", "ours s", "runs", "bare COPY s", "ours / COPY", "pgvector hnsw s", "pgvector / ours"):
        table.add_column(name, justify="left" if name == "index" else "right")
    for b in res.builds:
        table.add_row(
            b.index_type,
            fmt(b.seconds),
            str(b.runs),
            fmt(copy_s),
            fmt(ratio(b.seconds, copy_s)),
            fmt(res.pgvector_build_seconds),
            fmt(ratio(res.pgvector_build_seconds, b.seconds)),
        )
    if res.flat is not None:
        for phase, seconds in res.flat.phases.items():
            table.add_row(
                f"  Flat phase {phase}",
                fmt(seconds),
                str(res.flat.runs),
                fmt(copy_s),
                fmt(ratio(seconds, copy_s)),
                "",
                "",
            )
    out.print(table)


def print_rss(res: Results) -> None:
    raw = res.raw_bytes
    table = Table(
        title=f"peak RSS of a build in a fresh process; raw vectors n x dim x 4 = {raw / MIB:,.0f} MiB",
        caption="before: VmRSS just before build_generation (after imports and a connection; VmHWM reset there); "
        "peak: VmHWM after it. ru_maxrss is shown but is no measure here: Linux carries the parent's (this "
        "bench's) peak into a child's ru_maxrss across fork + exec",
    )
    heads: tuple[str, ...] = ("index", "RSS before MiB", "peak MiB", "peak - before MiB", "/ raw", "index file MiB")
    heads += ("(peak - before - index) / raw", "ru_maxrss before / after MiB", "build s")
    for name in heads:
        table.add_column(name, justify="left" if name == "index" else "right")
    for b in res.builds:
        c = b.child
        table.add_row(
            b.index_type,
            fmt(c.rss_before / MIB),
            fmt(c.peak / MIB),
            fmt(c.peak_delta / MIB),
            fmt(c.peak_delta / raw),
            fmt(c.index_bytes / MIB),
            fmt((c.peak_delta - c.index_bytes) / raw),
            f"{fmt(c.maxrss_before / MIB)} / {fmt(c.maxrss_after / MIB)}",
            fmt(c.seconds),
        )
    out.print(table)


def print_rebuild(res: Results) -> None:
    rb = res.rebuild
    if rb is None:
        return
    table = Table(
        title=f"search under {rb.clients} concurrent clients (1 query/call, IndexCache"
        f"{' + LISTEN/NOTIFY' if rb.listening else ''}) while {rb.index_type} is rebuilt in the same process",
        caption=f"rebuild {rb.rebuild_seconds:.1f} s, generation {rb.old_generation} -> {rb.new_generation}; "
        f"first search answered by the new generation {fmt(rb.swap_seconds)} s after the rebuild returned",
    )
    for name in ("phase", "seconds", "searches", "QPS", "errors", "p50 ms", "p99 ms"):
        table.add_column(name, justify="left" if name == "phase" else "right")
    for p in rb.phases:
        table.add_row(p.phase, fmt(p.seconds), str(p.searches), fmt(p.qps), str(p.errors), fmt(p.p50_ms), fmt(p.p99_ms))
    out.print(table)
    for sample in rb.error_samples:
        out.print(f"  error: {sample}")


def print_headline(rows: Sequence[Row]) -> None:
    table = Table(title="summary: ratio = A / B, all measured in this run", caption="'aim' is the design target")
    table.add_column("measure")
    for name in ("A", "B"):
        table.add_column(name, justify="right")
    table.add_column("unit")
    table.add_column("A / B", justify="right", style="bold")
    table.add_column("aim")
    table.add_column("key (JSON)")
    for row in rows:
        table.add_row(row.measure, fmt(row.ours), fmt(row.reference), row.unit, fmt(row.ratio), row.aim, row.key or "")
    out.print(table)


def print_filtered(res: Results) -> None:
    if not res.filtered:
        return
    table = Table(title=f"filtered search, 1 client, k={res.k}: recall@{res.k} against the exact filtered truth")
    for column in ("share of rows passing", "system", "setting", f"recall@{res.k}", "q/s"):
        table.add_column(column, justify="right" if column in (f"recall@{res.k}", "q/s") else "left")
    for r in res.filtered:
        table.add_row(f"{r.share:.0%}", r.system, r.setting or "-", f"{r.recall:.3f}", fmt(r.qps))
    out.print(table)


def print_all(res: Results) -> list[Row]:
    print_search(res)
    if res.search_loaded:
        print_search(res, loaded=True)
    print_filtered(res)
    print_build(res)
    print_rss(res)
    print_rebuild(res)
    rows = headline_rows(res)
    print_headline(rows)
    return rows
