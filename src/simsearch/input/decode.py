"""Bytes -> RGB pixels with OpenCV, after a header-only size check (no decompression bombs).

OpenCV allocates an image from its header before decoding it, so the pixel limit is checked on the
header first, read as OpenCV's decoder for that format will read it (`header.py`); bytes whose size
cannot be read that way are never handed to OpenCV.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import cv2
import numpy as np

from simsearch.errors import BadInput
from simsearch.input.header import header_size, image_format


@dataclass(frozen=True, slots=True)
class Decoded:
    rgb: np.ndarray  # (height, width, 3) uint8, EXIF orientation applied
    width: int
    height: int
    sha256: str  # hex digest of the encoded bytes


def is_image_header(head: bytes) -> bool:
    """Whether these first bytes start a format OpenCV decodes (and simsearch can size from its header)."""
    return image_format(head) is not None


def _check_pixels(size: tuple[int, int], max_pixels: int, field: str) -> None:
    pixels = size[0] * size[1]
    if pixels > max_pixels:
        raise BadInput(field, f"image has {pixels} pixels, the limit is {max_pixels} (SIMSEARCH_MAX_PIXELS)")


def probe_image(head: bytes, *, max_pixels: int, field: str = "data") -> None:
    """A cheap check from the first bytes of a file: refuses what is no image format OpenCV decodes, and an
    image whose header declares too many pixels. Used to fail a request before anything is written; a
    header longer than `head` is left to decode_image, which reads it whole."""
    if image_format(head) is None:
        raise BadInput(field, "not an image file (unknown or corrupt header)")
    size = header_size(head)
    if size is not None:
        _check_pixels(size, max_pixels, field)


def decode_image(raw: bytes, *, max_pixels: int, field: str = "data") -> Decoded:
    """Decode an encoded image; raises `BadInput(field, ...)` when it is not an image or too large."""
    size = header_size(raw)
    if size is None:  # unknown format, or no size OpenCV would agree on: never decoded unchecked
        raise BadInput(field, "not a decodable image (corrupt or unsupported format)")
    _check_pixels(size, max_pixels, field)
    try:
        # IMREAD_COLOR applies the EXIF orientation and converts grey, alpha and 16-bit images to 8-bit BGR.
        bgr = cv2.imdecode(np.frombuffer(raw, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:  # a decoder's own assertion (e.g. a corrupt GIF frame): bad input, not a server error
        bgr = None
    if bgr is None:
        raise BadInput(field, "not a decodable image (corrupt or unsupported format)")
    height, width = bgr.shape[:2]
    _check_pixels((width, height), max_pixels, field)  # the header's size was OpenCV's: this is a safety net
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return Decoded(rgb=rgb, width=width, height=height, sha256=hashlib.sha256(raw).hexdigest())
