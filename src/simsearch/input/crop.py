"""Crops of detected boxes, as DeepDetect's chain "crop" action makes them (padding, fixed or square size,
minimum size), always clamped to the image."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from simsearch.errors import BadInput


def _check(name: str, value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise BadInput(name, f"{value!r}: must be a finite number >= 0")
    return float(value)


def _span(low: float, high: float, fixed: float) -> tuple[int, int]:
    """Integer pixel edges of [low, high), or of a `fixed`-wide span on the same centre."""
    if fixed > 0:
        start = math.floor((low + high - fixed) / 2 + 0.5)
        return start, start + round(fixed)
    return math.floor(low + 0.5), math.floor(high + 0.5)


def crop_box(
    image: np.ndarray,
    box: Sequence[float],
    *,
    padding_ratio: float = 0.0,
    fixed_width: int = 0,
    fixed_height: int = 0,
    min_width: int = 0,
    min_height: int = 0,
    force_square: bool = False,
) -> np.ndarray | None:
    """A copy of the pixels of `box` (xmin, ymin, xmax, ymax in pixels, ymin = top), or None when the box
    itself (before padding) is narrower than min_width or lower than min_height, or when nothing of the
    crop lies inside the image.

    In order: the box grows by padding_ratio of its width (height) on each side; force_square grows the
    shorter side to the longer one, on the same centre; fixed_width (fixed_height), when > 0, replaces the
    width (height) by exactly that many pixels on the same centre; then the box is clamped to the image.
    """
    padding = _check("padding_ratio", padding_ratio)
    fixed_w, fixed_h = _check("fixed_width", fixed_width), _check("fixed_height", fixed_height)
    least_w, least_h = _check("min_width", min_width), _check("min_height", min_height)
    if len(box) != 4 or not all(math.isfinite(float(v)) for v in box):
        raise BadInput("box", f"{list(box)!r}: expected four finite numbers xmin, ymin, xmax, ymax")
    xmin, ymin, xmax, ymax = (float(v) for v in box)
    width, height = xmax - xmin, ymax - ymin
    if width <= 0 or height <= 0 or width < least_w or height < least_h:
        return None
    xmin, xmax = xmin - padding * width, xmax + padding * width
    ymin, ymax = ymin - padding * height, ymax + padding * height
    if force_square:
        grow_x = max(0.0, (ymax - ymin) - (xmax - xmin)) / 2
        grow_y = max(0.0, (xmax - xmin) - (ymax - ymin)) / 2
        xmin, xmax, ymin, ymax = xmin - grow_x, xmax + grow_x, ymin - grow_y, ymax + grow_y
    left, right = _span(xmin, xmax, fixed_w)
    top, bottom = _span(ymin, ymax, fixed_h)
    rows, cols = image.shape[:2]
    left, right = max(0, left), min(cols, right)
    top, bottom = max(0, top), min(rows, bottom)
    if right <= left or bottom <= top:
        return None
    return image[top:bottom, left:right].copy()


def crop_boxes(
    image: np.ndarray,
    boxes: Sequence[Sequence[float]] | np.ndarray,
    *,
    padding_ratio: float = 0.0,
    fixed_width: int = 0,
    fixed_height: int = 0,
    min_width: int = 0,
    min_height: int = 0,
    force_square: bool = False,
) -> list[np.ndarray | None]:
    """`crop_box` for each box, in order (None where a box gives no crop)."""
    return [
        crop_box(
            image,
            box,
            padding_ratio=padding_ratio,
            fixed_width=fixed_width,
            fixed_height=fixed_height,
            min_width=min_width,
            min_height=min_height,
            force_square=force_square,
        )
        for box in boxes
    ]
