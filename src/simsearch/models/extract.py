"""Feature extraction: any torchvision classification backbone, any layer, pooled to one vector;
or dlib's face descriptor (faces.py). Both fit the `Extractor` protocol."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch
from torch import nn
from torchvision import models as tv_models
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from simsearch.errors import BadInput
from simsearch.models.detect import is_detector
from simsearch.models.faces import FaceDescriptor
from simsearch.models.spec import ModelSpec, unknown_model
from simsearch.models.weights import known_models, load_state_dict, normalisation

SEED = 0  # weights "none": the same random network in every process, for tests
FACE_DESCRIPTOR = "dlib:face_descriptor"


class Extractor(Protocol):
    """What ingest and search use: preprocess (off the model thread), forward, or both at once (embed)."""

    spec: ModelSpec
    dim: int
    layer: str
    device: torch.device

    def preprocess(self, images: Sequence[np.ndarray]) -> Any: ...  # noqa: ANN401 - each model's own batch type

    def forward(self, batch: Any) -> np.ndarray: ...  # noqa: ANN401 - what preprocess returned

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray: ...


@lru_cache(maxsize=1)
def classification_models() -> tuple[str, ...]:
    return tuple(sorted(tv_models.list_models(module=tv_models)))


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _build_model(spec: ModelSpec) -> nn.Module:
    if is_detector(spec.model):
        raise BadInput("model", f"{spec.model} is an object detector; load it with load_detector")
    if spec.model not in tv_models.list_models():
        raise unknown_model(spec.model, known_models())
    if spec.model not in classification_models():
        raise BadInput(
            "model",
            f"{spec.model!r} is not a torchvision classification model; choose one, e.g. "
            f"resnet50, resnet18, mobilenet_v2, efficientnet_b0, convnext_tiny, vit_b_16, or {FACE_DESCRIPTOR}",
        )
    if spec.weights == "none":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            model: nn.Module = tv_models.get_model(spec.model, weights=None)
        return model
    model = tv_models.get_model(spec.model, weights=None)
    try:
        model.load_state_dict(load_state_dict(spec.model, spec.weights), strict=True)
    except RuntimeError as exc:
        raise BadInput("weights", f"{spec.weights} does not fit {spec.model}: {str(exc)[:300]}") from exc
    return model


def default_layer(model: nn.Module) -> str:
    """The node that feeds the last Linear layer, skipping dropouts: the pooled features."""
    kinds = dict(model.named_modules())
    nodes = get_graph_node_names(model)[1]
    linear = [i for i, n in enumerate(nodes) if isinstance(kinds.get(n), nn.Linear)]
    if not linear:
        return str(nodes[-1])
    i = linear[-1] - 1
    while i > 0 and isinstance(kinds.get(nodes[i]), nn.Dropout):
        i -= 1
    return str(nodes[i])


class TorchExtractor:
    """A loaded torchvision backbone cut at one layer; owns the model's memory, so it is a class."""

    def __init__(self, spec: ModelSpec, *, device: str | None = None) -> None:
        self.spec = spec
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = _build_model(spec).eval()
        nodes = get_graph_node_names(model)[1]
        layer = spec.layer or default_layer(model)
        if layer == "last":
            layer = nodes[-1]
        try:
            self.net = create_feature_extractor(model, return_nodes={layer: "out"}).eval()
        except ValueError as exc:
            shown = ", ".join(nodes[-25:])
            raise BadInput(
                "layer",
                f"unknown layer {layer!r} for {spec.model}; valid node names end with: {shown}, "
                "or a module prefix such as layer4 / features",
            ) from exc
        self.layer = layer
        self.mean, self.std = normalisation(spec.model, spec.weights)
        if self.device.type == "cpu":
            self.net = self.net.to(memory_format=torch.channels_last)
            self.autocast = torch.bfloat16 if _cpu_has_bf16() else None
        else:
            self.net = self.net.to(self.device, memory_format=torch.channels_last)
            self.autocast = torch.float16
        try:  # a size the network cannot take (e.g. a vision transformer's fixed one) fails here, not later
            width, height = spec.width_height
            self.dim = int(self.embed([np.zeros((height, width, 3), np.uint8)]).shape[1])
        except (RuntimeError, AssertionError) as exc:  # torchvision's ViT asserts its size
            raise BadInput("size", f"{spec.model} cannot take {width}x{height} inputs: {str(exc)[:200]}") from exc

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """RGB uint8 arrays of any size -> a normalised (n, 3, height, width) batch: each image resized to
        the service's width x height, as DeepDetect does. Runs off the model thread."""
        size = self.spec.width_height
        batch = np.stack([cv2.resize(img, size, interpolation=cv2.INTER_AREA) for img in images])
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return ((x - mean) / std).contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor) -> np.ndarray:
        """A preprocessed batch -> (n, dim) float32 vectors (L2-normalised for metric cosine)."""
        batch = batch.to(self.device, non_blocking=True)
        if self.autocast is not None:
            with torch.autocast(self.device.type, dtype=self.autocast):
                out = self.net(batch)["out"]
        else:
            out = self.net(batch)["out"]
        if out.ndim == 4:  # spatial map: global average pool
            out = out.mean(dim=(2, 3))
        elif out.ndim == 3:  # token sequence
            out = out.mean(dim=1)
        vectors = out.float().reshape(out.shape[0], -1)
        if self.spec.metric == "cosine":
            vectors = torch.nn.functional.normalize(vectors, dim=1)
        return np.ascontiguousarray(vectors.cpu().numpy(), dtype=np.float32)

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return self.forward(self.preprocess(images))


def load_extractor(spec: ModelSpec, *, device: str | None = None) -> Extractor:
    if spec.model == FACE_DESCRIPTOR:  # dlib itself is imported when one is made (faces._dlib)
        return FaceDescriptor(spec, device=device)
    return TorchExtractor(spec, device=device)
