"""Turn the strings a user gives (paths, directories, base64, http(s) URLs) into sources of image bytes.

Every explicitly named item is checked before the first source is yielded, so a bad item fails the
whole call before anything is written; directories are walked lazily, in sorted order, so a folder of
any size streams in bounded memory. URLs are fetched only when a `UrlPolicy` is given, during that
first pass, so their bytes are held in memory until yielded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from simsearch.errors import BadInput
from simsearch.input.decode import is_image_header
from simsearch.input.fetch import UrlPolicy, fetch_url

MAX_FILE_BYTES = 256 << 20  # larger files are refused before they are read

_BASE64_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n\r")


@dataclass(frozen=True, slots=True)
class Source:
    """One image to read. `uri` is what gets stored; `explicit` is False for files found in a directory
    (those are skipped when they do not decode, while an explicit one is an error)."""

    uri: str
    position: int
    explicit: bool
    path: Path | None = None
    content: bytes | None = None

    def _path(self) -> Path:
        if self.path is None:
            raise ValueError("a source has either content or a path")
        return self.path

    def head(self, size: int = 64 << 10) -> bytes:
        """The first bytes: enough for an image header."""
        if self.content is not None:
            return self.content[:size]
        with self._path().open("rb") as fh:
            return fh.read(size)

    def read(self, *, max_bytes: int = MAX_FILE_BYTES) -> bytes:
        if self.content is not None:
            return self.content
        path = self._path()
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise BadInput(f"data[{self.position}]", f"{self.uri}: file is {size} bytes, the limit is {max_bytes}")
            return path.read_bytes()
        except OSError as exc:
            raise BadInput(f"data[{self.position}]", f"could not read {self.uri}: {exc.strerror or exc}") from exc


def _under_roots(path: Path, roots: Sequence[Path]) -> bool:
    return any(path.is_relative_to(root) for root in roots)


def under_roots(path: str | Path, roots: Sequence[Path]) -> bool:
    """Whether `path`, with `~` and symlinks resolved, lies under one of `roots` (False when it
    cannot be resolved). The one check for every path a client names: data, weights, repositories."""
    try:
        resolved = Path(path).expanduser().resolve()
    except (OSError, ValueError, RuntimeError):
        return False
    return _under_roots(resolved, [Path(root).resolve() for root in roots])


def _decode_base64(item: str) -> bytes | None:
    if not item or not frozenset(item.encode("ascii", "replace")) <= _BASE64_CHARS:
        return None
    try:
        raw = base64.b64decode(item, validate=False)
    except (binascii.Error, ValueError):
        return None
    return raw or None


def _resolve(item: str | bytes, position: int, roots: Sequence[Path], urls: UrlPolicy | None) -> Source | Path:
    field = f"data[{position}]"
    if isinstance(item, bytes):  # an upload: the bytes themselves
        if not item:
            raise BadInput(field, "the uploaded file is empty")
        return Source(uri="sha256:" + hashlib.sha256(item).hexdigest(), position=position, explicit=True, content=item)
    lowered = item[:10].lower()
    if lowered.startswith(("http://", "https://")):
        if urls is None:
            raise BadInput(field, f"URL fetching is disabled: {item[:200]}; set SIMSEARCH_ALLOW_URLS=1 to fetch URLs")
        return Source(uri=item, position=position, explicit=True, content=fetch_url(item, urls, field=field))
    if lowered.startswith("file://"):
        raise BadInput(field, "file:// URLs are refused; give the path itself")
    if item and os.path.lexists(item):
        resolved = Path(item).resolve()
        if not _under_roots(resolved, roots):
            allowed = ":".join(str(r) for r in roots)
            raise BadInput(field, f"{item} is outside the allowed data roots ({allowed}); set SIMSEARCH_DATA_ROOTS")
        if resolved.is_dir():
            return Path(item)
        if not resolved.is_file():
            raise BadInput(field, f"{item} is not a regular file")
        if not os.access(resolved, os.R_OK):
            raise BadInput(field, f"{item} is not readable")
        return Source(uri=item, position=position, explicit=True, path=resolved)
    content = _decode_base64(item)
    if content is None or not is_image_header(content[: 64 << 10]):
        shown = item if len(item) <= 200 else item[:200] + "..."
        raise BadInput(field, f"Could not read image(s): {shown} (no such file or directory, nor base64 image bytes)")
    uri = "sha256:" + hashlib.sha256(content).hexdigest()
    return Source(uri=uri, position=position, explicit=True, content=content)


def _path_order(entry: os.DirEntry[str]) -> str:
    return entry.name + "/" if entry.is_dir(follow_symlinks=False) else entry.name


def _walk(directory: Path, position: int, roots: Sequence[Path]) -> Iterator[Source]:
    """Files under `directory` in the order of their path strings (a folder sorts as its name + "/",
    so `a.png` comes before `a/x.png`)."""
    try:
        entries = sorted(
            os.scandir(directory), key=lambda e: e.name + "/" if e.is_dir(follow_symlinks=False) else e.name
        )
    except OSError:
        return
    for entry in entries:
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(path, position, roots)
            continue
        resolved = path.resolve()
        # A link inside a root may point outside it: such files are not read.
        if resolved.is_file() and _under_roots(resolved, roots):
            yield Source(uri=str(path), position=position, explicit=False, path=resolved)


def iter_sources(
    items: Sequence[str | bytes],
    *,
    roots: Sequence[Path],
    check: Callable[[Source], None] | None = None,
    urls: UrlPolicy | None = None,
) -> Iterator[Source]:
    """Yield a source per explicit file, base64 string, URL or uploaded bytes, and per file inside each directory.

    Raises `BadInput` naming `data[i]` for the first unusable item, before yielding anything;
    `check` is called on each explicit source during that first pass (e.g. an image header probe).
    http(s) URLs are refused unless `urls` is given; then they are fetched in that first pass.
    """
    if not items:
        raise BadInput("data", "missing data: give at least one file, directory or base64 image")
    resolved_roots = [Path(root).resolve() for root in roots]
    resolved = [_resolve(item, i, resolved_roots, urls) for i, item in enumerate(items)]
    if check is not None:
        for entry in resolved:
            if isinstance(entry, Source):
                check(entry)

    def generate() -> Iterator[Source]:
        for i, entry in enumerate(resolved):
            if isinstance(entry, Source):
                yield entry
            else:
                yield from _walk(entry, i, resolved_roots)

    return generate()
