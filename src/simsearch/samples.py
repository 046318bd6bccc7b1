"""Sample photos for the demo and the benchmark: scikit-image's bundled photos plus edited copies."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# scikit-image photos that ship inside the wheel (no download), in colour or grey.
PHOTOS = (
    "astronaut",
    "camera",
    "chelsea",
    "coffee",
    "rocket",
    "coins",
    "moon",
    "page",
    "text",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "stereo_motorcycle",
    "clock",
    "brick",
    "grass",
    "gravel",
    "colorwheel",
)
EDITS = ("crop", "flip", "bright")


@dataclass(frozen=True, slots=True)
class EditedCopy:
    path: Path
    original: Path
    edit: str


def load_photo(name: str) -> np.ndarray:
    """An RGB uint8 array of one of scikit-image's bundled photos."""
    import skimage.data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image: np.ndarray | tuple[np.ndarray, ...] = getattr(skimage.data, name)()
    if isinstance(image, tuple):  # stereo pairs
        image = image[0]
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    rgb: np.ndarray = np.ascontiguousarray(np.asarray(image)[..., :3], dtype=np.uint8)
    return rgb


def edit(image: np.ndarray, how: str) -> np.ndarray:
    """crop: the central 70%; flip: mirrored left-right; bright: 40% brighter."""
    if how == "crop":
        h, w = image.shape[:2]
        return image[int(h * 0.15) : int(h * 0.85), int(w * 0.15) : int(w * 0.85)].copy()
    if how == "flip":
        return image[:, ::-1].copy()
    if how == "bright":
        brighter: np.ndarray = np.clip(image.astype(np.float32) * 1.4 + 10, 0, 255).astype(np.uint8)
        return brighter
    raise ValueError(f"unknown edit {how!r}")


def _write(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92]):
        raise OSError(f"could not write {path}")


def write_samples(folder: Path) -> tuple[Path, list[EditedCopy]]:
    """Write the originals to folder/originals and their edited copies to folder/edited."""
    originals, edited = folder / "originals", folder / "edited"
    originals.mkdir(parents=True, exist_ok=True)
    edited.mkdir(parents=True, exist_ok=True)
    copies = []
    for name in PHOTOS:
        image = load_photo(name)
        original = originals / f"{name}.jpg"
        _write(original, image)
        for how in EDITS:
            path = edited / f"{name}-{how}.jpg"
            _write(path, edit(image, how))
            copies.append(EditedCopy(path=path, original=original, edit=how))
    return originals, copies
