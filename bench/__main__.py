"""`python -m bench`: build, search and ingest benchmarks against references measured in the same run.

Every number in the table is a ratio of two timings taken in this process, on this machine, against the
same embedded Postgres, so the ratios (not the absolute numbers) are what to compare between runs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench import Row
from bench.build import FAISS_HNSW, bench_build, faiss_hnsw_build_seconds, hnsw_build_seconds
from bench.data import Mixture, embedded_database, load_vectors
from bench.ingest import bench_ingest
from bench.search import bench_hnsw_search, bench_search
from simsearch.index import load_current

console = Console(stderr=True)
out = Console() if sys.stdout.isatty() else Console(width=180)  # no wrapped rows in a log file


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--n", type=int, default=50_000, help="stored vectors (default: %(default)s)")
    parser.add_argument("--dim", type=int, default=512, help="vector dimension (default: %(default)s, as resnet18's)")
    parser.add_argument("--k", type=int, default=10, help="neighbours per query (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=50, help="query vectors (default: %(default)s)")
    parser.add_argument(
        "--clusters",
        type=int,
        default=256,
        help="components of the Gaussian mixture the vectors are drawn from (default: %(default)s)",
    )
    parser.add_argument("--images", type=int, default=160, help="JPEGs for the ingest bench (default: %(default)s)")
    parser.add_argument(
        "--model",
        default="resnet18",
        help="torchvision model for the ingest bench, random weights (default: %(default)s)",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=3,
        help="timed repeats per measure, the median is reported; the cheap build does 2 x runs + 1 "
        "(default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=1338, help="seed of the data (default: %(default)s)")
    parser.add_argument("--no-hnsw", dest="hnsw", action="store_false", help="skip the pgvector HNSW rows")
    parser.add_argument("--no-ingest", dest="ingest", action="store_false", help="skip the ingest bench")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write {key: number} to FILE")
    args = parser.parse_args(argv)
    for name in ("n", "dim", "k", "queries", "clusters", "images", "runs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.k > args.n:
        parser.error("--k must not exceed --n")
    return args


def run(args: argparse.Namespace) -> tuple[list[Row], dict[str, float]]:
    rows: list[Row] = []
    extra: dict[str, float] = {}
    mixture = Mixture.make(args.dim, clusters=args.clusters, seed=args.seed)
    vectors = mixture.sample(args.n, seed=args.seed + 1)
    queries = mixture.sample(args.queries, seed=args.seed + 2)
    with tempfile.TemporaryDirectory(prefix="simsearch-bench-") as tmp, embedded_database(Path(tmp)) as db:
        with console.status(f"loading {args.n} x {args.dim} vectors through the store"):
            service, load_seconds = load_vectors(db.engine, "bench", vectors)
        console.log(f"loaded {args.n} vectors in {load_seconds:.1f} s ({args.n / load_seconds:.0f}/s)")
        extra["load_vectors_per_s"] = args.n / load_seconds

        with console.status("build: ours vs bare binary COPY"):
            build_rows, build_seconds = bench_build(db, service, args.n, runs=2 * args.runs + 1)
        rows += build_rows
        console.log("build done")
        if args.hnsw:
            with console.status("build: pgvector HNSW (m=16, ef_construction=64, once)"):
                hnsw_seconds = hnsw_build_seconds(db, service)
            rows.append(
                Row(
                    "build: ours (Flat) vs pgvector HNSW, m=16 ef_construction=64, 1 run",
                    build_seconds,
                    hnsw_seconds,
                    "s",
                    "<< 1",
                    "build_vs_pgvector_hnsw",
                )
            )
            console.log(f"pgvector HNSW built in {hnsw_seconds:.1f} s")

        index = load_current(db.engine, service)
        assert index is not None
        with console.status("search: ours vs pgvector exact"):
            search_rows, truth = bench_search(db, service, index, queries, args.k, runs=args.runs)
        rows += search_rows
        batched = next(r for r in search_rows if r.key == "search_batched_vs_single")
        extra["search_batched_qps"], extra["search_single_qps"] = batched.ours, batched.reference
        console.log("search done")
        if args.hnsw:
            with console.status(f"build: ours, FAISS {FAISS_HNSW} (once)"):
                faiss_seconds = faiss_hnsw_build_seconds(db, service, args.n)
            rows.append(
                Row(
                    f"build: ours (FAISS {FAISS_HNSW}) vs pgvector HNSW, 1 run each",
                    faiss_seconds,
                    hnsw_seconds,
                    "s",
                    "< 1",
                    "build_hnsw_vs_pgvector_hnsw",
                )
            )
            hnsw_index = load_current(db.engine, service)
            assert hnsw_index is not None
            with console.status("search: ours and pgvector HNSW, tuning ef_search"):
                hnsw_rows = bench_hnsw_search(db, service, index, hnsw_index, queries, args.k, truth, runs=args.runs)
            rows += hnsw_rows
            recalls = next(r for r in hnsw_rows if r.key == "hnsw_recall_ours_vs_pgvector")
            extra["faiss_hnsw_recall"], extra["pgvector_hnsw_recall"] = recalls.ours, recalls.reference
            console.log("HNSW search done")

        if args.ingest:
            with console.status(f"ingest: {args.images} JPEGs through {args.model}"):
                rows += bench_ingest(
                    db, Path(tmp) / "photos", args.images, model=args.model, runs=args.runs, seed=args.seed
                )
            console.log("ingest done")
    return rows, extra


def fmt(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def print_table(rows: Sequence[Row], args: argparse.Namespace) -> None:
    table = Table(
        title="simsearch bench: ratio = ours / reference, both measured in this run",
        caption=f"median of {args.runs} runs (build: {2 * args.runs + 1}) after a warm-up, ours and the "
        "reference timed in alternation; 'aim' is the design target for the ratio",
    )
    table.add_column("measure")
    for name in ("ours", "reference"):
        table.add_column(name, justify="right")
    table.add_column("unit")
    table.add_column("ratio", justify="right", style="bold")
    table.add_column("aim")
    table.add_column("key (JSON)")
    for row in rows:
        table.add_row(row.measure, fmt(row.ours), fmt(row.reference), row.unit, fmt(row.ratio), row.aim, row.key or "")
    out.print(table)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    out.print(
        f"sizes: {args.n} vectors x {args.dim} dims ({args.clusters}-component Gaussian mixture, "
        f"seed {args.seed}), {args.queries} queries, k={args.k}, runs={args.runs}, "
        f"HNSW rows: {'yes' if args.hnsw else 'no'}"
    )
    if args.ingest:
        out.print(f"ingest: {args.images} JPEGs, {args.model} (weights none), 224 px, batch 32")
    rows, extra = run(args)
    wall = time.perf_counter() - started
    print_table(rows, args)
    out.print(f"wall time {wall:.0f} s")
    if args.json:
        numbers = {row.key: row.ratio for row in rows if row.key}
        numbers |= extra
        numbers |= {
            "n": args.n,
            "dim": args.dim,
            "k": args.k,
            "queries": args.queries,
            "images": args.images,
            "wall_s": wall,
        }
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")
        console.log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
