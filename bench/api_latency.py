"""`python -m bench.api_latency`: latency of the HTTP API as clients see it, on a real `simsearch serve`.

Starts the server (1 worker) on a free loopback port with a temporary home and the embedded Postgres,
indexes scikit-image's sample photos with MobileNetV2 (offline weights, see README), then times 100
sequential calls of each kind and prints the median and p95 in milliseconds.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from simsearch.samples import write_samples

CALLS = 100


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _timed(call: Callable[[], httpx.Response]) -> tuple[float, float]:
    call().raise_for_status()  # warm-up (and a check)
    samples = []
    for _ in range(CALLS):
        started = time.perf_counter()
        call().raise_for_status()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(0.95 * CALLS) - 1]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="simsearch-api-bench-") as tmp:
        home = Path(tmp)
        os.chmod(home, 0o755)  # noqa: S103 - the embedded server runs as its own user when we are root
        originals, _ = write_samples(home / "photos")
        port = _free_port()
        env = {**os.environ, "SIMSEARCH_HOME": str(home), "SIMSEARCH_DATA_ROOTS": str(home / "photos")}
        env.pop("DATABASE_URL", None)
        server = subprocess.Popen(  # noqa: S603 - our own console script
            [sys.executable, "-m", "simsearch", "serve", "--port", str(port)], env=env, stderr=subprocess.DEVNULL
        )
        base = f"http://127.0.0.1:{port}"
        client = httpx.Client(base_url=base, timeout=120)
        try:
            for _ in range(240):
                try:
                    if client.get("/api/v1/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.5)
            service = {"mllib": "torch", "parameters": {"mllib": {"template": "mobilenet_v2", "weights": "DEFAULT"}}}
            client.put("/services/bench", json=service).raise_for_status()
            indexed = client.post(
                "/predict",
                json={"service": "bench", "data": [str(originals)], "parameters": {"output": {"index": True}}},
            ).json()
            client.post("/api/v1/services/bench/builds", json={"index_type": "HNSW32"}).raise_for_status()
            query = str(originals / "chelsea.jpg")
            image_id = client.get("/api/v1/images", params={"service": "bench", "limit": 1}).json()["items"][0]["id"]
            vector = client.post("/predict", json={"service": "bench", "data": [query]}).json()["body"]["predictions"]
            rows: dict[str, Callable[[], httpx.Response]] = {
                "DeepDetect /predict search (decode + MobileNetV2 224px + kNN + join)": lambda: client.post(
                    "/predict",
                    json={"service": "bench", "data": [query], "parameters": {"output": {"search": True}}},
                ),
                "native search by stored image id (no model)": lambda: client.post(
                    "/api/v1/services/bench/search", json={"image_id": image_id, "k": 10}
                ),
                "native search by raw vector (no model)": lambda: client.post(
                    "/api/v1/services/bench/search", json={"vector": vector[0]["vals"], "k": 10}
                ),
                "native search by vector with a metadata filter": lambda: client.post(
                    "/api/v1/services/bench/search", json={"vector": vector[0]["vals"], "k": 5, "filter": {"x": 1}}
                ),
                "GET /api/v1/health": lambda: client.get("/api/v1/health"),
            }
            print(f"{len(indexed['body']['predictions'])} images, HNSW32, {CALLS} sequential calls each, 1 worker")
            for name, call in rows.items():
                median, p95 = _timed(call)
                print(f"{name:72s} median {median:7.2f} ms   p95 {p95:7.2f} ms")
        finally:
            client.close()
            server.terminate()
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
