"""Object search on the DeepDetect face (../shared/deepdetect-api.md, "Object search"): predict on detector
services (boxes, rois), /chain (detect -> filter -> crop -> extractor), multibox_rois, and the error rows,
over the real app, real Postgres, real models and real photos (scikit-image's astronaut, coffee, cat)."""

from __future__ import annotations

import base64
import json
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from litestar import Litestar
from litestar.testing import TestClient
from skimage import data as photos
from sqlalchemy import Engine, text
from tests.conftest import api_settings, table_counts, write_image
from tests.ddwire import check_every_response
from torchvision import models as tv_models

from simsearch.api import create_app

Client = TestClient[Litestar]
JSON = dict[str, Any]

RANDOM_WEIGHTS = "weights: none: random initialisation, the vectors mean nothing (for tests only)"
FASTER = "fasterrcnn_mobilenet_v3_large_320_fpn"
JSON_HEADERS = {"content-type": "application/json"}
FACE_X, FACE_Y = (170, 270), (70, 170)  # the astronaut's face, in the 512x512 photo


# ---- helpers --------------------------------------------------------------------------------------


def _answer(response: Any, status: int = 200) -> JSON:
    body: JSON = response.json()
    assert response.status_code == body["status"]["code"] == status, body
    return body


def _error(response: Any, status: int, dd_code: int, starts: str = "") -> str:
    body = _answer(response, status)
    assert set(body) == {"status"}, body
    assert body["status"]["msg"] == {400: "BadRequest", 404: "NotFound"}[status]
    assert body["status"]["dd_code"] == dd_code, body
    msg: str = body["status"]["dd_msg"]
    assert msg.startswith(starts), msg
    return msg


def _create(client: Client, name: str, template: str, weights: str = "DEFAULT", **parameters: JSON) -> None:
    body = {
        "mllib": "torch",
        "parameters": {
            "input": {"connector": "image", **parameters.get("input", {})},
            "mllib": {"template": template, "weights": weights},
            **({"output": parameters["output"]} if "output" in parameters else {}),
        },
    }
    _answer(client.put(f"/services/{name}", json=body), 201)


def _predict(client: Client, service: str, data: list[str], **output: object) -> list[JSON]:
    body: JSON = {"service": service, "data": data, "parameters": {"output": output}}
    answer = _answer(client.post("/predict", json=body))
    predictions: list[JSON] = answer["body"]["predictions"]
    return predictions


def _chain(
    detector: str,
    data: list[str],
    child: str | None,
    *,
    detect: JSON | None = None,
    actions: list[JSON] | None = None,
    output: JSON | None = None,
) -> JSON:
    calls: list[JSON] = [
        {"service": detector, "data": data, "parameters": {"input": {"keep_orig": True}, "output": detect or {}}}
    ]
    calls += actions if actions is not None else [crop(padding_ratio=0.1)]
    if child is not None:
        calls.append({"service": child, "parent_id": "crop", "parameters": {"output": output or {}}})
    return {"chain": {"resource": "predict", "calls": calls}}


def crop(**parameters: object) -> JSON:
    return {"id": "crop", "action": {"type": "crop", "parameters": parameters}}


def _run(client: Client, chain: JSON, method: str = "POST") -> tuple[JSON, list[JSON]]:
    answer = _answer(client.request(method, "/chain/objects", json=chain))
    predictions: list[JSON] = answer["body"]["predictions"]
    assert predictions[-1]["last"] is True
    assert all("last" not in p for p in predictions[:-1])
    head: JSON = answer["head"]
    return head, predictions


def _center(box: JSON) -> tuple[float, float]:
    return (box["xmin"] + box["xmax"]) / 2, (box["ymin"] + box["ymax"]) / 2


def _on_face(box: JSON) -> bool:
    x, y = _center(box)
    return FACE_X[0] <= x <= FACE_X[1] and FACE_Y[0] <= y <= FACE_Y[1]


def _inside(box: JSON, width: int, height: int) -> bool:
    return 0 <= box["xmin"] < box["xmax"] <= width and 0 <= box["ymin"] < box["ymax"] <= height


def _mean_per_uri(per_object: list[list[JSON]]) -> dict[str, float]:
    """multibox_rois computed by hand: every hit of every query object adds its distance to its image."""
    dists: dict[str, list[float]] = defaultdict(list)
    for hits in per_object:
        for hit in hits:
            dists[hit["uri"]].append(hit["dist"])
    return {uri: float(np.mean(d)) for uri, d in dists.items()}


def _assert_ranking(ranked: list[JSON], per_object: list[list[JSON]], k: int) -> None:
    """Every image hit at least once, by mean distance (k: the most images there can be, objects x search_nn)."""
    expected = sorted(_mean_per_uri(per_object).items(), key=lambda item: item[1])
    assert len(expected) <= k
    assert [r["uri"] for r in ranked] == [uri for uri, _ in expected]
    np.testing.assert_allclose([r["dist"] for r in ranked], [d for _, d in expected], rtol=1e-5, atol=1e-12)
    assert [r["dist"] for r in ranked] == sorted(r["dist"] for r in ranked)


# ---- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(api_data: Path) -> dict[str, Path]:
    """The photos as PNG files under the allowed data root; `people/` holds a face, no face, two faces."""
    astronaut = photos.astronaut()
    collage = np.concatenate([astronaut, astronaut], axis=1)  # the same face twice, side by side
    (api_data / "people").mkdir()
    (api_data / "people" / "notes.txt").write_text("not an image: skipped")
    return {
        "astronaut": write_image(api_data / "astronaut.png", astronaut),
        "collage": write_image(api_data / "collage.png", collage),
        "coffee": write_image(api_data / "coffee.png", photos.coffee()),
        "cat": write_image(api_data / "chelsea.png", photos.chelsea()),
        # the face near the top-left corner: a padded crop reaches past the edges
        "border": write_image(api_data / "border.png", astronaut[60:260, 150:400]),
        "people_a": write_image(api_data / "people" / "a_astronaut.png", astronaut),
        "people_b": write_image(api_data / "people" / "b_coffee.png", photos.coffee()),
        "people_c": write_image(api_data / "people" / "c_collage.png", collage),
    }


@pytest.fixture(scope="module")
def box_weights(api_data: Path) -> Path:
    """A Faster R-CNN state_dict whose box vectors tell boxes apart. The seeded random backbone answers
    features of about 1e-8, so the random box head's vectors are its bias, equal to float precision for
    every box; here the head's first layer is scaled to those features (biases zero), and the classifier
    scaled so that some classes score above torchvision's 0.05 threshold."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = tv_models.get_model(FASTER, weights=None, weights_backbone=None)
    state = model.state_dict()
    state["roi_heads.box_head.fc6.weight"] *= 1e8
    state["roi_heads.box_head.fc6.bias"].zero_()
    state["roi_heads.box_head.fc7.bias"].zero_()
    state["roi_heads.box_predictor.cls_score.weight"] *= 20
    path = api_data / "weights" / "boxes.pth"
    path.parent.mkdir()
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def svc(client: Client, box_weights: Path) -> dict[str, str]:
    """The services, created once: detectors (dlib's HOG, a Haar cascade, a Faster R-CNN with box vectors)
    and extractors (dlib's face descriptor, a random resnet18)."""
    names = {k: f"{k}_{uuid.uuid4().hex[:6]}" for k in ("dlib", "haar", "strict", "boxes", "faces", "faces2", "tiny")}
    _create(client, names["dlib"], "dlib:frontal_face")
    _create(client, names["haar"], "opencv:haarcascade_frontalface_default")
    # creation defaults of a detector, as in DeepDetect's tutorial; a predict's own values win
    _create(client, names["strict"], "dlib:frontal_face", output={"bbox": True, "confidence_threshold": 0.6})
    _create(client, names["boxes"], FASTER, str(box_weights), input={"width": 320, "height": 320})
    _create(client, names["faces"], "dlib:face_descriptor")
    _create(client, names["faces2"], "dlib:face_descriptor")
    _create(client, names["tiny"], "resnet18", "none", input={"width": 64, "height": 64})
    return names


# ---- predict on a detector service ----------------------------------------------------------------


def test_detections_with_and_without_bbox(client: Client, svc: dict[str, str], files: dict[str, Path]) -> None:
    data = [str(files["astronaut"]), str(files["coffee"]), str(files["collage"])]
    plain = _predict(client, svc["haar"], data)
    assert [p["uri"] for p in plain] == data
    assert [p.get("last") for p in plain] == [None, None, True]
    for p in plain:
        assert set(p) - {"last"} == {"uri", "classes"}  # no vals, no indexed without the flags
        assert all(set(c) == {"cat", "prob"} for c in p["classes"])
    boxed = _predict(client, svc["haar"], data, bbox=True)
    astronaut, coffee, collage = boxed
    assert coffee["classes"] == []  # no face: an empty list, and 200
    assert [{k: c[k] for k in ("cat", "prob")} for c in astronaut["classes"]] == plain[0]["classes"]
    assert all(c["cat"] == "face" and c["prob"] == 1.0 for c in astronaut["classes"])  # a cascade has no score
    assert all(_inside(c["bbox"], 512, 512) for c in astronaut["classes"])
    largest = max(astronaut["classes"], key=lambda c: c["bbox"]["xmax"] - c["bbox"]["xmin"])
    assert _on_face(largest["bbox"])
    assert largest["bbox"]["ymin"] < largest["bbox"]["ymax"]  # ymin is the top edge
    # the collage: the face in each half
    centers = sorted(_center(c["bbox"])[0] for c in collage["classes"])
    assert any(FACE_X[0] <= x <= FACE_X[1] for x in centers)
    assert any(512 + FACE_X[0] <= x <= 512 + FACE_X[1] for x in centers)
    assert all(_inside(c["bbox"], 1024, 512) for c in collage["classes"])


def test_dlib_probabilities_and_confidence_threshold(
    client: Client, svc: dict[str, str], files: dict[str, Path]
) -> None:
    [every] = _predict(client, svc["dlib"], [str(files["astronaut"])], bbox=True)
    probs = [c["prob"] for c in every["classes"]]
    assert probs == sorted(probs, reverse=True)  # best first
    assert all(0.5 <= p <= 1.0 for p in probs)  # logistic of a positive SVM margin
    assert _on_face(every["classes"][0]["bbox"])  # the most probable box is the face
    threshold = probs[0]
    [kept] = _predict(client, svc["dlib"], [str(files["astronaut"])], bbox=True, confidence_threshold=threshold)
    assert kept["classes"] == [c for c in every["classes"] if c["prob"] >= threshold]
    # creation defaults (bbox, confidence_threshold 0.6) apply; the call's own values win
    [strict] = _predict(client, svc["strict"], [str(files["astronaut"])])
    assert strict["classes"] == [c for c in every["classes"] if c["prob"] >= 0.6]
    [loose] = _predict(client, svc["strict"], [str(files["astronaut"])], confidence_threshold=0.0, bbox=False)
    assert loose["classes"] == [{"cat": c["cat"], "prob": c["prob"]} for c in every["classes"]]
    [none] = _predict(client, svc["dlib"], [str(files["cat"])], confidence_threshold=0.5, best=1)
    assert none == {"uri": str(files["cat"]), "classes": [], "last": True}


def test_index_on_a_detector_stores_the_image_and_its_boxes(
    client: Client, engine: Engine, svc: dict[str, str], files: dict[str, Path]
) -> None:
    name = svc["haar"]
    before = table_counts(engine)
    b64 = base64.b64encode(files["astronaut"].read_bytes()).decode()
    data = [b64, str(files["coffee"]), str(files["collage"])]
    body = {"service": name, "data": data, "index_uris": ["sku-face", "sku-coffee", "sku-two"]}
    body["parameters"] = {"output": {"index": True, "bbox": True}}
    answer = _answer(client.post("/predict", json=body))
    assert answer["head"]["method"] == "/predict"
    assert answer["head"]["service"] == name
    assert "warning" not in answer["head"]  # packaged weights, not random ones
    face, coffee, two = answer["body"]["predictions"]
    assert face["uri"] == "0"  # base64: its position
    assert face["indexed"] is True
    assert two["indexed"] is True
    assert "indexed" not in coffee
    assert coffee["classes"] == []
    after = table_counts(engine)
    boxes = len(face["classes"]) + len(two["classes"])
    assert after["image"] == before["image"] + 2
    assert after["roi"] == before["roi"] + boxes
    assert after["embedding"] == before["embedding"]  # boxes only: a cascade makes no vectors
    with engine.connect() as conn:
        stored = conn.execute(
            text(
                "SELECT i.uri, r.bbox_xmin, r.bbox_ymin FROM roi r JOIN image i ON i.id = r.image_id"
                " JOIN service s ON s.id = r.service_id WHERE s.name = :n ORDER BY i.uri, r.bbox_xmin"
            ),
            {"n": name},
        ).all()
    assert sorted({row.uri for row in stored}) == ["sku-face", "sku-two"]
    shown = sorted((c["bbox"]["xmin"], c["bbox"]["ymin"]) for c in face["classes"])
    assert sorted((r.bbox_xmin, r.bbox_ymin) for r in stored if r.uri == "sku-face") == shown


# ---- rois: a Faster R-CNN's own box vectors -------------------------------------------------------


def test_rois_index_build_search(client: Client, engine: Engine, svc: dict[str, str], files: dict[str, Path]) -> None:
    name = svc["boxes"]
    astronaut, cat = str(files["astronaut"]), str(files["cat"])
    indexed = _predict(client, name, [astronaut, cat], rois="rois", index=True, confidence_threshold=0.5)
    for p in indexed:
        assert p["indexed"] is True
        assert "classes" not in p
        assert p["rois"], p["uri"]
        for roi in p["rois"]:
            assert set(roi) == {"bbox", "cat", "prob", "vals"}
            assert len(roi["vals"]) == 1024
            assert roi["prob"] >= 0.5
    assert all(_inside(r["bbox"], 512, 512) for r in indexed[0]["rois"])
    assert all(_inside(r["bbox"], 451, 300) for r in indexed[1]["rois"])
    stored = sum(len(p["rois"]) for p in indexed)
    info = _answer(client.get(f"/services/{name}"))["body"]["index"]
    assert (info["count"], info["dimension"]) == (stored, 1024)
    assert "generation" not in info  # never built
    # build alone (no data), then search: each box finds itself first
    built = _answer(client.post("/predict", json={"service": name, "parameters": {"output": {"build_index": True}}}))
    assert built["body"] == {"predictions": []}
    assert isinstance(_answer(client.get(f"/services/{name}"))["body"]["index"]["generation"], int)
    before = table_counts(engine)
    [found] = _predict(client, name, [astronaut], rois="rois", search=True, search_nn=3, confidence_threshold=0.5)
    assert table_counts(engine) == before  # search writes nothing
    assert "indexed" not in found
    assert found["rois"]
    indexed_boxes = [r["bbox"] for r in indexed[0]["rois"]]
    for roi in found["rois"]:
        # the same image alone: the same boxes as in its batch
        assert any(roi["bbox"] == pytest.approx(box, abs=0.01) for box in indexed_boxes)
        assert 1 <= len(roi["nns"]) <= 3
        first = roi["nns"][0]
        assert set(first) == {"uri", "dist", "bbox", "cat", "prob"}
        assert first["uri"] == astronaut
        assert first["dist"] == pytest.approx(0.0, abs=1e-6)  # itself: other boxes lie >= 1e-4 away
        assert first["bbox"] == pytest.approx(roi["bbox"], abs=0.01)
        assert first["cat"] == roi["cat"]
        assert first["prob"] == pytest.approx(roi["prob"], rel=1e-4)
        assert [n["dist"] for n in roi["nns"]] == sorted(n["dist"] for n in roi["nns"])


@pytest.mark.parametrize("spelling", ["multibox_rois", "multibox_roi"])
def test_rois_multibox_ranks_images_by_mean_distance(
    client: Client, svc: dict[str, str], files: dict[str, Path], spelling: str
) -> None:
    name, k = svc["boxes"], 4
    query = [str(files["astronaut"])]
    _predict(client, name, [str(files["astronaut"]), str(files["cat"])], rois="rois", index=True)
    [per_object] = _predict(client, name, query, rois="rois", search=True, search_nn=k, confidence_threshold=0.5)
    [ranked] = _predict(
        client, name, query, rois="rois", search=True, search_nn=k, confidence_threshold=0.5, **{spelling: True}
    )
    assert len(ranked["rois"]) == len(per_object["rois"])  # the same objects, the same answers
    for mine, theirs in zip(ranked["rois"], per_object["rois"], strict=True):
        assert mine["bbox"] == pytest.approx(theirs["bbox"], abs=0.01)
    assert "nns" not in per_object
    _assert_ranking(ranked["nns"], [r.get("nns", []) for r in per_object["rois"]], len(per_object["rois"]) * k)
    assert ranked["nns"][0]["uri"] == str(files["astronaut"])
    assert all(set(n) == {"uri", "dist"} for n in ranked["nns"])


def test_rois_need_box_vectors(client: Client, engine: Engine, svc: dict[str, str], files: dict[str, Path]) -> None:
    before = table_counts(engine)
    body = {"service": svc["haar"], "data": [str(files["astronaut"])]}
    body["parameters"] = {"output": {"rois": "rois", "index": True}}
    msg = _error(client.post("/predict", json=body), 400, 1006, "Service Bad Request Error: parameters.output.rois: ")
    assert "Faster R-CNN" in msg
    assert "chain" in msg
    body["parameters"] = {"output": {"search": True}}  # a detector searches its objects with rois only
    _error(client.post("/predict", json=body), 400, 1006, "Service Bad Request Error: parameters.output.search: ")
    body["parameters"] = {"output": {"index": True, "confidence_threshold": 1.5}}
    _error(client.post("/predict", json=body), 400, 1006, "Service Bad Request Error: parameters.output.confidence")
    body = {"service": svc["tiny"], "data": [str(files["astronaut"])], "parameters": {"output": {"rois": "rois"}}}
    msg = _error(client.post("/predict", json=body), 400, 1006, "Service Bad Request Error: parameters.output.rois: ")
    assert "detector" in msg
    assert table_counts(engine) == before


# ---- chains: detector -> crop -> extractor --------------------------------------------------------


@pytest.fixture(scope="module")
def people(client: Client, svc: dict[str, str], files: dict[str, Path]) -> list[JSON]:
    """The folder people/ indexed by a chain: faces (dlib, >= 0.6) -> crop (padding 0.1) -> face descriptor."""
    chain = _chain(
        svc["dlib"],
        [str(files["people_a"].parent)],
        svc["faces"],
        detect={"bbox": True, "confidence_threshold": 0.6},
        output={"index": True},
    )
    head, predictions = _run(client, chain, "PUT")
    assert head["method"] == "/chain"
    assert isinstance(head["time"], float)
    assert "warning" not in head
    assert head["skipped"] == 1  # notes.txt
    return predictions


def test_chain_indexes_a_folder(people: list[JSON], svc: dict[str, str], files: dict[str, Path]) -> None:
    faces = svc["faces"]
    astronaut, coffee, collage = people  # in path order; coffee (no face) in the middle of the batch
    assert [p["uri"] for p in people] == [str(files[k]) for k in ("people_a", "people_b", "people_c")]
    assert coffee["classes"] == []
    assert "nns" not in coffee
    assert len(astronaut["classes"]) == 1
    assert len(collage["classes"]) == 2
    [face] = astronaut["classes"]
    assert set(face) == {"cat", "prob", "bbox", faces}
    assert face["cat"] == "face"
    assert face["prob"] >= 0.6
    assert _on_face(face["bbox"])
    for p in (astronaut, collage):
        for c in p["classes"]:
            assert set(c[faces]) == {"vals", "indexed"}
            assert c[faces]["indexed"] is True
            assert len(c[faces]["vals"]) == 128


def test_chain_search_finds_the_face_in_both_photos(
    client: Client, people: list[JSON], svc: dict[str, str], files: dict[str, Path]
) -> None:
    faces, k = svc["faces"], 3
    detect = {"bbox": True, "confidence_threshold": 0.6}
    query = [str(files["astronaut"])]  # the same pixels as people/a_astronaut.png, another uri
    _, [plain] = _run(client, _chain(svc["dlib"], query, faces, detect=detect, output={"search": True, "search_nn": k}))
    [face] = plain["classes"]
    nns = face[faces]["nns"]
    assert "indexed" not in face[faces]
    assert len(nns) == k
    assert all(set(n) == {"uri", "dist", "bbox", "cat", "prob"} for n in nns)
    a_uri, c_uri = str(files["people_a"]), str(files["people_c"])
    assert nns[0]["dist"] == pytest.approx(0.0, abs=1e-6)
    assert a_uri in {n["uri"] for n in nns if n["dist"] < 1e-6}  # the same face, the same crop
    assert sorted(n["uri"] for n in nns) == [a_uri, c_uri, c_uri]  # and both faces of the collage
    collage_x = sorted(_center(n["bbox"])[0] for n in nns if n["uri"] == c_uri)
    assert collage_x[0] < 512 < collage_x[1]
    # multibox_rois: whole images by the mean distance of their hits
    output = {"search": True, "search_nn": k, "multibox_rois": True}
    _, [ranked] = _run(client, _chain(svc["dlib"], query, faces, detect=detect, output=output))
    assert [n["uri"] for n in ranked["nns"]] == [a_uri, c_uri]
    assert ranked["nns"][0]["dist"] == pytest.approx(0.0, abs=1e-6)
    assert ranked["nns"][1]["dist"] > ranked["nns"][0]["dist"]
    _assert_ranking(ranked["nns"], [nns], k)


def test_chain_filter_keeps_only_the_listed_categories(
    client: Client, people: list[JSON], svc: dict[str, str], files: dict[str, Path]
) -> None:
    data = [str(files["collage"])]
    for classes, count in ((["face"], 2), (["cat face", "person"], 0)):
        actions = [{"id": "faces", "action": {"type": "filter", "parameters": {"classes": classes}}}, crop()]
        chain = _chain(svc["dlib"], data, svc["faces"], detect={"confidence_threshold": 0.6}, actions=actions)
        _, [collage] = _run(client, chain)
        assert len(collage["classes"]) == count
        assert all(c["cat"] in classes and len(c[svc["faces"]]["vals"]) == 128 for c in collage["classes"])
    # a detector and a filter alone: the detections that pass
    actions = [{"action": {"type": "filter", "parameters": {"classes": ["face"]}}}]
    b64 = base64.b64encode(files["collage"].read_bytes()).decode()
    _, [alone] = _run(client, _chain(svc["haar"], [b64], None, actions=actions))
    assert alone["uri"] == "0"  # base64 content: its position in data
    assert len(alone["classes"]) == 2
    assert all(set(c) == {"cat", "prob", "bbox"} for c in alone["classes"])


def test_chain_crop_past_the_edges_is_clamped(
    client: Client, engine: Engine, svc: dict[str, str], files: dict[str, Path]
) -> None:
    border = str(files["border"])  # 250x200, the face at its top-left
    chain = _chain(svc["dlib"], [border], svc["faces2"], actions=[crop(padding_ratio=2.0)], output={"index": True})
    chain["chain"]["calls"][0]["parameters"]["output"] = {"confidence_threshold": 0.6}
    _, [found] = _run(client, chain)
    [face] = found["classes"]
    assert face[svc["faces2"]]["indexed"] is True
    box = face["bbox"]
    width, height = box["xmax"] - box["xmin"], box["ymax"] - box["ymin"]
    assert box["xmin"] < 2 * width
    assert box["ymin"] < 2 * height
    # padded by twice its size on each side, the crop is the whole (clamped) image: the same vector
    [whole] = _predict(client, svc["faces2"], [border])
    np.testing.assert_allclose(face[svc["faces2"]]["vals"], whole["vals"], rtol=1e-5, atol=1e-6)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT r.bbox_xmin, r.bbox_xmax FROM roi r JOIN embedding e ON e.roi_id = r.id"
                " JOIN service s ON s.id = e.service_id WHERE s.name = :n"
            ),
            {"n": svc["faces2"]},
        ).all()
    assert [(r.bbox_xmin, r.bbox_xmax) for r in rows] == [(box["xmin"], box["xmax"])]  # the box, unpadded


def _calls(*calls: JSON) -> JSON:
    return {"chain": {"calls": list(calls)}}


def _detect(service: str, data: str) -> JSON:
    return {"service": service, "data": [data]}


def _child(service: str) -> JSON:
    return {"service": service, "parameters": {"output": {"index": True, "build_index": True}}}


def _action(kind: str, **parameters: object) -> JSON:
    return {"action": {"type": kind, "parameters": parameters}}


# (chain built from {d: detector, e: extractor, f: a face photo}, status, dd_code, start of dd_msg);
# a value of the wrong JSON type is 400/400 anywhere, an unacceptable value of the right type in an action 1012
CHAIN_ERRORS = [
    pytest.param(lambda d, e, f: _calls(), 400, 400, "chain.calls: ", id="empty-calls"),
    pytest.param(lambda d, e, f: {"calls": []}, 400, 400, "chain: missing", id="no-chain"),
    pytest.param(lambda d, e, f: {"chain": {"calls": {}}}, 400, 400, "chain.calls: must be", id="calls-object"),
    pytest.param(lambda d, e, f: _calls(_detect(d, f), 5), 400, 400, "chain.calls[1]: ", id="call-number"),
    pytest.param(
        lambda d, e, f: _calls(_detect(d, f), _action("rotate"), _child(e)),
        400,
        1012,
        "unknown action rotate",
        id="unknown-action",
    ),
    pytest.param(
        lambda d, e, f: _calls(_detect(d, f), _action("crop", padding_ratio=-1), _child(e)),
        400,
        1012,
        "chain.calls[1].action.parameters.padding_ratio: ",
        id="crop-negative-padding",
    ),
    pytest.param(
        lambda d, e, f: _calls(_detect(d, f), _action("crop", padding_ratio=10**400), _child(e)),
        400,
        1012,
        "chain.calls[1].action.parameters.padding_ratio: ",
        id="crop-padding-huge",
    ),
    pytest.param(
        lambda d, e, f: _calls(_detect(d, f), _action("crop", fixed_width="64"), _child(e)),
        400,
        400,
        "chain.calls[1].action.parameters.fixed_width: ",
        id="crop-width-string",
    ),
    pytest.param(
        lambda d, e, f: _calls(_detect(d, f), _action("crop", min_height=2.5), _child(e)),
        400,
        400,
        "chain.calls[1].action.parameters.min_height: ",
        id="crop-height-fraction",
    ),
    pytest.param(
        lambda d, e, f: _calls(_detect(d, f), _action("crop", force_square=1), _child(e)),
        400,
        400,
        "chain.calls[1].action.parameters.force_square: ",
        id="crop-square-number",
    ),
    pytest.param(
        lambda d, e, f: _calls(_detect(d, f), _action("filter", classes="face"), _child(e)),
        400,
        400,
        "chain.calls[1].action.parameters.classes: ",
        id="filter-classes-string",
    ),
    pytest.param(
        lambda d, e, f: _calls(_detect(d, f), _action("filter"), _child(e)),
        400,
        1012,
        "chain.calls[1].action.parameters.classes: missing",
        id="filter-without-classes",
    ),
    pytest.param(
        lambda d, e, f: _calls(_detect(d, f), _action("crop"), _action("crop"), _child(e)),
        400,
        1012,
        "chain.calls[2].action.type: ",
        id="two-crops",
    ),
    pytest.param(
        lambda d, e, f: _calls(_detect("no_such_detector", f), _action("crop"), _child(e)),
        404,
        1002,
        "Service Not Found: ",
        id="unknown-detector",
    ),
    pytest.param(
        lambda d, e, f: _calls(_detect(d, f), _action("crop"), _child("no_such_extractor")),
        404,
        1002,
        "Service Not Found: ",
        id="unknown-child",
    ),
    pytest.param(
        lambda d, e, f: _calls(_detect(e, f), _action("crop"), _child(e)),
        400,
        1006,
        "Service Bad Request Error: chain.calls[0].service: ",
        id="extractor-first",
    ),
    pytest.param(
        lambda d, e, f: _calls(_detect(d, f), _action("crop"), _child(d)),
        400,
        1006,
        "Service Bad Request Error: chain.calls[2].service: ",
        id="detector-child",
    ),
    pytest.param(
        lambda d, e, f: _calls(_action("crop"), _child(e)),
        400,
        1006,
        "Service Bad Request Error: chain.calls[0]: ",
        id="action-first",
    ),
    pytest.param(
        lambda d, e, f: _calls(_detect(d, f), {**_child(e), "parent_id": "nope"}),
        400,
        1006,
        "Service Bad Request Error: chain.calls[1].parent_id: ",
        id="unknown-parent",
    ),
    pytest.param(
        lambda d, e, f: _calls(_detect(d, f), _child(e), _action("crop")),
        400,
        1006,
        "Service Bad Request Error: chain.calls[2]: ",
        id="action-after-child",
    ),
    pytest.param(
        lambda d, e, f: _calls({**_detect(d, f), "parameters": {"output": {"index": True}}}, _child(e)),
        400,
        1006,
        "Service Bad Request Error: chain.calls[0].parameters.output.index: ",
        id="index-on-detector",
    ),
    pytest.param(
        lambda d, e, f: _calls({"service": None, "data": [f]}, _child(e)),
        400,
        400,
        "chain.calls[0].service: ",
        id="detector-null",
    ),
    pytest.param(
        lambda d, e, f: _calls(
            {**_detect(d, f), "parameters": {"output": {"confidence_threshold": float("nan")}}}, _child(e)
        ),
        400,
        1006,
        "Service Bad Request Error: chain.calls[0].parameters.output.confidence_threshold: ",
        id="threshold-nan",
    ),
    pytest.param(
        lambda d, e, f: _calls({"service": d, "data": []}, _child(e)),
        400,
        1005,
        "Service Input Error: chain.calls[0].data: missing data",
        id="no-data",
    ),
    pytest.param(
        lambda d, e, f: _calls({"service": d, "data": [f, "!!no such file!!"]}, _child(e)),
        400,
        1005,
        "Service Input Error: chain.calls[0].data[1]: ",
        id="unreadable-data",
    ),
    pytest.param(
        lambda d, e, f: _calls(_detect(d, f), {**_child(e), "parameters": {"output": {"index": "yes"}}}),
        400,
        400,
        "chain.calls[1].parameters.output.index: ",
        id="child-flag-type",
    ),
    pytest.param(
        lambda d, e, f: _calls(_detect(d, f), {**_child(e), "parameters": {"mllib": {"extract_layer": "nope"}}}),
        400,
        1006,
        "Service Bad Request Error: chain.calls[1].parameters.mllib.extract_layer: ",
        id="child-layer",
    ),
]


@pytest.mark.parametrize(("make", "status", "dd_code", "starts"), CHAIN_ERRORS)
def test_chain_errors_write_nothing(
    client: Client,
    engine: Engine,
    svc: dict[str, str],
    files: dict[str, Path],
    make: Any,
    status: int,
    dd_code: int,
    starts: str,
) -> None:
    chain = make(svc["haar"], svc["tiny"], str(files["astronaut"]))
    before = table_counts(engine)
    raw = json.dumps(chain).encode()  # Python's JSON, which writes NaN as DeepDetect's clients may
    _error(client.post("/chain/objects", content=raw, headers=JSON_HEADERS), status, dd_code, starts)
    assert table_counts(engine) == before


def test_chain_tokens(
    engine: Engine, api_home: Path, api_data: Path, svc: dict[str, str], files: dict[str, Path]
) -> None:
    admin_token, read_token = uuid.uuid4().hex, uuid.uuid4().hex
    app = create_app(api_settings(api_home, api_data, api_token=admin_token, read_token=read_token), engine=engine)
    reader = {"Authorization": f"Bearer {read_token}"}
    admin = {"Authorization": f"Bearer {admin_token}"}
    data = [str(files["astronaut"])]
    with TestClient(app) as c:
        check_every_response(c)
        search = _chain(svc["haar"], data, svc["tiny"], output={"search": True})
        _answer(c.post("/chain/objects", json=search), 401)
        answer = _answer(c.post("/chain/objects", json=search, headers=reader))
        [found] = answer["body"]["predictions"]
        assert answer["head"]["warning"] == RANDOM_WEIGHTS  # the extractor's random weights
        assert all(len(cl[svc["tiny"]]["vals"]) == 512 for cl in found["classes"])
        index = _chain(svc["haar"], data, svc["tiny"], output={"index": True})
        before = table_counts(engine)
        assert _answer(c.post("/chain/objects", json=index, headers=reader), 403)["status"]["msg"] == "Forbidden"
        assert table_counts(engine) == before
        [stored] = _answer(c.post("/chain/objects", json=index, headers=admin))["body"]["predictions"]
        assert all(cl[svc["tiny"]]["indexed"] is True for cl in stored["classes"])


# ---- as DeepDetect's clients use it: non-square input, multibox answers -----------------------------


@pytest.fixture(scope="module")
def mirrored(api_data: Path) -> dict[str, Path]:
    """The astronaut, its mirror image, both side by side (two different faces), and the collage upscaled
    twice by pixel repetition (a 2x box-average of it gives the collage's pixels back)."""
    astronaut = photos.astronaut()
    flipped = np.ascontiguousarray(astronaut[:, ::-1])
    collage = np.concatenate([astronaut, astronaut], axis=1)
    folder = api_data / "mirrored"
    return {
        "astronaut": write_image(folder / "index" / "astronaut.png", astronaut),
        "flipped": write_image(folder / "index" / "flipped.png", flipped),
        "both": write_image(folder / "both.png", np.concatenate([astronaut, flipped], axis=1)),
        "collage": write_image(folder / "collage.png", collage),
        "collage2x": write_image(folder / "collage2x.png", collage.repeat(2, axis=0).repeat(2, axis=1)),
    }


def _boxes(prediction: JSON, key: str = "classes") -> list[list[float]]:
    return sorted([c["bbox"][k] for k in ("xmin", "ymin", "xmax", "ymax")] for c in prediction[key])


@pytest.mark.parametrize("template", ["dlib:frontal_face", "opencv:haarcascade_frontalface_default"])
def test_a_face_detector_takes_a_non_square_input(
    client: Client, mirrored: dict[str, Path], files: dict[str, Path], template: str
) -> None:
    name = f"wide_{uuid.uuid4().hex[:6]}"
    _create(client, name, template, input={"width": 1024, "height": 512})
    params = _answer(client.get(f"/services/{name}"))["body"]["parameters"]
    assert params["input"] == {"connector": "image", "width": 1024, "height": 512}
    collage, twice, astronaut = _predict(
        client, name, [str(mirrored["collage"]), str(mirrored["collage2x"]), str(files["astronaut"])], bbox=True
    )
    assert len(collage["classes"]) >= 2
    centers = sorted(_center(c["bbox"])[0] for c in collage["classes"])
    assert any(FACE_X[0] <= x <= FACE_X[1] for x in centers)
    assert any(512 + FACE_X[0] <= x <= 512 + FACE_X[1] for x in centers)
    # 2048x1024 is seen at 1024x512, exactly the collage's pixels: the same boxes, in source pixels (x2)
    np.testing.assert_allclose(_boxes(twice), 2 * np.array(_boxes(collage)).reshape(-1, 4), atol=0.01)
    assert all(_inside(c["bbox"], 2048, 1024) for c in twice["classes"])
    assert all(_inside(c["bbox"], 512, 512) for c in astronaut["classes"])  # 512x512 stretched to 1024x512


def test_a_torchvision_detector_takes_a_non_square_input(
    client: Client, box_weights: Path, mirrored: dict[str, Path], files: dict[str, Path]
) -> None:
    name = f"wide_{uuid.uuid4().hex[:6]}"
    _create(client, name, FASTER, str(box_weights), input={"width": 1024, "height": 512})
    collage, twice, cat = _predict(
        client, name, [str(mirrored["collage"]), str(mirrored["collage2x"]), str(files["cat"])], rois="rois"
    )
    assert collage["rois"]
    assert all(len(r["vals"]) == 1024 for r in collage["rois"])
    np.testing.assert_allclose(_boxes(twice, "rois"), 2 * np.array(_boxes(collage, "rois")), atol=0.05)
    assert all(_inside(r["bbox"], 451, 300) for r in cat["rois"])


def test_multibox_on_predict_answers_classes_and_every_image_hit(
    client: Client, box_weights: Path, mirrored: dict[str, Path]
) -> None:
    name, k = f"mbox_{uuid.uuid4().hex[:6]}", 1
    _create(client, name, FASTER, str(box_weights), input={"width": 320, "height": 320})
    _predict(client, name, [str(mirrored["astronaut"]), str(mirrored["flipped"])], rois="rois", index=True)
    query = [str(mirrored["both"])]
    flags: JSON = {"rois": "rois", "search": True, "search_nn": k, "confidence_threshold": 0.5}
    [per_object] = _predict(client, name, query, **flags)
    [ranked] = _predict(client, name, query, **flags, multibox_rois=True)
    hits = [r.get("nns", []) for r in per_object["rois"]]
    assert len({h["uri"] for found in hits for h in found}) > k  # this query hits more images than search_nn
    _assert_ranking(ranked["nns"], hits, len(hits) * k)  # every image hit, not cut to search_nn
    classes = ranked["classes"]  # the query objects, as DeepDetect's multibox answer has them
    assert [{key: c[key] for key in ("cat", "prob", "bbox")} for c in classes] == [
        {key: r[key] for key in ("cat", "prob", "bbox")} for r in per_object["rois"]
    ]
    assert classes[-1]["last"] is True
    assert all("last" not in c for c in classes[:-1])


def test_multibox_in_a_chain_returns_every_image_hit(
    client: Client, svc: dict[str, str], mirrored: dict[str, Path]
) -> None:
    faces, k = f"mboxfaces_{uuid.uuid4().hex[:6]}", 1
    _create(client, faces, "dlib:face_descriptor")
    detect = {"bbox": True, "confidence_threshold": 0.6}
    index = [str(mirrored["astronaut"].parent)]
    _run(client, _chain(svc["dlib"], index, faces, detect=detect, output={"index": True}))
    output = {"search": True, "search_nn": k, "multibox_rois": True}
    _, [ranked] = _run(client, _chain(svc["dlib"], [str(mirrored["both"])], faces, detect=detect, output=output))
    assert len(ranked["classes"]) == 2  # the face and its mirror image
    # one hit per face, each in its own image: two images, more than search_nn
    assert sorted(n["uri"] for n in ranked["nns"]) == [str(mirrored["astronaut"]), str(mirrored["flipped"])]
    assert ranked["classes"][-1]["last"] is True
    assert "last" not in ranked["classes"][0]
