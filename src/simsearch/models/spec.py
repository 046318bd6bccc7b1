"""What a service's model is: enough to rebuild exactly the same vectors (or boxes) in another process."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
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
    size: int = 224  # input width (and height, unless `height` is set); for detectors 0 = the model's own size
    metric: Metric = "l2"  # "cosine" L2-normalises every vector
    height: int | None = None  # input height where it differs from the width (DeepDetect's width x height)

    @property
    def width_height(self) -> tuple[int, int]:
        """The input size as (width, height), the order cv2.resize and torchvision's fixed_size take."""
        return self.size, self.size if self.height is None else self.height

    @property
    def square(self) -> bool:
        return self.height is None or self.height == self.size


def is_packaged(model: str) -> bool:
    """True for models that ship their own weights (no torchvision weights to resolve)."""
    return model.startswith(PACKAGED_PREFIXES) or model in PACKAGED_MODELS


def packaged_weights(model: str, weights: str) -> str:
    """The weights recorded for a packaged model: always "packaged"; any other named weights are refused
    so that a request for a file or a torchvision weights name does not silently use something else."""
    if weights.lower() in ("default", "none", PACKAGED):
        return PACKAGED
    raise BadInput("weights", f"{model} uses the weights its package ships; give DEFAULT (recorded as {PACKAGED})")


def unknown_model(model: str, known: Iterable[str]) -> BadInput:
    """The refusal of a model name that names nothing, with the close names ("did you mean")."""
    close = difflib.get_close_matches(model, list(known), n=5, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "see torchvision.models.list_models()"
    return BadInput("model", f"unknown model {model!r}; {hint} (any torchvision classification or detection model)")
