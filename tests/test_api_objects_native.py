"""Objects on the native face, /api/v1, over the real app: real detectors (dlib's HOG faces, a Faster
R-CNN with random weights for box vectors), dlib's face descriptor, real photos (scikit-image's astronaut
and coffee, matplotlib's Grace Hopper), real Postgres. Index objects, search per object, rank images by
their objects (checked against the documented formulas over the same hits), and the errors."""

from __future__ import annotations

import base64
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import cv2
import matplotlib.cbook
import numpy as np
import pytest
import skimage.data
from httpx import Response
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine, text
from tests.conftest import table_counts, write_image

Client = TestClient[Litestar]

DETECTOR = "faces"  # dlib:frontal_face: boxes only (no vectors)
EMBEDDER = "face-vectors"  # dlib:face_descriptor: embeds each face crop
CHAIN = {"detector": DETECTOR, "crop": {"padding_ratio": 0.1}, "confidence_threshold": 0.6}
FACE_X, FACE_Y = (160, 280), (60, 180)  # where the astronaut's face is (about x 170-270, y 70-170)


def problem(response: Response, status: int, field: str | None = None) -> dict[str, Any]:
    """An RFC 9457 problem answer with this status, naming `field` (in `field` and in the detail)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["detail"]
    if field is not None:
        assert body.get("field") == field, body
        assert field.split("[")[0].split(".")[0] in body["detail"]
    return body


def ok(response: Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def on_the_face(bbox: list[float], offset: float = 0) -> bool:
    xmin, ymin, xmax, ymax = bbox
    return FACE_X[0] <= xmin - offset < xmax - offset <= FACE_X[1] and FACE_Y[0] <= ymin < ymax <= FACE_Y[1]


@pytest.fixture(scope="module")
def photos(api_data: Path) -> dict[str, Path]:
    folder = api_data / "photos"
    astronaut = skimage.data.astronaut()
    grace = cv2.imread(str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    return {
        "astronaut": write_image(folder / "astronaut.png", astronaut),
        "collage": write_image(folder / "collage.png", np.hstack([astronaut, astronaut])),  # two faces
        "grace": write_image(folder / "grace.png", cv2.cvtColor(grace, cv2.COLOR_BGR2RGB)),
        "coffee": write_image(folder / "coffee.png", skimage.data.coffee()),  # no face
    }


@pytest.fixture(scope="module")
def faces(client: Client, photos: dict[str, Path]) -> dict[str, Any]:
    """The detector and extractor services, and the photos indexed as faces, each with its metadata."""
    detector = ok(client.post("/api/v1/services", json={"name": DETECTOR, "model": "dlib:frontal_face"}), 201)
    embedder = ok(client.post("/api/v1/services", json={"name": EMBEDDER, "model": "dlib:face_descriptor"}), 201)
    who = {"astronaut": "eileen", "collage": "eileen", "grace": "grace", "coffee": "nobody"}
    items = [{"data": str(path), "metadata": {"who": who[name], "name": name}} for name, path in photos.items()]
    indexed = ok(client.post(f"/api/v1/services/{EMBEDDER}/images", json={"items": items, **CHAIN}), 201)
    ids = {name: image["id"] for name, image in zip(photos, indexed["images"], strict=True)}
    return {"detector": detector, "embedder": embedder, "indexed": indexed, "ids": ids}


def test_detector_and_extractor_services_are_created_with_their_kind(client: Client, faces: dict[str, Any]) -> None:
    detector, embedder = faces["detector"], faces["embedder"]
    assert (detector["kind"], detector["model"], detector["weights"]) == ("detector", "dlib:frontal_face", "packaged")
    assert (detector["dimension"], detector["size"]) == (0, 0)  # no vectors; the images' own size
    assert (embedder["kind"], embedder["dimension"], embedder["layer"]) == ("extractor", 128, "descriptor")
    assert ok(client.get(f"/api/v1/services/{DETECTOR}")) == detector
    for model, extra in (
        ("opencv:haarcascade_frontalface_default", {}),
        ("ssd_mobilenet_v2_coco", {}),
        ("fasterrcnn_mobilenet_v3_large_320_fpn", {"weights": "none", "size": 320}),
    ):
        name = f"d_{uuid.uuid4().hex[:8]}"
        created = ok(client.post("/api/v1/services", json={"name": name, "model": model, **extra}), 201)
        assert (created["kind"], created["model"]) == ("detector", model)
        assert created["dimension"] == (1024 if model.startswith("fasterrcnn") else 0)
        assert client.delete(f"/api/v1/services/{name}").status_code == 204


def test_indexing_reports_the_objects_stored_per_image(
    client: Client, engine: Engine, faces: dict[str, Any], photos: dict[str, Path]
) -> None:
    indexed, ids = faces["indexed"], faces["ids"]
    assert [(i["position"], i["uri"]) for i in indexed["images"]] == [
        (n, str(p)) for n, p in enumerate(photos.values())
    ]
    found = {name: image["objects"] for name, image in zip(photos, indexed["images"], strict=True)}
    assert [len(found[n]) for n in ("astronaut", "collage", "grace", "coffee")] == [1, 2, 1, 0]
    assert on_the_face(found["astronaut"][0]["bbox"])
    left, right = sorted(found["collage"], key=lambda o: o["bbox"][0])
    assert on_the_face(left["bbox"])
    assert on_the_face(right["bbox"], offset=512)
    assert all(o["category"] == "face" and 0.6 <= o["prob"] <= 1 for objs in found.values() for o in objs)
    assert (indexed["indexed"], indexed["objects"], indexed["skipped"], indexed["skipped_uris"]) == (3, 4, 0, [])
    assert ids["coffee"] is None  # nothing found: nothing stored, and the call did not fail
    with engine.connect() as conn:
        uris = set(conn.execute(text("SELECT uri FROM image")).scalars())
    assert str(photos["coffee"]) not in uris
    assert {str(photos[n]) for n in ("astronaut", "collage", "grace")} <= uris

    stored = ok(client.get(f"/api/v1/images/{ids['astronaut']}/objects"))
    assert len(stored) == 1
    [face] = stored
    assert (face["image_id"], face["category"], face["detector"], face["embedded_by"]) == (
        ids["astronaut"],
        "face",
        DETECTOR,
        [EMBEDDER],
    )
    assert face["bbox"] == pytest.approx(found["astronaut"][0]["bbox"])
    assert face["prob"] == pytest.approx(found["astronaut"][0]["prob"])
    assert face["roi_id"] >= 1
    assert face["created_at"]
    assert len(ok(client.get(f"/api/v1/images/{ids['collage']}/objects"))) == 2
    assert ok(client.get(f"/api/v1/services/{EMBEDDER}"))["index"]["vectors"] == 4
    problem(client.get("/api/v1/images/987654321/objects"), 404)


def test_a_folder_indexes_its_faces_and_skips_the_rest(client: Client, engine: Engine, api_data: Path) -> None:
    folder = api_data / "folder"
    write_image(folder / "a" / "astronaut.png", skimage.data.astronaut())
    write_image(folder / "b" / "coffee.png", skimage.data.coffee())
    (folder / "notes.txt").write_text("not an image")
    name = f"e_{uuid.uuid4().hex[:8]}"
    ok(client.post("/api/v1/services", json={"name": name, "model": "dlib:face_descriptor"}), 201)
    before = table_counts(engine)
    result = ok(client.post(f"/api/v1/services/{name}/images", json={"items": [{"data": str(folder)}], **CHAIN}), 201)
    assert [(i["uri"], len(i["objects"]), i["id"] is None) for i in result["images"]] == [
        (str(folder / "a" / "astronaut.png"), 1, False),
        (str(folder / "b" / "coffee.png"), 0, True),
    ]
    assert (result["indexed"], result["objects"], result["skipped_uris"]) == (1, 1, [str(folder / "notes.txt")])
    after = table_counts(engine)
    assert (after["image"], after["roi"], after["embedding"]) == (
        before["image"] + 1,
        before["roi"] + 1,
        before["embedding"] + 1,
    )


def test_object_search_finds_the_astronaut_s_face_at_distance_zero(
    client: Client, faces: dict[str, Any], photos: dict[str, Path]
) -> None:
    body = {"image": str(photos["astronaut"]), "k": 3, **CHAIN}
    found = ok(client.post(f"/api/v1/services/{EMBEDDER}/objects/search", json=body))
    assert found["generation"] is None  # no index built: exact search
    [query] = found["query_objects"]
    assert on_the_face(query["bbox"])
    assert query["category"] == "face"
    nearest = query["neighbours"]
    assert len(nearest) == 3
    assert nearest[0]["dist"] == pytest.approx(0.0, abs=1e-6)
    assert nearest[0]["uri"] in {str(photos["astronaut"]), str(photos["collage"])}
    assert nearest[0]["bbox"] == pytest.approx(query["bbox"])
    assert (nearest[0]["category"], nearest[0]["metadata"]["who"]) == ("face", "eileen")
    assert [n["dist"] for n in nearest] == sorted(n["dist"] for n in nearest)
    assert {n["image_id"] for n in nearest} <= set(faces["ids"].values())
    # Grace Hopper is another person: farther than the astronaut's own faces
    assert nearest[-1]["metadata"]["who"] == "grace" or all(n["metadata"]["who"] == "eileen" for n in nearest)

    uploaded = client.post(
        f"/api/v1/services/{EMBEDDER}/objects/search/upload",
        files={"file": ("q.png", photos["astronaut"].read_bytes(), "image/png")},
        data={"k": "3", "detector": DETECTOR, "crop": '{"padding_ratio": 0.1}', "confidence_threshold": "0.6"},
    )
    assert ok(uploaded) == found

    as_base64 = base64.b64encode(photos["grace"].read_bytes()).decode()
    grace = ok(client.post(f"/api/v1/services/{EMBEDDER}/objects/search", json={"image": as_base64, "k": 1, **CHAIN}))
    assert [q["neighbours"][0]["image_id"] for q in grace["query_objects"]] == [faces["ids"]["grace"]]


def expected_ranking(query_objects: list[dict[str, Any]], score: str) -> list[dict[str, Any]]:
    """sql/functions/rank_images.sql's documented scores, computed in Python over an object search's hits."""
    hits: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for q, query in enumerate(query_objects):
        for n in query["neighbours"]:
            hits[n["image_id"]].append((q, n["dist"]))
    rows = []
    for image_id, found in hits.items():
        dists = [d for _, d in found]
        mean = sum(dists) / len(dists)
        value = {
            "mean": mean,
            "min": min(dists),
            "count": float(len({q for q, _ in found})),
            "sum_similarity": sum(1 / (1 + d) for d in dists),
        }[score]
        rows.append(
            {
                "image_id": image_id,
                "score": value,
                "mean_dist": mean,
                "min_dist": min(dists),
                "hit_count": len(found),
                "query_count": len({q for q, _ in found}),
            }
        )
    sign = -1 if score in ("count", "sum_similarity") else 1
    return sorted(rows, key=lambda r: (sign * r["score"], r["mean_dist"], r["image_id"]))


@pytest.mark.parametrize("score", ["mean", "min", "count", "sum_similarity"])
@pytest.mark.parametrize("query", ["astronaut", "collage", "grace"])
def test_similar_objects_ranks_images_by_the_documented_score(
    client: Client, faces: dict[str, Any], photos: dict[str, Path], score: str, query: str
) -> None:
    body = {"image": str(photos[query]), "k": 2, **CHAIN}
    searched = ok(client.post(f"/api/v1/services/{EMBEDDER}/objects/search", json=body))
    ranked = ok(
        client.post(f"/api/v1/services/{EMBEDDER}/images/similar-objects", json=body | {"score": score, "limit": 10})
    )
    assert ranked["query_objects"] == [
        {key: q[key] for key in ("bbox", "category", "prob")} for q in searched["query_objects"]
    ]
    expected = expected_ranking(searched["query_objects"], score)
    assert [i["image_id"] for i in ranked["images"]] == [r["image_id"] for r in expected]
    for got, want in zip(ranked["images"], expected, strict=True):
        assert got["score"] == pytest.approx(want["score"], abs=1e-6)
        assert got["mean_dist"] == pytest.approx(want["mean_dist"], abs=1e-6)
        assert got["min_dist"] == pytest.approx(want["min_dist"], abs=1e-6)
        assert (got["hit_count"], got["query_count"]) == (want["hit_count"], want["query_count"])
        neighbours = {
            (q, n["embedding_id"]): n
            for q, query_object in enumerate(searched["query_objects"])
            for n in query_object["neighbours"]
            if n["image_id"] == got["image_id"]
        }
        assert {(m["query"], m["embedding_id"]) for m in got["matches"]} == set(neighbours)
        for match in got["matches"]:
            hit = neighbours[(match["query"], match["embedding_id"])]
            assert (match["roi_id"], match["category"]) == (hit["roi_id"], hit["category"])
            assert match["bbox"] == pytest.approx(hit["bbox"])
        assert got["metadata"]["name"] in photos
    if query == "collage" and score == "count":
        assert ranked["images"][0]["image_id"] == faces["ids"]["collage"]
        assert ranked["images"][0]["query_count"] == 2
    if score == "min":
        assert ranked["images"][0]["min_dist"] == pytest.approx(0.0, abs=1e-6)
    limited = ok(
        client.post(f"/api/v1/services/{EMBEDDER}/images/similar-objects", json=body | {"score": score, "limit": 1})
    )
    assert limited["images"] == ranked["images"][:1]


def test_similar_objects_upload_answers_as_the_json_body(
    client: Client, faces: dict[str, Any], photos: dict[str, Path]
) -> None:
    body = {"image": str(photos["collage"]), "k": 2, "score": "count", **CHAIN}
    ranked = ok(client.post(f"/api/v1/services/{EMBEDDER}/images/similar-objects", json=body))
    uploaded = client.post(
        f"/api/v1/services/{EMBEDDER}/images/similar-objects/upload",
        files={"file": ("q.png", photos["collage"].read_bytes(), "image/png")},
        data={"k": "2", "score": "count", "detector": DETECTOR, "crop": '{"padding_ratio": 0.1}'}
        | {"confidence_threshold": "0.6"},
    )
    assert ok(uploaded) == ranked


def test_metadata_and_category_filters(client: Client, faces: dict[str, Any], photos: dict[str, Path]) -> None:
    body = {"image": str(photos["astronaut"]), "k": 5, **CHAIN}
    url = f"/api/v1/services/{EMBEDDER}"
    only_grace = ok(client.post(f"{url}/objects/search", json=body | {"filter": {"who": "grace"}}))
    [query] = only_grace["query_objects"]
    assert [n["image_id"] for n in query["neighbours"]] == [faces["ids"]["grace"]]
    ranked = ok(client.post(f"{url}/images/similar-objects", json=body | {"filter": {"who": "grace"}}))
    assert [i["image_id"] for i in ranked["images"]] == [faces["ids"]["grace"]]
    eileen = ok(client.post(f"{url}/images/similar-objects", json=body | {"filter": {"who": "eileen"}}))
    assert {i["image_id"] for i in eileen["images"]} == {faces["ids"]["astronaut"], faces["ids"]["collage"]}

    every = ok(client.post(f"{url}/objects/search", json=body))
    assert ok(client.post(f"{url}/objects/search", json=body | {"categories": ["face"]})) == every
    none = ok(client.post(f"{url}/objects/search", json=body | {"categories": ["cat"]}))
    assert [q["neighbours"] for q in none["query_objects"]] == [[]]
    assert ok(client.post(f"{url}/images/similar-objects", json=body | {"categories": ["cat"]}))["images"] == []
    # query_categories picks the query's objects: no cat in the astronaut photo, so no query object
    no_query = ok(client.post(f"{url}/images/similar-objects", json=body | {"query_categories": ["cat"]}))
    assert (no_query["query_objects"], no_query["images"]) == ([], [])


def test_a_detector_with_box_vectors_indexes_and_searches_its_own_boxes(
    client: Client, engine: Engine, photos: dict[str, Path]
) -> None:
    name = f"rcnn_{uuid.uuid4().hex[:6]}"
    model = {"model": "fasterrcnn_mobilenet_v3_large_320_fpn", "weights": "none", "size": 320}
    created = ok(client.post("/api/v1/services", json={"name": name, **model}), 201)
    assert (created["kind"], created["dimension"], created["layer"]) == ("detector", 1024, "box_head")
    items = [{"data": str(photos["coffee"])}, {"data": str(photos["astronaut"])}]
    indexed = ok(client.post(f"/api/v1/services/{name}/images", json={"items": items}), 201)
    coffee, astronaut = indexed["images"]
    assert len(coffee["objects"]) > 0  # random weights still give boxes
    assert indexed["objects"] == len(coffee["objects"]) + len(astronaut["objects"])
    stored = ok(client.get(f"/api/v1/images/{coffee['id']}/objects"))
    assert {o["detector"] for o in stored} == {name}
    assert all(o["embedded_by"] == [name] for o in stored)

    # A random network's box vectors are all about the same, and its boxes all of one category: any
    # stored box is a nearest one.
    url = f"/api/v1/services/{name}"
    found = ok(client.post(f"{url}/objects/search", json={"image": str(photos["coffee"]), "k": 1}))
    assert len(found["query_objects"]) == len(coffee["objects"])
    assert all(q["neighbours"][0]["dist"] == pytest.approx(0.0, abs=1e-4) for q in found["query_objects"])
    assert {q["neighbours"][0]["image_id"] for q in found["query_objects"]} <= {coffee["id"], astronaut["id"]}
    ranked = ok(client.post(f"{url}/images/similar-objects", json={"image": str(photos["coffee"]), "k": 1}))
    assert ranked["images"]
    assert {i["image_id"] for i in ranked["images"]} <= {coffee["id"], astronaut["id"]}

    category = stored[0]["category"]
    body = {"image": str(photos["astronaut"]), "k": 3, "categories": [category]}
    filtered = ok(client.post(f"{url}/objects/search", json=body))
    assert all(len(q["neighbours"]) == 3 for q in filtered["query_objects"])
    assert all(n["category"] == category for q in filtered["query_objects"] for n in q["neighbours"])
    other = ok(client.post(f"{url}/objects/search", json=body | {"categories": ["no such category"]}))
    assert all(q["neighbours"] == [] for q in other["query_objects"])
    ranked = ok(client.post(f"{url}/images/similar-objects", json=body | {"score": "sum_similarity"}))
    assert all(m["category"] == category for i in ranked["images"] for m in i["matches"])
    only = ok(client.post(f"{url}/objects/search", json=body | {"query_categories": [category]}))
    assert len(only["query_objects"]) == len(astronaut["objects"])
    none = ok(client.post(f"{url}/objects/search", json=body | {"query_categories": ["no such category"]}))
    assert none["query_objects"] == []

    assert ok(client.post(f"{url}/builds", json={}), 201)["vector_count"] == indexed["objects"]
    built = ok(client.post(f"{url}/objects/search", json={"image": str(photos["coffee"]), "k": 1}))
    assert built["generation"] is not None
    assert all(q["neighbours"][0]["dist"] == pytest.approx(0.0, abs=1e-4) for q in built["query_objects"])


def test_a_detector_without_vectors_stores_its_boxes_only(
    client: Client, engine: Engine, api_data: Path, faces: dict[str, Any]
) -> None:
    path = write_image(
        api_data / "boxes" / "grace.png",
        cv2.imread(str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))[:, :, ::-1],
    )
    before = table_counts(engine)
    result = ok(client.post(f"/api/v1/services/{DETECTOR}/images", json={"items": [{"data": str(path)}]}), 201)
    [image] = result["images"]
    assert len(image["objects"]) == 1
    [stored] = ok(client.get(f"/api/v1/images/{image['id']}/objects"))
    assert (stored["detector"], stored["embedded_by"], stored["category"]) == (DETECTOR, [], "face")
    after = table_counts(engine)
    assert (after["roi"], after["embedding"]) == (before["roi"] + 1, before["embedding"])


def test_indexing_objects_by_upload(client: Client, faces: dict[str, Any], photos: dict[str, Path]) -> None:
    name = f"u_{uuid.uuid4().hex[:8]}"
    ok(client.post("/api/v1/services", json={"name": name, "model": "dlib:face_descriptor"}), 201)
    uploaded = client.post(
        f"/api/v1/services/{name}/images/upload",
        files=[
            ("files", ("a.png", photos["collage"].read_bytes(), "image/png")),
            ("files", ("b.png", photos["coffee"].read_bytes(), "image/png")),
        ],
        data={"detector": DETECTOR, "crop": '{"padding_ratio": 0.1}', "confidence_threshold": "0.6"}
        | {"categories": '["face"]', "items": '[{"uri": "collage-upload"}, {}]'},
    )
    result = ok(uploaded, 201)
    assert (result["images"][0]["uri"], len(result["images"][0]["objects"])) == ("collage-upload", 2)
    assert result["images"][1]["id"] is None
    assert result["images"][1]["objects"] == []
    assert (result["indexed"], result["objects"]) == (1, 2)


def _bad(client: Client, photos: dict[str, Path], case: str) -> Response:
    image = str(photos["astronaut"])
    items = [{"data": image}]
    search = {"image": image, **CHAIN}
    e, d = f"/api/v1/services/{EMBEDDER}", f"/api/v1/services/{DETECTOR}"
    upload = {"file": ("q.png", photos["astronaut"].read_bytes(), "image/png")}
    match case:
        case "unknown-detector":
            return client.post(f"{e}/images", json={"items": items, **CHAIN, "detector": "nope"})
        case "detector-is-an-extractor":
            return client.post(f"{e}/objects/search", json=search | {"detector": EMBEDDER})
        case "detector-twice":
            return client.post(f"{d}/images", json={"items": items, **CHAIN})
        case "unknown-score":
            return client.post(f"{e}/images/similar-objects", json=search | {"score": "median"})
        case "negative-padding":
            return client.post(f"{e}/images", json={"items": items, **CHAIN, "crop": {"padding_ratio": -0.1}})
        case "limit-zero":
            return client.post(f"{e}/images/similar-objects", json=search | {"limit": 0})
        case "threshold-above-one":
            return client.post(f"{e}/objects/search", json=search | {"confidence_threshold": 1.5})
        case "no-categories":
            return client.post(f"{e}/images/similar-objects", json=search | {"categories": []})
        case "detector-without-vectors-alone":
            return client.post(f"{d}/objects/search", json={"image": image})
        case "extractor-without-detector":
            return client.post(f"{e}/images/similar-objects", json={"image": image})
        case "crop-without-detector":
            return client.post(f"{e}/images", json={"items": items, "crop": {"padding_ratio": 0.1}})
        case "directory-query":
            return client.post(f"{e}/objects/search", json=search | {"image": str(photos["astronaut"].parent)})
        case "not-an-image":
            return client.post(f"{e}/objects/search", json=search | {"image": base64.b64encode(b"hello").decode()})
        case "upload-unknown-detector":
            return client.post(f"{e}/objects/search/upload", files=upload, data={"detector": "nope"})
        case "upload-bad-crop":
            return client.post(f"{e}/objects/search/upload", files=upload, data={**_form(), "crop": "{1"})
        case "upload-negative-padding":
            form = {**_form(), "crop": '{"padding_ratio": -1}'}
            return client.post(f"{e}/images/similar-objects/upload", files=upload, data=form)
        case "upload-unknown-score":
            return client.post(f"{e}/images/similar-objects/upload", files=upload, data={**_form(), "score": "x"})
        case "index-upload-bad-categories":
            files = {"files": upload["file"]}
            return client.post(f"{e}/images/upload", files=files, data={**_form(), "categories": '"face"'})
    raise AssertionError(case)


def _form() -> dict[str, str]:
    return {"detector": DETECTOR, "confidence_threshold": "0.6"}


@pytest.mark.parametrize(
    ("case", "field"),
    [
        ("unknown-detector", "detector"),
        ("detector-is-an-extractor", "detector"),
        ("detector-twice", "detector"),
        ("unknown-score", "score"),
        ("negative-padding", "crop.padding_ratio"),
        ("limit-zero", "limit"),
        ("threshold-above-one", "confidence_threshold"),
        ("no-categories", "categories"),
        ("detector-without-vectors-alone", "detector"),
        ("extractor-without-detector", "detector"),
        ("crop-without-detector", "crop"),
        ("directory-query", "image"),
        ("not-an-image", "image"),
        ("upload-unknown-detector", "detector"),
        ("upload-bad-crop", "crop"),
        ("upload-negative-padding", "crop.padding_ratio"),
        ("upload-unknown-score", "score"),
        ("index-upload-bad-categories", "categories"),
    ],
)
def test_bad_inputs_name_the_field_and_write_nothing(
    client: Client, engine: Engine, faces: dict[str, Any], photos: dict[str, Path], case: str, field: str
) -> None:
    before = table_counts(engine)
    problem(_bad(client, photos, case), 400, field)
    assert table_counts(engine) == before


def test_object_routes_of_an_unknown_service_are_not_found(client: Client, photos: dict[str, Path]) -> None:
    for route in ("objects/search", "images/similar-objects"):
        problem(client.post(f"/api/v1/services/nope/{route}", json={"image": str(photos["astronaut"])}), 404)
