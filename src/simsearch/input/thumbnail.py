"""Thumbnails of stored images: the stored uri as a source file under the data roots -> a JPEG of at most
`size` pixels on its longer side, of the whole image or of one box, cached as a file keyed by what it shows.

A thumbnail is made only from the file that was indexed: its bytes must still hash to the stored sha256,
so a file replaced since indexing is no thumbnail of the image (a 404 that says to index it again). The key
holds that hash, the size and the box, so a cached file never goes stale and serves as its own ETag.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from simsearch.errors import BadInput, NotFound
from simsearch.input.crop import crop_box
from simsearch.input.decode import decode_image
from simsearch.input.sources import MAX_FILE_BYTES, Source, under_roots

RENDERING = 1  # part of every key: a change to how thumbnails are drawn must not serve the old files
_JPEG_QUALITY = 85

_log = logging.getLogger(__name__)


def source_file(uri: str, roots: Sequence[Path]) -> Path:
    """The file a stored image was indexed from (its uri as a path, every link resolved); NotFound when
    the uri names no file (uploaded bytes, a URL), the file is gone, or it lies outside the data roots."""
    if not uri or uri.startswith("sha256:") or uri[:10].lower().startswith(("http://", "https://")):
        raise NotFound("the image was indexed from uploaded bytes or a URL: there is no source file to show")
    try:
        resolved = Path(uri).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):  # gone, a dangling link or a loop, a NUL in the name
        raise NotFound(f"the source file {uri[:200]} is gone: index it again, or delete the image") from None
    if not under_roots(resolved, roots):
        raise NotFound(f"the source file {uri[:200]} is outside the data roots (SIMSEARCH_DATA_ROOTS)")
    try:
        regular = resolved.is_file()
    except OSError:  # e.g. a folder on the way that may not be searched: no file to show either
        regular = False
    if not regular:
        raise NotFound(f"the source file {uri[:200]} is not a regular file")
    return resolved


def read_source(path: Path, uri: str, sha256: str, *, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The source file's bytes, when they are still those that were indexed."""
    try:
        raw = Source(uri=uri, position=0, explicit=True, path=path).read(max_bytes=max_bytes)
    except BadInput as exc:  # swapped for a FIFO or a link since the check, unreadable, grown over the cap
        raise NotFound(f"the source file cannot be read: {exc.reason}") from None
    if hashlib.sha256(raw).hexdigest() != sha256:
        raise NotFound(f"the source file {uri[:200]} changed since it was indexed: index it again")
    return raw


def thumbnail_key(sha256: str, size: int, box: Sequence[float] | None) -> str:
    """What a thumbnail shows, as a file name and an ETag: the source's hash, the size, the box."""
    part = "whole" if box is None else "_".join(f"{float(v):g}" for v in box)
    return f"{sha256}.{size}.{part}.r{RENDERING}"


def render_thumbnail(raw: bytes, *, size: int, max_pixels: int, box: Sequence[float] | None = None) -> bytes:
    """A JPEG of the image (or of `box` in it, in source pixels) with its longer side at most `size`;
    never enlarged."""
    try:
        rgb = decode_image(raw, max_pixels=max_pixels).rgb
    except BadInput as exc:  # e.g. a pixel limit lowered since indexing
        raise NotFound(f"the source file cannot be shown: {exc.reason}") from None
    if box is not None:
        cropped = crop_box(rgb, box)
        if cropped is None:
            raise NotFound("the box lies outside the image")
        rgb = cropped
    height, width = rgb.shape[:2]
    scale = size / max(height, width)
    if scale < 1:
        shape = (max(1, round(width * scale)), max(1, round(height * scale)))
        rgb = cv2.resize(rgb, shape, interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 BGR image
        raise RuntimeError("OpenCV could not encode a JPEG")
    return np.asarray(encoded).tobytes()


def cached_thumbnail(cache_dir: Path, key: str, make: Callable[[], bytes]) -> bytes:
    """The cached file of `key`, or `make()` written there first (atomically: a concurrent request
    reads either no file or a whole one)."""
    path = cache_dir / key[:2] / f"{key}.jpg"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    data = make()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".jpg")
    except OSError as exc:  # a full or read-only disk costs the cache, not the answer
        _log.warning("thumbnail not cached in %s: %s", cache_dir, exc)
        return data
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        _log.warning("thumbnail not cached in %s: %s", cache_dir, exc)
    return data
