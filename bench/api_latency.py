"""`python -m bench.api_latency`: what the HTTP layer adds to a search, on a real `simsearch serve`.

One embedded Postgres holds N clustered synthetic vectors (as `python -m bench` loads them); a `simsearch
serve` subprocess (1 worker) on a loopback port serves them after an HNSW build through its own API. Timed,
in the same run, on the same generation and the same query vectors:

- the in-process call (`search_vectors`, what the route runs) and the native search by vector over HTTP,
  one client: p50 and p99 of each, and `http_search_overhead_ms` = the difference of the medians;
- the DeepDetect face's search (`POST /predict` with `search: true`, a photo through MobileNetV2, offline
  weights) beside the same work in-process (embed + search), when the weights are installed;
- 8 concurrent HTTP clients (threads, one connection each) against pgvector HNSW with 8 connections, each
  at the search depth given (recall@k of both is printed beside them).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from bench import concurrent_qps, percentiles
from bench.data import Database, Mixture, embedded_database, load_vectors
from bench.pgvector import PgvectorSearch, connect, hnsw_build_seconds
from bench.search import exact_truth, recall
from simsearch.index import load_current
from simsearch.samples import write_samples
from simsearch.search import SearchOptions, search_vectors
from simsearch.store import ServiceRecord


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.api_latency", description=__doc__)
    add = parser.add_argument
    add("--n", type=int, default=100_000, help="stored vectors (default: %(default)s)")
    add("--dim", type=int, default=512, help="vector dimension (default: %(default)s)")
    add("--k", type=int, default=10, help="neighbours per query (default: %(default)s)")
    add("--queries", type=int, default=300, help="query vectors, each call one (default: %(default)s)")
    add("--ef-search", type=int, default=96, help="FAISS HNSW32 efSearch of every search (default: %(default)s)")
    add("--pg-ef-search", type=int, default=64, help="pgvector hnsw.ef_search (default: %(default)s)")
    add("--clients", type=int, default=8, help="concurrent clients of the concurrent rows (default: %(default)s)")
    add(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="`simsearch serve --workers` (default: the machine's cores, %(default)s)",
    )
    add("--no-deepdetect", dest="deepdetect", action="store_false", help="skip the DeepDetect /predict rows")
    add("--json", type=Path, metavar="FILE", help="also write the numbers to FILE as JSON")
    return parser.parse_args(argv)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def timed_calls(call: Callable[[int], object], count: int) -> list[float]:
    """Milliseconds of `call(i)` for i in range(count), after two warm-up calls."""
    call(0), call(1)
    samples = []
    for i in range(count):
        started = time.perf_counter()
        call(i)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def start_server(
    db: Database, home: Path, roots: Path, *, workers: int = 1
) -> tuple[subprocess.Popen[bytes], httpx.Client]:
    home.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = {**os.environ, "SIMSEARCH_HOME": str(home), "DATABASE_URL": db.url, "SIMSEARCH_DATA_ROOTS": str(roots)}
    server = subprocess.Popen(  # noqa: S603 - our own console script
        [sys.executable, "-m", "simsearch", "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600)
    for _ in range(480):
        try:
            if client.get("/api/v1/health").status_code == 200:
                return server, client
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    server.terminate()
    raise RuntimeError("simsearch serve did not become healthy in 2 minutes")


class Run:
    """The numbers of one run, printed as they come and kept for the JSON."""

    def __init__(self) -> None:
        self.numbers: dict[str, float] = {}

    def latency(self, key: str, name: str, samples: list[float]) -> float:
        p50, p99 = percentiles(samples)
        self.numbers |= {f"{key}_p50_ms": p50, f"{key}_p99_ms": p99}
        print(f"{name:66s} p50 {p50:7.3f} ms   p99 {p99:7.3f} ms")
        return p50

    def value(self, key: str, name: str, value: float, unit: str = "") -> None:
        self.numbers[key] = value
        print(f"{name:66s} {value:9.3f} {unit}")


def vector_rows(run: Run, args: argparse.Namespace, db: Database, service: ServiceRecord, client: httpx.Client) -> None:
    """In-process vs HTTP, one client; then 8 HTTP clients vs pgvector with 8 connections."""
    mixture = Mixture.make(args.dim, clusters=256, seed=1338)
    queries = mixture.sample(args.queries, seed=1340)
    loaded = load_current(db.engine, service)
    options = SearchOptions(ef_search=args.ef_search)
    path = f"/api/v1/services/{service.name}/search"
    # encoded once: the client's own JSON encoding is not the server's time
    bodies = [json.dumps({"vector": q.tolist(), "k": args.k, "ef_search": args.ef_search}).encode() for q in queries]
    headers = {"content-type": "application/json"}
    found: dict[int, list[int]] = {}

    def in_process(i: int) -> object:
        return search_vectors(db.engine, service, loaded, queries[i][None], args.k, options)

    def over_http(i: int, http: httpx.Client = client) -> object:
        answer = http.post(path, content=bodies[i], headers=headers)
        answer.raise_for_status()
        found[i] = [hit["image_id"] for hit in answer.json()["results"]]
        return answer

    ours = run.latency(
        "search_in_process", "in-process search_vectors (HNSW32), 1 client", timed_calls(in_process, args.queries)
    )
    http = run.latency(
        "http_search", "POST /api/v1/services/{name}/search by vector, 1 client", timed_calls(over_http, args.queries)
    )
    run.value("http_search_overhead_ms", "HTTP overhead: the two medians' difference", http - ours, "ms")
    truth, image_of = exact_truth(db.engine, service, queries, args.k), _embedding_of_image(db, service)
    http_found = [[image_of[image_id] for image_id in found[i]] for i in range(args.queries)]
    run.value("http_search_recall", f"recall@{args.k} of the HTTP search", recall(http_found, truth, args.k))

    def http_worker() -> Callable[[int], object]:
        own = httpx.Client(base_url=client.base_url, timeout=600)
        return lambda i: own.post(path, content=bodies[i % len(bodies)], headers=headers).raise_for_status()

    pg_found: dict[int, list[int]] = {}

    def pg_worker() -> Callable[[int], object]:
        raw = connect(db)
        search = PgvectorSearch(raw, service, hnsw=True)

        def call(i: int) -> object:
            pg_found[i % len(queries)] = search.one_per_call(
                queries[i % len(queries)][None], args.k, args.pg_ef_search
            )[0]
            return pg_found[i % len(queries)]

        return call

    count = args.queries * 2
    http_qps, http_p99 = concurrent_qps(http_worker, count, args.clients)
    pg_qps, pg_p99 = concurrent_qps(pg_worker, count, args.clients)
    run.value("http_8clients_qps", f"HTTP search, {args.clients} clients: q/s (p99 {http_p99:.2f} ms)", http_qps, "q/s")
    run.value(
        "pgvector_8clients_qps", f"pgvector hnsw, {args.clients} connections: q/s (p99 {pg_p99:.2f} ms)", pg_qps, "q/s"
    )
    run.numbers |= {"http_8clients_p99_ms": http_p99, "pgvector_8clients_p99_ms": pg_p99}
    run.value("http_8clients_vs_pgvector_hnsw", "  ratio", http_qps / pg_qps)
    pg_recall = recall([pg_found[i] for i in range(args.queries)], truth, args.k)
    run.value("pgvector_recall", f"recall@{args.k} of pgvector hnsw at ef_search {args.pg_ef_search}", pg_recall)


def _embedding_of_image(db: Database, service: ServiceRecord) -> dict[int, int]:
    """Each image's embedding id (one each here): the HTTP answers name images, the truth embeddings."""
    with db.engine.connect() as conn:
        pairs = conn.connection.driver_connection.execute(  # type: ignore[union-attr]
            "SELECT image_id, id FROM embedding WHERE service_id = %s", (service.id,)
        )
        return {int(image_id): int(embedding_id) for image_id, embedding_id in pairs}


def deepdetect_rows(run: Run, client: httpx.Client, photos: Path) -> None:
    """DeepDetect's /predict search of one photo (decode + MobileNetV2 + kNN + join) beside the native
    upload search of the same photo, both over HTTP."""
    service = {"mllib": "torch", "parameters": {"mllib": {"template": "mobilenet_v2", "weights": "DEFAULT"}}}
    if client.put("/services/ddbench", json=service).status_code != 201:
        print("DeepDetect rows skipped: MobileNetV2's offline weights are not installed (see README)")
        return
    client.post(
        "/predict", json={"service": "ddbench", "data": [str(photos)], "parameters": {"output": {"index": True}}}
    ).raise_for_status()
    client.post("/api/v1/services/ddbench/builds", json={"index_type": "HNSW32"}).raise_for_status()
    query = photos / "chelsea.jpg"
    body = {"service": "ddbench", "data": [str(query)], "parameters": {"output": {"search": True}}}
    content = query.read_bytes()

    def dd(_: int) -> object:
        return client.post("/predict", json=body).raise_for_status()

    def native(_: int) -> object:
        files = {"file": ("chelsea.jpg", content, "image/jpeg")}
        return client.post("/api/v1/services/ddbench/search/upload", files=files).raise_for_status()

    run.latency("deepdetect_search", "DeepDetect POST /predict search (a photo, MobileNetV2)", timed_calls(dd, 50))
    run.latency("native_upload_search", "native POST .../search/upload (the same photo)", timed_calls(native, 50))


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    run = Run()
    with tempfile.TemporaryDirectory(prefix="simsearch-api-bench-") as tmp, embedded_database(Path(tmp)) as db:
        vectors = Mixture.make(args.dim, clusters=256, seed=1338).sample(args.n, seed=1339)
        service, _ = load_vectors(db.engine, "bench", vectors)
        del vectors
        hnsw_build_seconds(db, service)  # pgvector's index, for the concurrent reference
        photos = Path(tmp) / "photos"
        originals = photos
        if args.deepdetect:
            originals, _ = write_samples(photos)
        server, client = start_server(db, Path(tmp) / "home", photos, workers=args.workers)
        try:
            client.post("/api/v1/services/bench/builds", json={"index_type": "HNSW32"}).raise_for_status()
            print(
                f"{args.n} x {args.dim} vectors, HNSW32 efSearch={args.ef_search}, {args.queries} queries, k={args.k}"
            )
            vector_rows(run, args, db, service, client)
            if args.deepdetect:
                deepdetect_rows(run, client, originals)
        finally:
            client.close()
            server.terminate()
            server.wait(timeout=60)
    if args.json:
        args.json.write_text(json.dumps(run.numbers, indent=2) + "\n")


if __name__ == "__main__":
    main()
