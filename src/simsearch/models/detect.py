"""Object detectors: torchvision's detection models (Faster R-CNN also gives a vector per box), OpenCV's
cascades and SSD-MobileNet-v2 (cascades.py), dlib's HOG face detector (faces.py); `load_detector` picks one.
What they all answer, and the pixel helpers they share, are in boxes.py.

Every detector takes RGB uint8 arrays of any size and answers boxes in source-image pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision import models as tv_models
from torchvision.models.detection import FasterRCNN

from simsearch.errors import BadInput
from simsearch.models.boxes import Detections, Detector, as_rgb, finish
from simsearch.models.cascades import CascadeDetector, SsdMobilenetDetector, cascade_names
from simsearch.models.coco import coco_categories
from simsearch.models.faces import DlibFaceDetector
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
    return (*TORCHVISION_DETECTORS, *PACKAGED_DETECTORS, *(f"opencv:{name}" for name in cascade_names()))


def load_detector(spec: ModelSpec, *, device: str | None = None) -> Detector:
    """A detector for `spec.model` (see `detector_models`); OpenCV and dlib ones run on the CPU."""
    if spec.model.startswith("opencv:"):
        return CascadeDetector(spec)
    if spec.model == "ssd_mobilenet_v2_coco":
        return SsdMobilenetDetector(spec)
    if spec.model == "dlib:frontal_face":  # dlib itself is imported when one is made (faces._dlib)
        return DlibFaceDetector(spec)
    if spec.model in TORCHVISION_DETECTORS:
        return TorchDetector(spec, device=device)
    raise BadInput(
        "model",
        f"unknown detector {spec.model!r}; choose one of {', '.join((*TORCHVISION_DETECTORS, *PACKAGED_DETECTORS))}"
        ", or opencv:<cascade> (e.g. opencv:haarcascade_frontalface_default)",
    )
