"""The bench's results, and the numbers drawn from them: the summary rows (each a ratio with its JSON key)
and the JSON file."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from bench import Row
from bench.build import BuildRow, FlatVsCopy
from bench.filtered import FilteredRow
from bench.rebuild import RebuildResult
from bench.search import PGVECTOR_EXACT, PGVECTOR_HNSW, TARGET_RECALL, ConcurrentRow, SearchRow

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
    load: int = 0  # busy processes beside search_loaded (--load)
    search_loaded: list[SearchRow] = field(default_factory=list)  # the search rows again, under that load
    flat_one_thread_qps: float = float("nan")
    hnsw_one_thread_qps: float = float("nan")
    rebuild: RebuildResult | None = None
    extra_rows: list[Row] = field(default_factory=list)  # the ingest, storing-rows and filtered benches
    filtered: list[FilteredRow] = field(default_factory=list)  # every filter share's systems
    concurrent: ConcurrentRow | None = None  # 8 clients at once

    @property
    def raw_bytes(self) -> int:
        return self.n * self.dim * 4

    def search_row(self, name: str, *, loaded: bool = False) -> SearchRow | None:
        return next((r for r in (self.search_loaded if loaded else self.search) if r.index == name), None)

    def build_row(self, index_type: str) -> BuildRow | None:
        return next((b for b in self.builds if b.index_type == index_type), None)


def ratio(a: float | None, b: float | None) -> float:
    return a / b if a is not None and b and not math.isnan(b) else float("nan")


def headline_rows(res: Results) -> list[Row]:
    """The summary: each ratio with its JSON key (A / B)."""
    pg, exact = res.search_row(PGVECTOR_HNSW), res.search_row(PGVECTOR_EXACT)
    hnsw, ivf, flat = res.search_row(res.hnsw_type), res.search_row(res.ivf_type), res.search_row("Flat")
    hb, ib, fb = res.build_row(res.hnsw_type), res.build_row(res.ivf_type), res.build_row("Flat")
    pgs = res.pgvector_build_seconds
    rows: list[Row] = []
    nan = float("nan")
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
    if hnsw is not None:
        rows.append(
            Row(
                f"search QPS ours {hnsw.index} 1 client: FAISS on 1 OpenMP thread / as shipped",
                res.hnsw_one_thread_qps,
                hnsw.single_qps,
                "q/s",
                "~1 (diagnostic)",
                "search_hnsw_1thread_vs_default",
            )
        )
    rows += loaded_rows(res)
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
    if res.concurrent:
        c = res.concurrent
        rows.append(
            Row(
                f"search QPS {c.clients} clients (threads): ours {c.index} / pgvector hnsw ({c.clients} connections); "
                f"p99 {c.ours_p99_ms:.2f} / {c.pgvector_p99_ms:.2f} ms",
                c.ours_qps,
                c.pgvector_qps,
                "q/s",
                ">= 3",
                "search_8clients_vs_pgvector_hnsw",
            )
        )
    return rows + res.extra_rows


def loaded_rows(res: Results) -> list[Row]:
    """The 1-client search ratios again, timed beside `res.load` busy processes (--load)."""
    pg = res.search_row(PGVECTOR_HNSW, loaded=True)
    rows = []
    for name, key in (
        (res.hnsw_type, "search_vs_pgvector_hnsw_loaded"),
        (res.ivf_type, "search_ivf_vs_pgvector_hnsw_loaded"),
    ):
        ours = res.search_row(name, loaded=True)
        if ours is not None:
            rows.append(
                Row(
                    f"search QPS 1 client, {res.load} busy processes: ours {name} {ours.setting} / pgvector hnsw",
                    ours.single_qps,
                    pg.single_qps if pg else float("nan"),
                    "q/s",
                    "> 1",
                    key,
                )
            )
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
        "search_loaded": [asdict(r) | {"setting": r.setting} for r in res.search_loaded],
        "load": res.load,
        "build": [
            {
                "index_type": b.index_type,
                "seconds": b.seconds,
                "runs": b.runs,
                "fresh_process": asdict(b.child) | {"peak_delta": b.child.peak_delta},
            }
            for b in res.builds
        ],
        "flat_vs_copy": asdict(res.flat) if res.flat else None,
        "filtered": [asdict(r) for r in res.filtered],
        "concurrent": asdict(res.concurrent) if res.concurrent else None,
        "pgvector_hnsw_build_seconds": res.pgvector_build_seconds,
        "raw_bytes": res.raw_bytes,
        "rebuild": asdict(res.rebuild) | {"errors": res.rebuild.errors} if res.rebuild else None,
    }
    return {k: _clean(v) for k, v in numbers.items()}
