"""Turn the strings a user gives (paths, directories, base64, http(s) URLs) into sources of image bytes.

Every explicitly named item is checked before the first source is yielded, so a bad item fails the
whole call before anything is written; directories are walked lazily, in sorted order, so a folder of
any size (or depth) streams in bounded memory. URLs are fetched only when a `UrlPolicy` is given, during
that first pass, so their bytes are held in memory until yielded.

Inside a directory, every entry that is not a folder becomes a source, and one that cannot be an image
file (a symlink loop, a dangling link, a link out of the data roots or to a folder, a FIFO, socket or
device, a name that is not valid UTF-8) is a source with a `skip_reason`: reading it fails, so it is
skipped and counted like a file that is not an image, and the reason is logged. Such a name given
directly is refused (`BadInput`). Names that are not UTF-8 are skipped rather than stored under an
escaped uri: a uri is the path as given, to open the file again, and no escaping of arbitrary bytes is
both lossless and that path; their skipped uri shows the bad bytes as `\\xNN`.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import logging
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from simsearch.errors import BadInput
from simsearch.input.decode import is_image_header
from simsearch.input.fetch import UrlPolicy, fetch_url

MAX_FILE_BYTES = 256 << 20  # larger files are refused before they are read

_log = logging.getLogger(__name__)

_BASE64_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n\r")


@dataclass(frozen=True, slots=True)
class Source:
    """One image to read. `uri` is what gets stored; `explicit` is False for files found in a directory
    (those are skipped when they do not decode, while an explicit one is an error). A directory entry
    that is no readable file has a `skip_reason` and neither path nor content: reading it fails."""

    uri: str
    position: int
    explicit: bool
    path: Path | None = None
    content: bytes | None = None
    skip_reason: str | None = None

    def _path(self) -> Path:
        if self.skip_reason is not None:
            _log.warning("skipped %s: %s", self.uri, self.skip_reason)
            raise BadInput(f"data[{self.position}]", f"{self.uri}: {self.skip_reason}")
        if self.path is None:
            raise ValueError("a source has either content or a path")
        return self.path

    def head(self, size: int = 64 << 10) -> bytes:
        """The first bytes: enough for an image header."""
        if self.content is not None:
            return self.content[:size]
        return self._read(size)

    def read(self, *, max_bytes: int = MAX_FILE_BYTES) -> bytes:
        if self.content is not None:
            return self.content
        return self._read(None, max_bytes=max_bytes)

    def _read(self, size: int | None, *, max_bytes: int = MAX_FILE_BYTES) -> bytes:
        """The file's bytes (the first `size` of them); only a regular file is read, so a file swapped for
        a FIFO after the walk cannot hang the call, nor a symlink swapped in lead out of the roots."""
        path = self._path()
        field = f"data[{self.position}]"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise BadInput(field, f"could not read {self.uri}: {exc.strerror or exc}") from exc
        with os.fdopen(fd, "rb") as fh:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise BadInput(field, f"{self.uri} is not a regular file")
            if size is None and info.st_size > max_bytes:
                raise BadInput(field, f"{self.uri}: file is {info.st_size} bytes, the limit is {max_bytes}")
            try:
                data = fh.read(size if size is not None else max_bytes + 1)
            except OSError as exc:
                raise BadInput(field, f"could not read {self.uri}: {exc.strerror or exc}") from exc
            if size is None and len(data) > max_bytes:  # it grew since the stat
                raise BadInput(field, f"{self.uri}: file is over the limit of {max_bytes} bytes")
            return data


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
    if not is_utf8(item):  # first: a URL of undecodable bytes (from a command line) must not reach the fetcher
        raise BadInput(field, f"{_shown(_shown_path(item))} is not valid UTF-8: rename the file (a uri must be UTF-8)")
    lowered = item[:10].lower()
    if lowered.startswith(("http://", "https://")):
        if urls is None:
            raise BadInput(field, f"URL fetching is disabled: {item[:200]}; set SIMSEARCH_ALLOW_URLS=1 to fetch URLs")
        return Source(uri=item, position=position, explicit=True, content=fetch_url(item, urls, field=field))
    if lowered.startswith("file://"):
        raise BadInput(field, "file:// URLs are refused; give the path itself")
    if item and os.path.lexists(item):
        resolved = _real_path(item)
        if isinstance(resolved, str):
            raise BadInput(field, f"{item} is {resolved}")
        if not _under_roots(resolved, roots):
            allowed = ":".join(str(r) for r in roots)
            raise BadInput(field, f"{item} is outside the allowed data roots ({allowed}); set SIMSEARCH_DATA_ROOTS")
        if resolved.is_dir():
            if not os.access(resolved, os.R_OK | os.X_OK):
                raise BadInput(field, f"{item} is a folder that cannot be listed")
            return Path(item)
        if not resolved.is_file():
            raise BadInput(field, f"{item} is not a regular file")
        if not os.access(resolved, os.R_OK):
            raise BadInput(field, f"{item} is not readable")
        return Source(uri=item, position=position, explicit=True, path=resolved)
    content = _decode_base64(item)
    if content is None or not is_image_header(content[: 64 << 10]):
        shown = _shown(item)
        raise BadInput(field, f"Could not read image(s): {shown} (no such file or directory, nor base64 image bytes)")
    uri = "sha256:" + hashlib.sha256(content).hexdigest()
    return Source(uri=uri, position=position, explicit=True, content=content)


def _shown(text: str) -> str:
    return text if len(text) <= 200 else text[:200] + "..."


def is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a name's undecodable bytes (surrogateescape), or a lone surrogate from JSON
        return False
    return True


def _shown_path(path: str) -> str:
    """`path` as valid UTF-8 text whatever its bytes: a byte that is not UTF-8 shows as \\xNN."""
    try:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate no file name decodes to
        return path.encode("utf-8", "backslashreplace").decode("utf-8")


def _real_path(path: str) -> Path | str:
    """`path` with every symlink resolved, or why it has none."""
    try:
        return Path(path).resolve(strict=True)
    except RuntimeError:  # Python before 3.13, on a loop
        return "a symlink loop"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symlink loop"
        if exc.errno == errno.ENOENT:
            return "a symlink to nothing (dangling)"
        return f"not readable ({exc.strerror or exc})"


def _skipped(path: str, position: int, reason: str) -> Source:
    return Source(uri=_shown_path(path), position=position, explicit=False, skip_reason=reason)


def _found(path: str, position: int, roots: Sequence[Path]) -> Source:
    """A directory entry that is not a folder: a file to read, or a source that says why it is skipped."""
    if not is_utf8(path):
        return _skipped(path, position, "the file name is not valid UTF-8 (rename it to index it)")
    resolved = _real_path(path)
    if isinstance(resolved, str):
        return _skipped(path, position, resolved)
    if not _under_roots(resolved, roots):  # a link inside a root may point outside it: not read
        return _skipped(path, position, "a link to outside the data roots")
    try:
        mode = resolved.stat().st_mode
    except OSError as exc:
        return _skipped(path, position, f"not readable ({exc.strerror or exc})")
    if stat.S_ISDIR(mode):  # not followed: a cycle could hide behind it
        return _skipped(path, position, "a link to a folder (links to folders are not followed)")
    if not stat.S_ISREG(mode):
        return _skipped(path, position, "not a regular file (a FIFO, socket or device)")
    return Source(uri=path, position=position, explicit=False, path=resolved)


def _is_folder(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _listing(directory: str) -> list[os.DirEntry[str]] | None:
    """A folder's entries in the order of their path strings (a folder sorts as its name + "/", so
    `a.png` comes before `a/x.png`); None when it cannot be listed."""
    try:
        with os.scandir(directory) as entries:
            return sorted(entries, key=lambda e: e.name + "/" if _is_folder(e) else e.name)
    except OSError:
        return None


def _walk(directory: Path, position: int, roots: Sequence[Path]) -> Iterator[Source]:
    """Every entry under `directory` but its folders, depth first in path order; a stack, not recursion,
    so a folder nested deeper than Python's recursion limit is walked too."""
    stack = [iter(_listing(str(directory)) or [])]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
        elif not _is_folder(entry):
            yield _found(entry.path, position, roots)
        elif (inside := _listing(entry.path)) is not None:
            stack.append(iter(inside))
        else:
            yield _skipped(entry.path, position, "a folder that cannot be listed")


def iter_sources(
    items: Sequence[str | bytes],
    *,
    roots: Sequence[Path],
    check: Callable[[Source], None] | None = None,
    urls: UrlPolicy | None = None,
) -> Iterator[Source]:
    """Yield a source per explicit file, base64 string, URL or uploaded bytes, and per entry inside each
    directory (its folders walked; an entry that is no readable file carries its `skip_reason`).

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
