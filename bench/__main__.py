"""`python -m bench`: search, build, memory, rebuild-under-load and ingest benchmarks of simsearch against
pgvector and a bare binary COPY, all measured in the same run, on the same clustered synthetic vectors
(a Gaussian mixture) in the same embedded Postgres.

Ratios between numbers taken in one run, on one machine, are what to compare between runs; the absolute
numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import faiss
from rich.console import Console

from bench import Row
from bench.build import BuildRow, flat_vs_copy, fresh_build
from bench.data import Mixture, embedded_database, load_vectors
from bench.filtered import bench_filtered
from bench.ingest import bench_ingest
from bench.load import busy_processes
from bench.pgvector import PgvectorSearch, connect, hnsw_build_seconds
from bench.rebuild import bench_rebuild
from bench.report import out, print_all
from bench.results import Results, json_numbers
from bench.search import bench_search, concurrent_search, exact_truth, ivf_nlist, one_thread_qps, tuned_candidates
from bench.store_rows import bench_store_rows
from simsearch.index import LoadedIndex, faiss_index, load_current
from simsearch.search import SearchOptions

console = Console(stderr=True)
OMP_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")  # OpenMP's idle spinning competes with Postgres


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    add = parser.add_argument
    add("--n", type=int, default=100_000, help="stored vectors (default: %(default)s)")
    add("--dim", type=int, default=512, help="vector dimension (default: %(default)s, as resnet18's)")
    add("--k", type=int, default=10, help="neighbours per query (default: %(default)s)")
    add("--queries", type=int, default=200, help="query vectors, drawn from the same mixture (default: %(default)s)")
    add("--clusters", type=int, default=256, help="components of the Gaussian mixture (default: %(default)s)")
    add("--nlist", type=int, help="IVF lists of the IVF<nlist>,SQ8 index (default: about 4 sqrt(n))")
    add("--hnsw-m", type=int, default=32, help="M of the FAISS HNSW<M> index (default: %(default)s)")
    add(
        "--runs",
        type=int,
        default=3,
        help="timed repeats, the median is reported; the Flat build does 2 x runs + 1 (default: %(default)s)",
    )
    add(
        "--clients",
        type=int,
        default=8,
        help="concurrent search clients of the concurrent rows and during the rebuild (default: %(default)s)",
    )
    add(
        "--rebuild-before",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="seconds of searching before the rebuild starts, for the baseline latency (default: %(default)s)",
    )
    add("--images", type=int, default=160, help="JPEGs for the ingest bench (default: %(default)s)")
    add(
        "--model",
        default="resnet18",
        help="torchvision model for the ingest bench, random weights (default: %(default)s)",
    )
    add("--seed", type=int, default=1338, help="seed of the data (default: %(default)s)")
    add("--no-hnsw", dest="hnsw", action="store_false", help="skip pgvector's HNSW (its build and search rows)")
    add("--no-exact", dest="exact", action="store_false", help="skip pgvector's exact search (a scan per query)")
    add("--no-rebuild", dest="rebuild", action="store_false", help="skip the rebuild-under-load bench")
    add("--no-ingest", dest="ingest", action="store_false", help="skip the ingest bench")
    add("--no-store-rows", dest="store_rows", action="store_false", help="skip the storing-rows bench")
    add("--no-filtered", dest="filtered", action="store_false", help="skip the filtered-search bench")
    add("--store-rows-n", type=int, default=20_000, help="images stored per storing-rows run (default: %(default)s)")
    add(
        "--load",
        type=int,
        default=0,
        metavar="N",
        help="also time the search rows again with N busy processes beside them, as a host's other work "
        "(the *_loaded keys); 0: quiet only (default: %(default)s)",
    )
    add(
        "--one-thread-queries",
        type=int,
        default=faiss_index.ONE_THREAD_MAX_QUERIES,
        metavar="Q",
        help="FAISS searches of at most Q queries run on one OpenMP thread; 0: every search on all threads, "
        "as before issue 14 (default: %(default)s)",
    )
    add("--json", type=Path, metavar="FILE", help="also write the results to FILE as JSON")
    args = parser.parse_args(argv)
    for name in ("n", "dim", "k", "queries", "clusters", "runs", "clients", "images", "hnsw_m", "store_rows_n"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("load", "one_thread_queries"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must not be negative")
    if args.k > args.n:
        parser.error("--k must not exceed --n")
    args.nlist = args.nlist or ivf_nlist(args.n)
    if args.nlist > args.n:
        parser.error("--nlist must not exceed --n")
    return args


def run(args: argparse.Namespace) -> tuple[Results, dict[str, float]]:
    hnsw_type, ivf_type = f"HNSW{args.hnsw_m}", f"IVF{args.nlist},SQ8"
    res = Results(n=args.n, dim=args.dim, k=args.k, nq=args.queries, hnsw_type=hnsw_type, ivf_type=ivf_type)
    res.load = args.load
    extra: dict[str, float] = {}
    mixture = Mixture.make(args.dim, clusters=args.clusters, seed=args.seed)
    vectors = mixture.sample(args.n, seed=args.seed + 1)
    queries = mixture.sample(args.queries, seed=args.seed + 2)
    with tempfile.TemporaryDirectory(prefix="simsearch-bench-") as tmp, embedded_database(Path(tmp)) as db:
        with console.status(f"loading {args.n} x {args.dim} vectors through the store"):
            service, res.load_seconds = load_vectors(db.engine, "bench", vectors)
        del vectors
        console.log(f"loaded {args.n} vectors in {res.load_seconds:.1f} s ({args.n / res.load_seconds:.0f}/s)")
        extra["load_vectors_per_s"] = args.n / res.load_seconds
        truth = exact_truth(db.engine, service, queries, args.k)

        with console.status("build: ours (Flat) vs bare binary COPY, in alternation"):
            res.flat = flat_vs_copy(db, service, args.n, runs=2 * args.runs + 1)
        console.log(f"Flat build {res.flat.seconds:.2f} s, bare COPY {res.flat.copy_seconds:.2f} s")
        indexes: dict[str, LoadedIndex] = {}
        for index_type in ("Flat", ivf_type, hnsw_type):
            with console.status(f"build: ours ({index_type}) in a fresh process, for its peak RSS"):
                child = fresh_build(db, service, index_type, args.n)
            flat = index_type == "Flat" and res.flat is not None
            seconds, runs = (res.flat.seconds, res.flat.runs) if flat and res.flat else (child.seconds, 1)
            res.builds.append(BuildRow(index_type, seconds, runs, child))
            loaded = load_current(db.engine, service)
            assert loaded is not None
            assert loaded.build.index_type == index_type
            indexes[index_type] = loaded
            console.log(f"{index_type} built in {child.seconds:.1f} s, peak +{child.peak_delta / 2**20:.0f} MiB")
        if args.hnsw:
            with console.status("build: pgvector hnsw (m=16, ef_construction=64, once)"):
                res.pgvector_build_seconds = hnsw_build_seconds(db, service)
            console.log(f"pgvector hnsw built in {res.pgvector_build_seconds:.1f} s")

        with connect(db) as raw:
            pg_hnsw = PgvectorSearch(raw, service, hnsw=True) if args.hnsw else None
            exact = PgvectorSearch(raw, service, hnsw=False) if args.exact else None
            for checked in (pg_hnsw, exact):
                if checked is not None:
                    checked.check_plans(queries[0], args.k)
            with console.status("search: sweeping nprobe / efSearch / hnsw.ef_search to the target recall"):
                candidates = tuned_candidates(db.engine, service, indexes, pg_hnsw, queries, truth, args.k)
            console.log("tuned: " + ", ".join(f"{c.index} {c.knob}={c.value}" for c in candidates if c.knob))
            with console.status("search: QPS, 1 client and batched, interleaved"):
                res.search = bench_search(candidates, exact, queries, truth, args.k, runs=args.runs)
            with console.status(f"search: {args.clients} clients at once, ours vs pgvector"):
                res.concurrent = concurrent_search(
                    candidates, db, queries, args.k, index=hnsw_type, clients=args.clients
                )
            if args.load:
                with console.status(f"search again beside {args.load} busy processes"), busy_processes(args.load):
                    res.search_loaded = bench_search(candidates, None, queries, truth, args.k, runs=args.runs)
            for c in candidates:
                if c.system == "ours" and c.index == "Flat":
                    res.flat_one_thread_qps = one_thread_qps(c, queries, args.k, runs=args.runs)
                elif c.system == "ours" and c.index == hnsw_type:
                    res.hnsw_one_thread_qps = one_thread_qps(c, queries, args.k, runs=args.runs)
        console.log("search done")
        hnsw_row = res.search_row(hnsw_type)
        ef = hnsw_row.value if hnsw_row else None
        if args.filtered and args.hnsw:
            with console.status("filtered search: 1 %, 10 %, 50 % of rows passing, ours vs pgvector iterative scans"):
                res.filtered, filtered_rows = bench_filtered(
                    db, service, indexes[hnsw_type], queries, args.k, ef_search=ef, runs=args.runs
                )
                res.extra_rows += filtered_rows
            console.log("filtered search done")

        if args.rebuild:
            with console.status(f"rebuild of {hnsw_type} under {args.clients} search clients"):
                res.rebuild = bench_rebuild(
                    db,
                    service,
                    queries,
                    args.k,
                    index_type=hnsw_type,
                    options=SearchOptions(ef_search=ef),
                    clients=args.clients,
                    before_seconds=args.rebuild_before,
                )
            console.log(f"rebuild done, {res.rebuild.errors} search errors")

        if args.ingest:
            with console.status(f"ingest: {args.images} JPEGs through {args.model}"):
                res.extra_rows += bench_ingest(
                    db, Path(tmp) / "photos", args.images, model=args.model, runs=args.runs, seed=args.seed
                )
            console.log("ingest done")
        if args.store_rows:
            with console.status(f"storing rows: {args.store_rows_n} images + vectors, as ingest, vs bare COPY"):
                stored = mixture.sample(args.store_rows_n, seed=args.seed + 3)
                res.extra_rows += bench_store_rows(db, stored, runs=args.runs)
            console.log("storing rows done")
    for row in res.search:
        if row.system == "ours" and row.index == hnsw_type:
            extra["faiss_hnsw_recall"] = row.recall
        elif row.system == "pgvector" and row.knob:
            extra["pgvector_hnsw_recall"] = row.recall
        if row.index == "Flat":
            extra["search_batched_qps"], extra["search_single_qps"] = row.batched_qps, row.single_qps
    return res, extra


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    faiss_index.ONE_THREAD_MAX_QUERIES = args.one_thread_queries
    started = time.perf_counter()
    out.print(
        f"sizes: {args.n} vectors x {args.dim} dims ({args.clusters}-component Gaussian mixture, seed {args.seed}), "
        f"{args.queries} queries, k={args.k}, runs={args.runs}; FAISS: Flat, IVF{args.nlist},SQ8, HNSW{args.hnsw_m}; "
        f"pgvector hnsw: {'yes' if args.hnsw else 'no'}, exact: {'yes' if args.exact else 'no'}; "
        f"FAISS threads: {faiss.omp_get_max_threads()} (1 for searches of <= {args.one_thread_queries} queries), "
        f"load: {args.load} busy processes beside the second search pass, "
        + ", ".join(f"{v}={os.environ.get(v, '(unset)')}" for v in OMP_ENV)
    )
    if args.ingest:
        out.print(f"ingest: {args.images} JPEGs, {args.model} (weights none), 224 px, batch 32")
    res, extra = run(args)
    wall = time.perf_counter() - started
    rows: list[Row] = print_all(res)
    out.print(f"wall time {wall:.0f} s")
    if args.json:
        numbers = json_numbers(res, rows, extra)
        numbers |= {"n": args.n, "dim": args.dim, "k": args.k, "queries": args.queries, "wall_s": wall}
        numbers |= {"load": args.load, "one_thread_queries": args.one_thread_queries}
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")
        console.log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
