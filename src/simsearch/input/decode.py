"""Bytes -> RGB pixels with OpenCV, after a header-only size check (no decompression bombs)."""

from __future__ import annotations

import hashlib
import io
import tempfile
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from simsearch.errors import BadInput


@dataclass(frozen=True, slots=True)
class Decoded:
    rgb: np.ndarray  # (height, width, 3) uint8, EXIF orientation applied
    width: int
    height: int
    sha256: str  # hex digest of the encoded bytes


def _header_size(raw: bytes) -> tuple[int, int] | None:
    """Width and height from the file header only; None when Pillow does not know the format."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as img:
                return img.size
    except Image.DecompressionBombError:
        return (Image.MAX_IMAGE_PIXELS or 0) * 2 + 1, 1
    except Exception:
        return None


def is_image_header(head: bytes) -> bool:
    """Whether Pillow or OpenCV recognises these first bytes as an image format."""
    return bool(head) and (_header_size(head) is not None or _opencv_knows(head))


def probe_image(head: bytes, *, max_pixels: int, field: str = "data") -> None:
    """A cheap check from the first bytes of a file: refuses what Pillow knows is too large, and what
    neither Pillow nor OpenCV recognises as an image. Used to fail a request before anything is written."""
    size = _header_size(head)
    if size is None:
        # Pillow does not know it; OpenCV may (EXR, HDR, PFM...). Its signature check needs a file.
        if not head or not _opencv_knows(head):
            raise BadInput(field, "not an image file (unknown or corrupt header)")
        return
    if size[0] * size[1] > max_pixels:
        raise BadInput(field, f"image has {size[0] * size[1]} pixels, the limit is {max_pixels} (SIMSEARCH_MAX_PIXELS)")


def _opencv_knows(head: bytes) -> bool:
    with tempfile.NamedTemporaryFile() as fh:
        fh.write(head)
        fh.flush()
        return bool(cv2.haveImageReader(fh.name))


def decode_image(raw: bytes, *, max_pixels: int, field: str = "data") -> Decoded:
    """Decode an encoded image; raises `BadInput(field, ...)` when it is not an image or too large."""
    size = _header_size(raw)
    if size is not None and size[0] * size[1] > max_pixels:
        raise BadInput(field, f"image has {size[0] * size[1]} pixels, the limit is {max_pixels} (SIMSEARCH_MAX_PIXELS)")
    # IMREAD_COLOR applies the EXIF orientation and converts grey, alpha and 16-bit images to 8-bit BGR.
    bgr = cv2.imdecode(np.frombuffer(raw, dtype=np.uint8), cv2.IMREAD_COLOR) if raw else None
    if bgr is None:
        raise BadInput(field, "not a decodable image (corrupt or unsupported format)")
    height, width = bgr.shape[:2]
    if width * height > max_pixels:
        raise BadInput(field, f"image has {width * height} pixels, the limit is {max_pixels} (SIMSEARCH_MAX_PIXELS)")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return Decoded(rgb=rgb, width=width, height=height, sha256=hashlib.sha256(raw).hexdigest())
