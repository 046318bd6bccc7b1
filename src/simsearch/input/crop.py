"""Crops of detected boxes, as DeepDetect's chain "crop" action makes them (padding, fixed or square size,
minimum size), always clamped to the image."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated

import msgspec
import numpy as np

from simsearch.errors import BadInput


class Crop(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How each detected box is cut out before the extractor embeds it (DeepDetect's chain `crop`)."""

    padding_ratio: Annotated[
        float, msgspec.Meta(ge=0, le=10, description="Grow the box by this share of its width (height) on each side")
    ] = 0.0
    fixed_width: Annotated[int, msgspec.Meta(ge=0, le=100_000, description="> 0: exactly this wide")] = 0
    fixed_height: Annotated[int, msgspec.Meta(ge=0, le=100_000, description="> 0: exactly this high")] = 0
    min_width: Annotated[int, msgspec.Meta(ge=0, le=100_000, description="Narrower boxes are dropped")] = 0
    min_height: Annotated[int, msgspec.Meta(ge=0, le=100_000, description="Lower boxes are dropped")] = 0
    force_square: bool = False  # grow the shorter side to the longer one


NO_CROP = Crop()


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
    crop: Crop = NO_CROP,
) -> np.ndarray | None:
    """A copy of the pixels of `box` (xmin, ymin, xmax, ymax in pixels, ymin = top), or None when the box
    itself (before padding) is narrower than min_width or lower than min_height, or when nothing of the
    crop lies inside the image.

    In order (`crop`'s fields): the box grows by padding_ratio of its width (height) on each side;
    force_square grows the shorter side to the longer one, on the same centre; fixed_width (fixed_height),
    when > 0, replaces the width (height) by exactly that many pixels on the same centre; then the box is
    clamped to the image.
    """
    # the constraints of Crop's fields hold only for a decoded one: DeepDetect's chain builds its own
    padding = _check("padding_ratio", crop.padding_ratio)
    fixed_w, fixed_h = _check("fixed_width", crop.fixed_width), _check("fixed_height", crop.fixed_height)
    least_w, least_h = _check("min_width", crop.min_width), _check("min_height", crop.min_height)
    if len(box) != 4 or not all(math.isfinite(float(v)) for v in box):
        raise BadInput("box", f"{list(box)!r}: expected four finite numbers xmin, ymin, xmax, ymax")
    xmin, ymin, xmax, ymax = (float(v) for v in box)
    width, height = xmax - xmin, ymax - ymin
    if width <= 0 or height <= 0 or width < least_w or height < least_h:
        return None
    xmin, xmax = xmin - padding * width, xmax + padding * width
    ymin, ymax = ymin - padding * height, ymax + padding * height
    if crop.force_square:
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
