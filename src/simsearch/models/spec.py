"""What a service's extractor is: enough to rebuild exactly the same vectors in another process."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Metric = Literal["l2", "cosine"]
METRICS: tuple[Metric, ...] = ("l2", "cosine")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    model: str  # torchvision classification model name, e.g. "resnet50"
    weights: str  # "none", a torchvision weights name ("IMAGENET1K_V1"), or a state_dict file
    layer: str | None = None  # node name; None = the pooled layer before the classifier
    size: int = 224  # input width and height
    metric: Metric = "l2"  # "cosine" L2-normalises every vector
