"""Object detectors: torchvision's detection models (Faster R-CNN also gives a vector per box), OpenCV's
cascades and SSD-MobileNet-v2 (cascades.py), dlib's HOG face detector (faces.py).

Every detector takes RGB uint8 arrays of any size and answers boxes in source-image pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import cv2
import numpy as np
import torch
from torch import nn
from torchvision import models as tv_models
from torchvision.models.detection import FasterRCNN

from simsearch.errors import BadInput
from simsearch.models.spec import ModelSpec
from simsearch.models.weights import is_file_weights, load_state_dict

SEED = 0  # weights "none": the same random network in every process, for tests

TORCHVISION_DETECTORS = (
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "retinanet_resnet50_fpn",
    "retinanet_resnet50_fpn_v2",
    "fcos_resnet50_fpn",
    "ssd300_vgg16",
    "ssdlite320_mobilenet_v3_large",
)
PACKAGED_DETECTORS = ("ssd_mobilenet_v2_coco", "dlib:frontal_face")


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


@lru_cache(maxsize=1)
def coco_categories() -> tuple[str, ...]:
    """COCO names indexed by label id (0 = background, "N/A" for unused ids), from torchvision's metadata."""
    return tuple(tv_models.get_model_weights("fasterrcnn_resnet50_fpn")["COCO_V1"].meta["categories"])


def _categories(spec: ModelSpec) -> tuple[str, ...]:
    if spec.weights == "none" or is_file_weights(spec.weights):
        return coco_categories()  # torchvision's detectors are all built for COCO's 91 label ids
    return tuple(tv_models.get_model_weights(spec.model)[spec.weights].meta["categories"])


def _build(spec: ModelSpec) -> nn.Module:
    # weights_backbone=None too: torchvision would otherwise download ImageNet backbone weights
    if spec.weights == "none":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            model: nn.Module = tv_models.get_model(spec.model, weights=None, weights_backbone=None)
        # A random network scores every class about 1/91 (or its prior 0.01), below torchvision's
        # score thresholds (0.05, FCOS 0.2), so it would find nothing: keep every box instead.
        scorer: Any = model.roi_heads if isinstance(model, FasterRCNN) else model  # untyped torchvision modules
        scorer.score_thresh = 0.0
        return model
    model = tv_models.get_model(spec.model, weights=None, weights_backbone=None)
    try:
        model.load_state_dict(load_state_dict(spec.model, spec.weights), strict=True)
    except RuntimeError as exc:
        raise BadInput("weights", f"{spec.weights} does not fit {spec.model}: {str(exc)[:300]}") from exc
    return model


class TorchDetector:
    """A torchvision detector; the Faster R-CNN family also returns its box-head vector for each final box."""

    def __init__(self, spec: ModelSpec, *, device: str | None = None) -> None:
        self.spec = spec
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model: Any = _build(spec).eval()  # torchvision's detection modules are untyped
        if not spec.square:  # resized to exactly width x height, as DeepDetect does (boxes come back in
            model.transform.fixed_size = spec.width_height  # source pixels: postprocess)
        elif spec.size > 0:  # the model's own resize target (e.g. 800 px) is slow on CPU
            model.transform.min_size = (spec.size,)
            model.transform.max_size = spec.size
            if model.transform.fixed_size is not None:  # SSD: a square input
                model.transform.fixed_size = (spec.size, spec.size)
        self.model: Any = model.to(self.device)
        self.categories = _categories(spec)
        self.faster_rcnn = isinstance(model, FasterRCNN)
        self.dim = int(model.roi_heads.box_predictor.cls_score.in_features) if self.faster_rcnn else 0
        try:  # a size too small for the network fails here rather than at the first request
            self.detect([np.zeros((64, 64, 3), np.uint8)])
        except RuntimeError as exc:
            raise BadInput("size", f"{spec.size} is too small for {spec.model}: {str(exc)[:200]}") from exc

    def _faster_rcnn(self, tensors: list[torch.Tensor]) -> tuple[list[dict[str, torch.Tensor]], list[torch.Tensor]]:
        """GeneralizedRCNN.forward, plus the box head run again on the final boxes: one pass, exact vectors."""
        model = self.model
        sizes = [(int(t.shape[-2]), int(t.shape[-1])) for t in tensors]
        batch, _ = model.transform(tensors)
        features = model.backbone(batch.tensors)
        proposals, _ = model.rpn(batch, features)
        found, _ = model.roi_heads(features, proposals, batch.image_sizes)
        boxes = [d["boxes"] for d in found]
        pooled = model.roi_heads.box_head(model.roi_heads.box_roi_pool(features, boxes, batch.image_sizes))
        vectors = pooled.flatten(1).float()
        if self.spec.metric == "cosine":
            vectors = torch.nn.functional.normalize(vectors, dim=1)
        found = model.transform.postprocess(found, batch.image_sizes, sizes)
        return found, list(vectors.split([len(b) for b in boxes]))

    @torch.inference_mode()
    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        if not images:
            return []
        rgb = [as_rgb(image) for image in images]
        tensors = [torch.from_numpy(a).to(self.device).permute(2, 0, 1).float().div_(255.0) for a in rgb]
        if self.faster_rcnn:
            found, vectors = self._faster_rcnn(tensors)
            features: list[np.ndarray | None] = [v.cpu().numpy() for v in vectors]
        else:
            found = self.model(tensors)
            features = [None] * len(found)
        out = []
        for image, result, vecs in zip(rgb, found, features, strict=True):
            names = [self.categories[i] if i < len(self.categories) else str(i) for i in result["labels"].tolist()]
            out.append(finish(result["boxes"].cpu().numpy(), result["scores"].cpu().numpy(), names, vecs, image.shape))
        return out


def is_detector(model: str) -> bool:
    return model in TORCHVISION_DETECTORS or model in PACKAGED_DETECTORS or model.startswith("opencv:")


def detector_models() -> tuple[str, ...]:
    """Every accepted detector name."""
    from simsearch.models.cascades import cascade_names  # cascades.py imports this module

    return (*TORCHVISION_DETECTORS, *PACKAGED_DETECTORS, *(f"opencv:{name}" for name in cascade_names()))


def load_detector(spec: ModelSpec, *, device: str | None = None) -> Detector:
    """A detector for `spec.model` (see `detector_models`); OpenCV and dlib ones run on the CPU."""
    # the other modules import this one for Detections and the helpers: import them here
    if spec.model.startswith("opencv:"):
        from simsearch.models.cascades import CascadeDetector

        return CascadeDetector(spec)
    if spec.model == "ssd_mobilenet_v2_coco":
        from simsearch.models.cascades import SsdMobilenetDetector

        return SsdMobilenetDetector(spec)
    if spec.model == "dlib:frontal_face":
        from simsearch.models.faces import DlibFaceDetector

        return DlibFaceDetector(spec)
    if spec.model in TORCHVISION_DETECTORS:
        return TorchDetector(spec, device=device)
    raise BadInput(
        "model",
        f"unknown detector {spec.model!r}; choose one of {', '.join((*TORCHVISION_DETECTORS, *PACKAGED_DETECTORS))}"
        ", or opencv:<cascade> (e.g. opencv:haarcascade_frontalface_default)",
    )
