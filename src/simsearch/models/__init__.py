"""Models: torch, OpenCV and dlib only, no database and no HTTP.

The heavy names load on first use (PEP 562), so `ModelSpec` and the CLI's --help stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from simsearch.models.spec import ModelSpec, is_packaged, packaged_weights

if TYPE_CHECKING:
    from simsearch.models.boxes import Detections, Detector
    from simsearch.models.cache import ModelCache
    from simsearch.models.detect import detector_models, is_detector, load_detector
    from simsearch.models.extract import Extractor, load_extractor

__all__ = [
    "Detections",
    "Detector",
    "Extractor",
    "ModelCache",
    "ModelSpec",
    "detector_models",
    "is_detector",
    "load_detector",
    "load_extractor",
    "resolve_weights",
]

_LAZY = {
    "ModelCache": "cache",
    "Extractor": "extract",
    "load_extractor": "extract",
    "Detections": "boxes",
    "Detector": "boxes",
    "detector_models": "detect",
    "is_detector": "detect",
    "load_detector": "detect",
}


def resolve_weights(model: str, weights: str) -> str:
    """The exact weights to record for a service (see `simsearch.models.weights.resolve_weights`);
    "packaged" for models that ship their weights (dlib:*, opencv:*, ssd_mobilenet_v2_coco)."""
    if is_packaged(model):
        return packaged_weights(model, weights)
    # imported here: it imports torch, and this package must stay cheap to import
    from simsearch.models.weights import resolve_weights as resolve_torchvision

    return resolve_torchvision(model, weights)


def __getattr__(name: str) -> Any:  # noqa: ANN401 - whatever the submodule defines
    if name in _LAZY:
        return getattr(importlib.import_module(f"simsearch.models.{_LAZY[name]}"), name)
    raise AttributeError(name)
