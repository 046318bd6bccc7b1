"""What a service's model is: enough to rebuild exactly the same vectors (or boxes) in another process."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from simsearch.errors import BadInput

Metric = Literal["l2", "cosine"]
METRICS: tuple[Metric, ...] = ("l2", "cosine")

# Models whose weights come inside an installed package (dlib's, OpenCV's cascades, the SSD-MobileNet-v2
# graph): there is nothing to choose, so every service records this one word as its weights.
PACKAGED = "packaged"
PACKAGED_PREFIXES = ("dlib:", "opencv:")
PACKAGED_MODELS = ("ssd_mobilenet_v2_coco",)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    # a torchvision classification or detection model name ("resnet50", "fasterrcnn_resnet50_fpn"),
    # or a packaged one ("dlib:face_descriptor", "dlib:frontal_face", "opencv:haarcascade_eye", ...)
    model: str
    weights: str  # "none", a torchvision weights name ("IMAGENET1K_V1"), a state_dict file, or "packaged"
    layer: str | None = None  # node name; None = the pooled layer before the classifier
    size: int = 224  # input width and height; for detectors 0 = the model's own input size
    metric: Metric = "l2"  # "cosine" L2-normalises every vector


def is_packaged(model: str) -> bool:
    """True for models that ship their own weights (no torchvision weights to resolve)."""
    return model.startswith(PACKAGED_PREFIXES) or model in PACKAGED_MODELS


def packaged_weights(model: str, weights: str) -> str:
    """The weights recorded for a packaged model: always "packaged"; any other named weights are refused
    so that a request for a file or a torchvision weights name does not silently use something else."""
    if weights.lower() in ("default", "none", PACKAGED):
        return PACKAGED
    raise BadInput("weights", f"{model} uses the weights its package ships; give DEFAULT (recorded as {PACKAGED})")
