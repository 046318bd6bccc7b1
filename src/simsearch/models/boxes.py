"""What every detector is and answers (`Detector`, `Detections`), and the pixel helpers they share: no
model here, so the torchvision, OpenCV and dlib detectors (detect.py, cascades.py, faces.py) all build on it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from simsearch.errors import BadInput
from simsearch.models.spec import ModelSpec


@dataclass(frozen=True, slots=True)
class Detections:
    """One image's boxes, best first."""

    boxes: np.ndarray  # (n, 4) float32 xmin, ymin, xmax, ymax in source pixels (ymin = top), inside the image
    probs: np.ndarray  # (n,) float32 in [0, 1]
    categories: list[str]
    features: np.ndarray | None  # (n, dim) float32 per-box vectors (Faster R-CNN family), else None


class Detector(Protocol):
    spec: ModelSpec
    dim: int  # per-box vector size; 0 when the detector makes none

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]: ...


def as_rgb(image: np.ndarray) -> np.ndarray:
    """A contiguous HxWx3 uint8 array from RGB, RGBA or grayscale pixels."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or image.size == 0:
        raise BadInput("data", f"expected a non-empty uint8 image, got {image.dtype} {image.shape}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return np.ascontiguousarray(image[:, :, :3])
    if image.shape[2] != 3:
        raise BadInput("data", f"expected 1, 3 or 4 channels, got {image.shape[2]}")
    return np.ascontiguousarray(image)


def fit_longer_side(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """The image resized so its longer side is `size` (unchanged for size 0), and the scale applied."""
    longer = max(image.shape[:2])
    if size <= 0 or size == longer:
        return image, 1.0
    scale = size / longer
    width, height = max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation), scale


def fit_input(image: np.ndarray, spec: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    """The image as a detector sees it, and the (x, y, x, y) scales that bring its boxes back to source
    pixels (divide by them). A width x height that differ: the image resized to exactly that, as DeepDetect
    does; a square size: the longer side scaled to it, the aspect kept (0: the image as it is)."""
    if spec.square:
        resized, scale = fit_longer_side(image, spec.size)
        return resized, np.full(4, scale, np.float32)
    height, width = image.shape[:2]
    target = spec.width_height
    if (width, height) != target:
        shrink = target[0] * target[1] < width * height
        image = cv2.resize(image, target, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    sx, sy = target[0] / width, target[1] / height
    return image, np.array([sx, sy, sx, sy], np.float32)


def finish(
    boxes: np.ndarray,
    probs: np.ndarray,
    categories: Sequence[str],
    features: np.ndarray | None,
    shape: tuple[int, ...],
) -> Detections:
    """Clamp boxes to the image (height, width = shape[:2]) and sort best first."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, shape[1])
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, shape[0])
    probs = np.asarray(probs, np.float32).reshape(-1).clip(0.0, 1.0)
    order = np.argsort(-probs, kind="stable")
    return Detections(
        boxes=np.ascontiguousarray(boxes[order]),
        probs=np.ascontiguousarray(probs[order]),
        categories=[categories[i] for i in order],
        features=None if features is None else np.ascontiguousarray(features[order], dtype=np.float32),
    )
