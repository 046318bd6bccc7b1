"""COCO's category names, shared by torchvision's detectors (detect.py) and SSD-MobileNet-v2 (cascades.py),
whose class ids are COCO's ids too."""

from __future__ import annotations

from functools import lru_cache

from torchvision import models as tv_models


@lru_cache(maxsize=1)
def coco_categories() -> tuple[str, ...]:
    """COCO names indexed by label id (0 = background, "N/A" for unused ids), from torchvision's metadata."""
    return tuple(tv_models.get_model_weights("fasterrcnn_resnet50_fpn")["COCO_V1"].meta["categories"])
