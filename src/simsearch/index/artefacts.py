"""Artefact stores: where a build publishes a generation's files and where every replica fetches them from.

A generation is a set of files (the FAISS index, an `ondisk` IVF index's lists, Annoy's trees and ids)
stored under one key prefix, `<service>/gen-<id>/`; Postgres records the prefix, the total size, a
digest and each file's size and sha256 (a `Manifest`), never a host's path. Two stores: a directory
(the default `$SIMSEARCH_HOME/indexes`, or a shared mount) and S3-compatible object storage (obstore).
A replica fetches into its own cache folder and checks every file's checksum before loading it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import obstore
from obstore.exceptions import BaseError as ObstoreError
from obstore.store import S3Store

from simsearch.errors import Unavailable

if TYPE_CHECKING:
    from obstore.store import ClientConfig
    from obstore.store import S3Config as ObstoreS3Config

_CHUNK = 8 << 20  # bytes hashed / copied at a time
_VERIFIED = ".verified"  # written last into a cache folder: every file in it matched the manifest


class ArtefactError(Unavailable):
    """A generation's files cannot be published or fetched; `reason` is a short, stable kind (logged
    once per generation and kind, reported by readiness)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ArtefactStore(Protocol):
    """The whole interface a store offers: keys are `/`-separated and relative."""

    def describe(self) -> str: ...  # where it is, for logs (no secrets)

    def put(self, key: str, source: Path) -> None: ...

    def get_to_file(self, key: str, dest: Path) -> None: ...  # raises ArtefactError("missing file", ...)

    def exists(self, key: str) -> bool: ...

    def delete(self, keys: Iterable[str]) -> None: ...  # missing keys are no error


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a build published: the key prefix and each file's (size, sha256)."""

    key: str
    files: dict[str, tuple[int, str]]

    @property
    def size(self) -> int:
        return sum(size for size, _ in self.files.values())

    @property
    def sha256(self) -> str:
        """One digest of the generation: over each file's name, size and sha256, in name order."""
        lines = "".join(f"{name}\t{size}\t{digest}\n" for name, (size, digest) in sorted(self.files.items()))
        return hashlib.sha256(lines.encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {name: {"size": size, "sha256": digest} for name, (size, digest) in self.files.items()}

    @classmethod
    def from_row(cls, key: str, files: dict[str, Any]) -> Manifest:
        return cls(key=key, files={name: (int(f["size"]), str(f["sha256"])) for name, f in files.items()})


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class DirectoryStore:
    """Files under a root folder (local, or a mount every replica shares). A fetch into a cache on the
    same file system is a hard link (no copy; the file lives on while a replica maps it, even after the
    store drops it), else a copy."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        return f"directory {self.root}"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def put(self, key: str, source: Path) -> None:
        target = self._path(key)
        if target.exists() and target.samefile(source):
            return  # the build wrote it in place (the default store is the build's own index folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        shutil.copyfile(source, tmp)
        _fsync(tmp)
        tmp.replace(target)

    def get_to_file(self, key: str, dest: Path) -> None:
        source = self._path(key)
        try:
            try:
                os.link(source, dest)
            except OSError as exc:
                if not source.exists():
                    raise FileNotFoundError(source) from exc
                shutil.copyfile(source, dest)  # another file system: copy
        except FileNotFoundError as exc:
            raise ArtefactError("missing file", f"{key} is not in {self.describe()}") from exc
        except OSError as exc:
            raise ArtefactError("store unreachable", f"{self.describe()}: {exc}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)
            parent = self._path(key).parent
            if parent != self.root and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()


@dataclass(frozen=True, slots=True)
class S3Config:
    """S3-compatible object storage: `url` is s3://bucket[/prefix]; the rest are obstore's options (None:
    obstore's own default, e.g. the AWS_* environment for credentials)."""

    url: str
    endpoint: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    allow_http: bool = False
    connect_timeout_s: float = 5.0
    timeout_s: float = 600.0  # one object's whole transfer (a large index file takes a while)
    retries: int = 3


class ObjectStore:
    """S3-compatible object storage through obstore (Rust's object_store: multipart uploads, retries)."""

    def __init__(self, config: S3Config) -> None:
        bucket, _, prefix = config.url.removeprefix("s3://").partition("/")
        if not bucket:
            raise ValueError(f"{config.url!r}: an S3 artefact store is s3://bucket or s3://bucket/prefix")
        self._where = f"s3://{bucket}/{prefix}".rstrip("/") + (f" at {config.endpoint}" if config.endpoint else "")
        options: ClientConfig = {
            "allow_http": config.allow_http,
            "connect_timeout": timedelta(seconds=config.connect_timeout_s),
            "timeout": timedelta(seconds=config.timeout_s),
        }
        s3: ObstoreS3Config = {}  # unset ones: obstore reads the AWS_* environment
        if config.endpoint:
            s3["endpoint"] = config.endpoint
            s3["virtual_hosted_style_request"] = False  # http://host/bucket/key: what self-hosted stores serve
        if config.region:
            s3["region"] = config.region
        if config.access_key_id:
            s3["access_key_id"] = config.access_key_id
        if config.secret_access_key:
            s3["secret_access_key"] = config.secret_access_key
        self._store = S3Store(
            bucket,
            prefix=prefix.strip("/") or None,
            config=s3,
            client_options=options,
            # a dead store fails within seconds; the cache retries with its own backoff
            retry_config={
                "max_retries": config.retries,
                "retry_timeout": timedelta(seconds=config.connect_timeout_s * (config.retries + 1)),
                "backoff": {
                    "init_backoff": timedelta(milliseconds=100),
                    "max_backoff": timedelta(seconds=2),
                    "base": 2,
                },
            },
        )

    def describe(self) -> str:
        return self._where

    def put(self, key: str, source: Path) -> None:
        try:
            obstore.put(self._store, key, source)  # a path: streamed, multipart when large
        except ObstoreError as exc:
            raise ArtefactError(
                "store unreachable", f"cannot write {key} to {self._where}: {_first_line(exc)}"
            ) from exc

    def get_to_file(self, key: str, dest: Path) -> None:
        try:
            with dest.open("wb") as fh:
                for chunk in obstore.get(self._store, key).stream(min_chunk_size=_CHUNK):
                    fh.write(memoryview(chunk))
        except FileNotFoundError as exc:  # obstore's NotFoundError is one
            raise ArtefactError("missing file", f"{key} is not in {self._where}") from exc
        except ObstoreError as exc:
            raise ArtefactError(
                "store unreachable", f"cannot read {key} from {self._where}: {_first_line(exc)}"
            ) from exc

    def exists(self, key: str) -> bool:
        try:
            obstore.head(self._store, key)
        except FileNotFoundError:
            return False
        except ObstoreError as exc:
            raise ArtefactError("store unreachable", f"{self._where}: {_first_line(exc)}") from exc
        return True

    def delete(self, keys: Iterable[str]) -> None:
        try:
            obstore.delete(self._store, list(keys))
        except FileNotFoundError:
            pass
        except ObstoreError as exc:
            raise ArtefactError("store unreachable", f"cannot delete from {self._where}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _fsync(path: Path) -> None:
    with path.open("rb") as fh:
        os.fsync(fh.fileno())


def publish(store: ArtefactStore, key: str, folder: Path) -> Manifest:
    """Put every file of a generation folder under `key/`, and say what was put (checksums taken from
    the files as written, before they leave this host)."""
    files: dict[str, tuple[int, str]] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.endswith((".tmp", ".part")):
            files[path.name] = (path.stat().st_size, file_sha256(path))
            store.put(f"{key}/{path.name}", path)
    return Manifest(key=key, files=files)


def fetch(store: ArtefactStore, manifest: Manifest, folder: Path) -> Path:
    """The generation's files in `folder` (a replica's own cache), each checked against the manifest.
    A folder fetched and checked before is used as it is; a mismatch is refused (ArtefactError)."""
    marker = folder / _VERIFIED
    if marker.is_file() and marker.read_text() == manifest.sha256:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    for name, (size, digest) in manifest.files.items():
        target = folder / name
        part = folder / f"{name}.part"
        part.unlink(missing_ok=True)
        store.get_to_file(f"{manifest.key}/{name}", part)
        got_size, got_digest = part.stat().st_size, file_sha256(part)
        if (got_size, got_digest) != (size, digest):
            part.unlink(missing_ok=True)
            raise ArtefactError(
                "checksum mismatch",
                f"{manifest.key}/{name} in {store.describe()} has {got_size} bytes, sha256 {got_digest[:12]}…; "
                f"the build recorded {size} bytes, sha256 {digest[:12]}…",
            )
        part.replace(target)
    marker.write_text(manifest.sha256)
    return folder
