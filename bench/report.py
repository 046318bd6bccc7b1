"""The bench's results: tables on stdout and the JSON file, both from the same `Results`."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from rich.console import Console
from rich.table import Table

from bench import Row
from bench.build import BuildRow, FlatVsCopy
from bench.rebuild import RebuildResult
from bench.search import PGVECTOR_EXACT, PGVECTOR_HNSW, TARGET_RECALL, SearchRow

out = Console() if sys.stdout.isatty() else Console(width=200)  # no wrapped rows in a log file
MIB = 1 << 20


@dataclass
class Results:
    n: int
    dim: int
    k: int
    nq: int
    hnsw_type: str  # the FAISS HNSW index behind the headline ratios
    ivf_type: str
    load_seconds: float = float("nan")
    flat: FlatVsCopy | None = None
    builds: list[BuildRow] = field(default_factory=list)
    pgvector_build_seconds: float = float("nan")
    search: list[SearchRow] = field(default_factory=list)
    flat_one_thread_qps: float = float("nan")
    rebuild: RebuildResult | None = None
    extra_rows: list[Row] = field(default_factory=list)  # the ingest bench

    @property
    def raw_bytes(self) -> int:
        return self.n * self.dim * 4

    def search_row(self, name: str) -> SearchRow | None:
        return next((r for r in self.search if r.index == name), None)

    def build_row(self, index_type: str) -> BuildRow | None:
        return next((b for b in self.builds if b.index_type == index_type), None)


def _nan() -> float:
    return float("nan")


def _ratio(a: float | None, b: float | None) -> float:
    return a / b if a is not None and b and not math.isnan(b) else float("nan")


def headline_rows(res: Results) -> list[Row]:
    """The summary: each ratio with its JSON key (A / B)."""
    pg, exact = res.search_row(PGVECTOR_HNSW), res.search_row(PGVECTOR_EXACT)
    hnsw, ivf, flat = res.search_row(res.hnsw_type), res.search_row(res.ivf_type), res.search_row("Flat")
    hb, ib, fb = res.build_row(res.hnsw_type), res.build_row(res.ivf_type), res.build_row("Flat")
    pgs = res.pgvector_build_seconds
    rows: list[Row] = []
    nan = _nan()
    if hnsw is not None:
        rows += [
            Row(
                f"search QPS 1 client: ours {hnsw.index} {hnsw.setting} / {PGVECTOR_HNSW} {pg.setting if pg else '-'}",
                hnsw.single_qps,
                pg.single_qps if pg else nan,
                "q/s",
                "> 1",
                "search_vs_pgvector_hnsw",
            ),
            Row(
                f"recall@{res.k}: ours {hnsw.index} (the row above)",
                hnsw.recall,
                1.0,
                "",
                f">= {TARGET_RECALL}",
                "recall_at_10",
            ),
            Row(
                f"search QPS batched ({res.nq}/call): ours {hnsw.index} / pgvector hnsw",
                hnsw.batched_qps,
                pg.batched_qps if pg else nan,
                "q/s",
                "> 1",
                "search_batched_vs_pgvector_hnsw",
            ),
            Row(
                f"recall@{res.k}: ours {hnsw.index} / pgvector hnsw",
                hnsw.recall,
                pg.recall if pg else nan,
                "",
                f"both >= {TARGET_RECALL}",
                "hnsw_recall_ours_vs_pgvector",
            ),
        ]
    if ivf is not None:
        rows.append(
            Row(
                f"search QPS 1 client: ours {ivf.index} {ivf.setting} / pgvector hnsw",
                ivf.single_qps,
                pg.single_qps if pg else nan,
                "q/s",
                "> 1",
                "search_ivf_vs_pgvector_hnsw",
            )
        )
    if flat is not None:
        rows += [
            Row(
                "search QPS 1 client: ours Flat / pgvector hnsw",
                flat.single_qps,
                pg.single_qps if pg else nan,
                "q/s",
                "",
                "search_flat_vs_pgvector_hnsw",
            ),
            Row(
                "search QPS 1 client: ours Flat / pgvector exact",
                flat.single_qps,
                exact.single_qps if exact else nan,
                "q/s",
                "> 1",
                "search_vs_pgvector_exact",
            ),
            Row(f"recall@{res.k}: ours Flat", flat.recall, 1.0, "", "1.0", "recall_vs_exact"),
            Row(
                f"search QPS ours Flat: batched ({res.nq}/call) / 1 client",
                flat.batched_qps,
                flat.single_qps,
                "q/s",
                "",
                "search_batched_vs_single",
            ),
            Row(
                "search QPS ours Flat 1 client: FAISS on 1 OpenMP thread / as shipped",
                res.flat_one_thread_qps,
                flat.single_qps,
                "q/s",
                "~1 (diagnostic)",
                "search_1thread_vs_default",
            ),
        ]
    if res.flat is not None:
        rows.append(
            Row(
                "build time: ours Flat from Postgres / bare binary COPY",
                res.flat.seconds,
                res.flat.copy_seconds,
                "s",
                "<= 1.3",
                "build_vs_copy",
            )
        )
    for b, key in (
        (hb, "build_vs_pgvector_hnsw"),
        (ib, "build_vs_pgvector_hnsw_ivf"),
        (fb, "build_vs_pgvector_hnsw_flat"),
    ):
        if b is not None:
            rows.append(Row(f"build time: pgvector hnsw / ours {b.index_type}", pgs, b.seconds, "s", ">> 1", key))
    if hb is not None:
        rows.append(
            Row(
                f"build time: ours {hb.index_type} / pgvector hnsw (old key)",
                hb.seconds,
                pgs,
                "s",
                "< 1",
                "build_hnsw_vs_pgvector_hnsw",
            )
        )
        rows.append(
            Row(
                f"build peak RSS - RSS before: ours {hb.index_type} / raw vector bytes",
                hb.child.peak_delta / MIB,
                res.raw_bytes / MIB,
                "MiB",
                "~1 + index",
                "build_rss_vs_raw",
            )
        )
    for b in (ib, fb):
        if b is not None:
            key = f"build_rss_vs_raw_{'ivf' if b is ib else 'flat'}"
            rows.append(
                Row(
                    f"build peak RSS - RSS before: ours {b.index_type} / raw vector bytes",
                    b.child.peak_delta / MIB,
                    res.raw_bytes / MIB,
                    "MiB",
                    "",
                    key,
                )
            )
    if res.rebuild is not None:
        rb = res.rebuild
        before, during = rb.phase("before"), rb.phase("during")
        rows += [
            Row(
                f"search errors during a rebuild of {rb.index_type}, {rb.clients} clients (A: count)",
                rb.errors,
                1.0,
                "",
                "0",
                "rebuild_search_errors",
            ),
            Row(
                "search p99 latency, 8 clients: during rebuild / before",
                during.p99_ms,
                before.p99_ms,
                "ms",
                "",
                "rebuild_p99_during_vs_before",
            ),
            Row(
                "search p50 latency, 8 clients: during rebuild / before",
                during.p50_ms,
                before.p50_ms,
                "ms",
                "",
                "rebuild_p50_during_vs_before",
            ),
        ]
    return rows + res.extra_rows


def fmt(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def print_search(res: Results) -> None:
    pg = res.search_row(PGVECTOR_HNSW)
    table = Table(
        title=f"search, end to end (kNN + exact tail + SQL join to image rows), {res.nq} queries, k={res.k}",
        caption=f"recall@{res.k} vs exact faiss.knn over the stored vectors; settings: smallest of a sweep reaching "
        f"{TARGET_RECALL}; QPS: median of interleaved runs (pgvector exact: 1 run); ratios: QPS / pgvector hnsw's",
    )
    for name in ("system", "index", "setting", f"recall@{res.k}", "QPS 1 client", f"QPS batched ({res.nq}/call)"):
        table.add_column(name, justify="left" if name in ("system", "index", "setting") else "right")
    table.add_column("1 client / pg hnsw", justify="right", style="bold")
    table.add_column("batched / pg hnsw", justify="right", style="bold")
    for r in res.search:
        table.add_row(
            r.system,
            r.index,
            r.setting,
            f"{r.recall:.3f}",
            fmt(r.single_qps),
            fmt(r.batched_qps),
            fmt(_ratio(r.single_qps, pg.single_qps if pg else None)),
            fmt(_ratio(r.batched_qps, pg.batched_qps if pg else None)),
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
            fmt(_ratio(b.seconds, copy_s)),
            fmt(res.pgvector_build_seconds),
            fmt(_ratio(res.pgvector_build_seconds, b.seconds)),
        )
    if res.flat is not None:
        for phase, seconds in res.flat.phases.items():
            table.add_row(
                f"  Flat phase {phase}",
                fmt(seconds),
                str(res.flat.runs),
                fmt(copy_s),
                fmt(_ratio(seconds, copy_s)),
                "",
                "",
            )
    out.print(table)


def print_rss(res: Results) -> None:
    raw = res.raw_bytes
    table = Table(
        title=f"peak RSS of a build in a fresh process; raw vectors n x dim x 4 = {raw / MIB:,.0f} MiB",
        caption="before: VmRSS just before build_generation (after imports and a connection); peak: ru_maxrss after "
        "it; ru_maxrss before is the peak of the imports",
    )
    for name in (
        "index",
        "RSS before MiB",
        "ru_maxrss before MiB",
        "peak MiB",
        "peak - before MiB",
        "/ raw",
        "index file MiB",
        "(peak - before - index) / raw",
        "build s",
    ):
        table.add_column(name, justify="left" if name == "index" else "right")
    for b in res.builds:
        c = b.child
        table.add_row(
            b.index_type,
            fmt(c.rss_before / MIB),
            fmt(c.maxrss_before / MIB),
            fmt(c.maxrss_after / MIB),
            fmt(c.peak_delta / MIB),
            fmt(c.peak_delta / raw),
            fmt(c.index_bytes / MIB),
            fmt((c.peak_delta - c.index_bytes) / raw),
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


def print_all(res: Results) -> list[Row]:
    print_search(res)
    print_build(res)
    print_rss(res)
    print_rebuild(res)
    rows = headline_rows(res)
    print_headline(rows)
    return rows


def _clean(value: object) -> object:
    """JSON without NaN (null instead)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def json_numbers(res: Results, rows: Sequence[Row], extra: dict[str, float]) -> dict[str, object]:
    """{key: ratio} for every keyed row (rebuild_search_errors: the count), the extras, and the details."""
    numbers: dict[str, object] = {row.key: row.ratio for row in rows if row.key}
    if res.rebuild is not None:
        numbers["rebuild_search_errors"] = res.rebuild.errors
    numbers |= extra
    numbers["details"] = {
        "search": [asdict(r) | {"setting": r.setting} for r in res.search],
        "build": [
            {
                "index_type": b.index_type,
                "seconds": b.seconds,
                "runs": b.runs,
                **asdict(b.child),
                "peak_delta": b.child.peak_delta,
            }
            for b in res.builds
        ],
        "flat_vs_copy": asdict(res.flat) if res.flat else None,
        "pgvector_hnsw_build_seconds": res.pgvector_build_seconds,
        "raw_bytes": res.raw_bytes,
        "rebuild": asdict(res.rebuild) | {"errors": res.rebuild.errors} if res.rebuild else None,
    }
    return {k: _clean(v) for k, v in numbers.items()}
