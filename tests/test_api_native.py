"""The native face, /api/v1, over the real app (Litestar's test client, real Postgres, real models with
seeded random weights): every route, asserted field by field, and its errors as problem details."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import cv2
import pytest
from httpx import Response
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine
from tests.conftest import api_settings, draw_image, table_counts, write_image

from simsearch import services, store
from simsearch.api import create_app
from simsearch.input import decode_image
from simsearch.models import ModelCache

MODEL = {"model": "resnet18", "weights": "none", "size": 64}
DIM = 512  # resnet18's pooled features

Client = TestClient[Litestar]

# Images are shared across services by uri, and base64/uploads are stored under sha256:<hex>: every
# test draws pictures nobody else draws.
_seeds = itertools.count(50_000, 1)


def png(seed: int | None = None) -> bytes:
    rgb = draw_image(next(_seeds) if seed is None else seed)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return encoded.tobytes()


def b64(content: bytes) -> str:
    return base64.b64encode(content).decode()


def sha_uri(content: bytes) -> str:
    return "sha256:" + hashlib.sha256(content).hexdigest()


def new_name() -> str:
    return f"n_{uuid.uuid4().hex[:10]}"


def folder(api_data: Path, count: int) -> list[Path]:
    """`count` new pictures in a new folder under the app's data root."""
    where = api_data / uuid.uuid4().hex[:8]
    return [write_image(where / f"img{i:03d}.png", draw_image(next(_seeds))) for i in range(count)]


def problem(
    response: Response, status: int, field: str | None = None, *, mentions: str | None = None
) -> dict[str, Any]:
    """An RFC 9457 problem answer with this status, naming `field` (in `field` and in the detail), or
    only mentioning a name in its detail."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    if field is not None:
        assert body.get("field") == field, body
        assert field.split("[")[0] in body["detail"]
    if mentions is not None:
        assert mentions in body["detail"], body
    return body


def create(client: Client, **extra: Any) -> dict[str, Any]:
    response = client.post("/api/v1/services", json={"name": new_name(), **MODEL, **extra})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def index(client: Client, name: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    response = client.post(f"/api/v1/services/{name}/images", json={"items": items})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def index_paths(client: Client, name: str, paths: list[Path], labels: list[dict[str, Any]] | None = None) -> list[int]:
    items = [{"data": str(p)} | ({"metadata": labels[i]} if labels else {}) for i, p in enumerate(paths)]
    result = index(client, name, items)
    assert [(i["position"], i["uri"]) for i in result["images"]] == [(i, str(p)) for i, p in enumerate(paths)]
    return [int(i["id"]) for i in result["images"]]


def search(client: Client, name: str, **query: Any) -> dict[str, Any]:
    response = client.post(f"/api/v1/services/{name}/search", json=query)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def build(client: Client, name: str, **body: Any) -> dict[str, Any]:
    response = client.post(f"/api/v1/services/{name}/builds", json=body)
    assert response.status_code == 201, response.text
    built: dict[str, Any] = response.json()
    assert built["status"] == "ready"
    return built


def image_vector(engine: Engine, models: ModelCache, name: str, content: bytes) -> list[float]:
    """The vector the service's model makes for these bytes, computed outside the API."""
    with engine.connect() as conn:
        record = store.get_service(conn, name)
    rgb = decode_image(content, max_pixels=10_000_000).rgb
    vector: list[float] = services.extractor_for(record, models).embed([rgb])[0].tolist()
    return vector


# ---- services --------------------------------------------------------------------------------------


def test_create_get_list_and_delete_a_service(client: Client) -> None:
    name = new_name()
    response = client.post(
        "/api/v1/services", json={"name": name.upper(), **MODEL, "metric": "cosine", "description": "my photos"}
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["name"] == name  # stored lowercased, as DeepDetect does
    assert (created["model"], created["weights"], created["size"], created["metric"]) == (
        "resnet18",
        "none",
        64,
        "cosine",
    )
    assert created["description"] == "my photos"
    assert created["dimension"] == DIM
    assert created["layer"] == "flatten"
    assert created["index"] == {
        "backend": "faiss",
        "index_type": "Flat",
        "vectors": 0,
        "generation": None,
        "built_at": None,
        "train_samples": None,
        "nprobe": None,
        "ef_search": None,
        "ondisk": False,
        "n_trees": None,
        "search_k": None,
    }
    datetime.fromisoformat(created["created_at"])

    got = client.get(f"/api/v1/services/{name}")
    assert got.status_code == 200
    assert got.json() == created
    assert client.get(f"/api/v1/services/{name.upper()}").json() == created

    listed = client.get("/api/v1/services")
    assert listed.status_code == 200
    names = [s["name"] for s in listed.json()]
    assert name in names
    assert names == sorted(names)
    assert next(s for s in listed.json() if s["name"] == name) == created

    assert client.delete(f"/api/v1/services/{name}").status_code == 204
    problem(client.get(f"/api/v1/services/{name}"), 404)
    problem(client.delete(f"/api/v1/services/{name}"), 404)
    assert name not in [s["name"] for s in client.get("/api/v1/services").json()]


def test_index_settings_of_a_new_service_are_stored(client: Client) -> None:
    created = create(client, index_type="IVF4,Flat", train_samples=100, nprobe=2, ef_search=8, ondisk=True)
    assert created["index"] | {"built_at": None} == {
        "backend": "faiss",
        "index_type": "IVF4,Flat",
        "vectors": 0,
        "generation": None,
        "built_at": None,
        "train_samples": 100,
        "nprobe": 2,
        "ef_search": 8,
        "ondisk": True,
        "n_trees": None,
        "search_k": None,
    }


def test_a_duplicate_name_is_a_conflict_and_an_unknown_one_is_not_found(client: Client, engine: Engine) -> None:
    name = create(client)["name"]
    before = table_counts(engine)
    body = problem(client.post("/api/v1/services", json={"name": name, **MODEL}), 409)
    assert name in body["detail"]
    problem(client.post("/api/v1/services", json={"name": name.upper(), **MODEL}), 409)
    assert table_counts(engine) == before
    missing = new_name()
    for response in (
        client.get(f"/api/v1/services/{missing}"),
        client.delete(f"/api/v1/services/{missing}"),
        client.post(f"/api/v1/services/{missing}/images", json={"items": [{"data": b64(png())}]}),
        client.post(f"/api/v1/services/{missing}/search", json={"image": b64(png())}),
        client.post(f"/api/v1/services/{missing}/builds", json={}),
        client.get(f"/api/v1/services/{missing}/builds"),
        client.get("/api/v1/images", params={"service": missing}),
    ):
        assert missing in problem(response, 404)["detail"]
    assert table_counts(engine) == before


def test_deleting_a_service_deletes_the_images_only_it_used(client: Client, api_data: Path) -> None:
    first, second = create(client)["name"], create(client)["name"]
    shared, own = png(), png()
    [shared_id, own_id] = [i["id"] for i in index(client, first, [{"data": b64(shared)}, {"data": b64(own)}])["images"]]
    assert index(client, second, [{"data": b64(shared)}])["images"][0]["id"] == shared_id
    assert client.delete(f"/api/v1/services/{first}").status_code == 204
    problem(client.get(f"/api/v1/images/{own_id}"), 404)
    assert client.get(f"/api/v1/images/{shared_id}").status_code == 200
    assert [h["image_id"] for h in search(client, second, image_id=shared_id, k=5)["results"]] == [shared_id]


# ---- indexing --------------------------------------------------------------------------------------


def test_index_by_json_with_paths_base64_uris_and_metadata(client: Client, engine: Engine, api_data: Path) -> None:
    name = create(client)["name"]
    paths = folder(api_data, 2)
    content = png()
    result = index(
        client,
        name,
        [
            {"data": str(paths[0]), "uri": "sku-" + name, "metadata": {"label": "cat", "n": 1}},
            {"data": b64(content), "metadata": {"label": "dog", "tags": ["a", "b"]}},
            {"data": str(paths[1])},
        ],
    )
    assert (result["indexed"], result["skipped"], result["skipped_uris"]) == (3, 0, [])
    assert [(i["position"], i["uri"]) for i in result["images"]] == [
        (0, "sku-" + name),
        (1, sha_uri(content)),
        (2, str(paths[1])),
    ]
    ids = [i["id"] for i in result["images"]]
    assert len(set(ids)) == 3
    expected = [
        (paths[0].read_bytes(), "sku-" + name, {"label": "cat", "n": 1}),
        (content, sha_uri(content), {"label": "dog", "tags": ["a", "b"]}),
        (paths[1].read_bytes(), str(paths[1]), {}),
    ]
    for image_id, (raw, uri, metadata) in zip(ids, expected, strict=True):
        got = client.get(f"/api/v1/images/{image_id}")
        assert got.status_code == 200
        image = got.json()
        assert (image["id"], image["uri"], image["metadata"]) == (image_id, uri, metadata)
        assert image["sha256"] == hashlib.sha256(raw).hexdigest()
        assert (image["width"], image["height"]) == (128, 96)
        datetime.fromisoformat(image["created_at"])
    assert client.get(f"/api/v1/services/{name}").json()["index"]["vectors"] == 3


def test_index_a_directory_and_reindex_a_uri(client: Client, api_data: Path) -> None:
    name = create(client)["name"]
    paths = folder(api_data, 3)
    (paths[0].parent / "notes.txt").write_text("not an image")
    result = index(client, name, [{"data": str(paths[0].parent), "metadata": {"batch": 1}}])
    assert (result["indexed"], result["skipped"]) == (3, 1)
    assert result["skipped_uris"] == [str(paths[0].parent / "notes.txt")]
    assert [(i["position"], i["uri"]) for i in result["images"]] == [(0, str(p)) for p in paths]
    first_ids = [i["id"] for i in result["images"]]
    # The same uri again: the same image row, metadata merged, one vector per image.
    again = index(client, name, [{"data": str(paths[1]), "metadata": {"batch": 2, "extra": True}}])
    assert again["images"][0]["id"] == first_ids[1]
    assert client.get(f"/api/v1/images/{first_ids[1]}").json()["metadata"] == {"batch": 2, "extra": True}
    assert client.get(f"/api/v1/services/{name}").json()["index"]["vectors"] == 3


def test_bad_index_items_name_the_item_and_write_nothing(client: Client, engine: Engine, api_data: Path) -> None:
    name = create(client)["name"]
    good = b64(png())
    outside = write_image(api_data.parent / f"outside-{uuid.uuid4().hex[:6]}.png", draw_image(next(_seeds)))
    cases: list[tuple[list[Any], str]] = [
        ([{"data": good}, {"data": str(outside)}], "data[1]"),
        ([{"data": str(api_data / "missing.png")}], "data[0]"),
        ([{"data": good}, {"data": b64(b"this is not an image")}], "data[1]"),
        ([{"data": "file:///etc/passwd"}], "data[0]"),
        ([{"data": "http://127.0.0.1/x.png"}], "data[0]"),
        ([{"data": str(api_data / ".." / outside.name)}], "data[0]"),
    ]
    before = table_counts(engine)
    for items, field in cases:
        problem(client.post(f"/api/v1/services/{name}/images", json={"items": items}), 400, field)
    for body in ({"items": []}, {}, {"items": [{"uri": "x"}]}, {"items": [{"data": good, "colour": 1}]}):
        problem(client.post(f"/api/v1/services/{name}/images", json=body), 400)
    problem(client.post(f"/api/v1/services/{name}/images", content=b"{not json"), 400)
    assert table_counts(engine) == before


def test_index_by_upload_one_file_and_several(client: Client, engine: Engine) -> None:
    name = create(client)["name"]
    one = png()
    response = client.post(f"/api/v1/services/{name}/images/upload", files={"files": ("one.png", one, "image/png")})
    assert response.status_code == 201, response.text
    result = response.json()
    assert (result["indexed"], result["skipped"]) == (1, 0)
    [stored] = result["images"]
    assert (stored["position"], stored["uri"]) == (0, sha_uri(one))
    assert client.get(f"/api/v1/images/{stored['id']}").json()["metadata"] == {}

    contents = [png(), png(), png()]
    items = [{"uri": "up-a-" + name, "metadata": {"label": "cat"}}, {"metadata": {"label": "dog"}}, {}]
    response = client.post(
        f"/api/v1/services/{name}/images/upload",
        files=[("files", (f"f{i}.png", c, "image/png")) for i, c in enumerate(contents)],
        data={"items": json.dumps(items)},
    )
    assert response.status_code == 201, response.text
    result = response.json()
    assert result["indexed"] == 3
    assert [(i["position"], i["uri"]) for i in result["images"]] == [
        (0, "up-a-" + name),
        (1, sha_uri(contents[1])),
        (2, sha_uri(contents[2])),
    ]
    for stored, content, item in zip(result["images"], contents, items, strict=True):
        image = client.get(f"/api/v1/images/{stored['id']}").json()
        assert image["sha256"] == hashlib.sha256(content).hexdigest()
        assert image["metadata"] == item.get("metadata", {})
    assert client.get(f"/api/v1/services/{name}").json()["index"]["vectors"] == 4
    # Each upload finds itself.
    for stored in result["images"]:
        assert search(client, name, image_id=stored["id"], k=1)["results"][0]["image_id"] == stored["id"]


def test_bad_uploads_write_nothing(client: Client, engine: Engine) -> None:
    name = create(client)["name"]
    url = f"/api/v1/services/{name}/images/upload"
    two = [("files", ("a.png", png(), "image/png")), ("files", ("b.png", png(), "image/png"))]
    before = table_counts(engine)
    problem(client.post(url, files=two, data={"items": "[{}]"}), 400, "items")
    problem(client.post(url, files=two, data={"items": "{not json"}), 400, "items")
    problem(client.post(url, files=two, data={"items": '{"uri": "x"}'}), 400, "items")
    problem(client.post(url, files=two, data={"items": "[1, 2]"}), 400, "items")
    problem(client.post(url, files=two, data={"items": '[{"uri": 5}, {}]'}), 400, "items")
    problem(client.post(url, files=two, data={"items": '[{"metadata": []}, {}]'}), 400, "items")
    problem(client.post(url, files={"files": ("x.png", b"not an image at all", "image/png")}), 400, "files[0]")
    problem(client.post(url, files={"files": ("x.png", b"", "image/png")}), 400, "files[0]")
    mixed = [two[0], ("files", ("c.png", b"GIF89a broken", "image/gif"))]
    problem(client.post(url, files=mixed), 400, "files[1]")
    problem(
        client.post(url, files=two, data={"items": '[{"metadata": {"a": "\\u0000"}}, {}]'}), 400, "items[0].metadata"
    )
    problem(client.post(url, files={"other": ("x.png", png(), "image/png")}), 400)
    problem(client.post(url, data={"files": "not a file"}), 400)
    problem(client.post(f"/api/v1/services/{new_name()}/images/upload", files=two), 404)
    assert table_counts(engine) == before


# ---- images ----------------------------------------------------------------------------------------


def _walk(client: Client, limit: int, service: str | None = None) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    params: dict[str, Any] = {"limit": limit} | ({"service": service} if service else {})
    while True:
        response = client.get("/api/v1/images", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page["items"])
        assert len(page["items"]) <= limit
        if page["next_cursor"] is None:
            return pages
        assert page["items"]
        assert page["next_cursor"] == str(page["items"][-1]["id"])
        params["cursor"] = page["next_cursor"]


@pytest.mark.parametrize("count", [7, 6])
def test_pagination_walks_every_image_exactly_once(client: Client, count: int) -> None:
    name, other = create(client)["name"], create(client)["name"]
    ids = [i["id"] for i in index(client, name, [{"data": b64(png())} for _ in range(count)])["images"]]
    other_ids = [i["id"] for i in index(client, other, [{"data": b64(png())} for _ in range(2)])["images"]]

    pages = _walk(client, 3, service=name)
    assert [len(p) for p in pages] == ([3, 3, 1] if count == 7 else [3, 3])  # no empty last page
    walked = [image["id"] for page in pages for image in page]
    assert walked == sorted(ids)
    first = client.get(f"/api/v1/images/{ids[0]}").json()
    assert pages[0][0] == first

    everything = [image["id"] for page in _walk(client, 4) for image in page]
    assert len(everything) == len(set(everything))
    assert everything == sorted(everything)
    assert set(ids) | set(other_ids) <= set(everything)

    whole = client.get("/api/v1/images", params={"service": name, "limit": 1000}).json()
    assert ([i["id"] for i in whole["items"]], whole["next_cursor"]) == (sorted(ids), None)
    default = client.get("/api/v1/images", params={"service": other}).json()
    assert [i["id"] for i in default["items"]] == sorted(other_ids)


def test_patch_merges_metadata_or_replaces_it(client: Client) -> None:
    name = create(client)["name"]
    [image_id] = [
        i["id"] for i in index(client, name, [{"data": b64(png()), "metadata": {"label": "cat", "n": 1}}])["images"]
    ]
    merged = client.patch(f"/api/v1/images/{image_id}", json={"metadata": {"n": 2, "colour": "red"}})
    assert merged.status_code == 200, merged.text
    assert merged.json()["metadata"] == {"label": "cat", "n": 2, "colour": "red"}
    assert client.get(f"/api/v1/images/{image_id}").json()["metadata"] == {"label": "cat", "n": 2, "colour": "red"}
    replaced = client.patch(f"/api/v1/images/{image_id}", json={"metadata": {"only": True}, "replace": True})
    assert replaced.status_code == 200
    image = client.get(f"/api/v1/images/{image_id}").json()
    assert image["metadata"] == {"only": True}
    assert replaced.json() == image
    # search results carry the new metadata, and the filter sees it
    hits = search(client, name, image_id=image_id, k=1, filter={"only": True})["results"]
    assert [(h["image_id"], h["metadata"]) for h in hits] == [(image_id, {"only": True})]
    assert search(client, name, image_id=image_id, k=1, filter={"label": "cat"})["results"] == []

    problem(client.patch(f"/api/v1/images/{image_id}", json={"metadata": []}), 400)
    problem(client.patch(f"/api/v1/images/{image_id}", json={"replace": True}), 400, mentions="`metadata`")
    problem(client.patch(f"/api/v1/images/{image_id}", json={"metadata": {"a\x00": 1}}), 400, "metadata")
    problem(client.patch(f"/api/v1/images/{image_id}", json={"metadata": {}, "merge": True}), 400)
    assert client.get(f"/api/v1/images/{image_id}").json()["metadata"] == {"only": True}
    problem(client.patch("/api/v1/images/999999999", json={"metadata": {}}), 404)


def test_unknown_and_out_of_range_image_ids(client: Client) -> None:
    for image_id, status in (
        ("999999999", 404),
        (str(2**53 - 1), 404),  # the largest id the schema allows
        (str(2**53), 400),
        (str(2**63), 400),  # beyond Postgres' bigint
        ("9" * 40, 400),
        ("0", 400),
        ("-5", 400),
    ):
        for response in (
            client.get(f"/api/v1/images/{image_id}"),
            client.patch(f"/api/v1/images/{image_id}", json={"metadata": {"a": 1}}),
            client.delete(f"/api/v1/images/{image_id}"),
        ):
            body = problem(response, status, "image_id" if status == 400 else None)
            if status == 404:
                assert image_id in body["detail"]
    problem(client.get("/api/v1/images/abc"), 404)


def test_delete_image_is_gone_from_search_at_once(client: Client, engine: Engine) -> None:
    name = create(client)["name"]
    contents = [png() for _ in range(8)]
    ids = [i["id"] for i in index(client, name, [{"data": b64(c)} for c in contents])["images"]]

    # Before any build: the exact search over unindexed vectors.
    assert search(client, name, image=b64(contents[0]), k=1)["results"][0]["image_id"] == ids[0]
    assert client.delete(f"/api/v1/images/{ids[0]}").status_code == 204
    problem(client.get(f"/api/v1/images/{ids[0]}"), 404)
    problem(client.delete(f"/api/v1/images/{ids[0]}"), 404)
    found = search(client, name, image=b64(contents[0]), k=3)["results"]
    assert len(found) == 3
    assert ids[0] not in [h["image_id"] for h in found]
    assert client.get(f"/api/v1/services/{name}").json()["index"]["vectors"] == 7

    # After a build: the index still holds the vector, the join drops it, and k is still filled.
    built = build(client, name)
    assert built["vector_count"] == 7
    for victim in (1, 2):
        assert search(client, name, image=b64(contents[victim]), k=1)["results"][0]["image_id"] == ids[victim]
        assert client.delete(f"/api/v1/images/{ids[victim]}").status_code == 204
        found = search(client, name, image=b64(contents[victim]), k=5)["results"]
        assert ids[victim] not in [h["image_id"] for h in found]
        assert len(found) == 5
        assert found[0]["distance"] > 0
    remaining = search(client, name, image=b64(contents[3]), k=100)
    assert sorted(h["image_id"] for h in remaining["results"]) == sorted(ids[3:])
    assert remaining["generation"] == built["id"]
    problem(client.post(f"/api/v1/services/{name}/search", json={"image_id": ids[1]}), 404)


# ---- search ----------------------------------------------------------------------------------------


def test_search_by_upload_base64_stored_id_and_vector(
    client: Client, engine: Engine, models: ModelCache, api_data: Path
) -> None:
    name = create(client)["name"]
    paths = folder(api_data, 6)
    labels = [{"label": "cat" if i % 2 else "dog", "i": i} for i in range(6)]
    ids = index_paths(client, name, paths, labels)
    query = paths[2].read_bytes()

    by_upload = client.post(
        f"/api/v1/services/{name}/search/upload", files={"file": ("q.png", query, "image/png")}, data={"k": "3"}
    )
    assert by_upload.status_code == 200, by_upload.text
    result = by_upload.json()
    assert result["generation"] is None
    assert len(result["results"]) == 3
    first = result["results"][0]
    assert first["image_id"] == ids[2]
    assert first["uri"] == str(paths[2])
    assert first["distance"] == pytest.approx(0.0, abs=1e-4)
    assert (first["width"], first["height"]) == (128, 96)
    assert first["sha256"] == hashlib.sha256(query).hexdigest()
    assert first["metadata"] == labels[2]
    distances = [h["distance"] for h in result["results"]]
    assert distances == sorted(distances)

    by_base64 = search(client, name, image=b64(query), k=3)
    assert [h["image_id"] for h in by_base64["results"]] == [h["image_id"] for h in result["results"]]
    by_path = search(client, name, image=str(paths[2]), k=3)
    assert [h["image_id"] for h in by_path["results"]] == [h["image_id"] for h in result["results"]]

    for i, image_id in enumerate(ids):
        found = search(client, name, image_id=image_id, k=6)["results"]
        assert found[0]["image_id"] == image_id
        assert found[0]["uri"] == str(paths[i])
        assert found[0]["distance"] == pytest.approx(0.0, abs=1e-4)
        assert sorted(h["image_id"] for h in found) == sorted(ids)

    vector = image_vector(engine, models, name, paths[4].read_bytes())
    assert len(vector) == DIM
    by_vector = search(client, name, vector=vector, k=2)["results"]
    assert by_vector[0]["image_id"] == ids[4]
    assert by_vector[0]["distance"] == pytest.approx(0.0, abs=1e-4)
    assert len(by_vector) == 2

    # upload with a filter
    filtered = client.post(
        f"/api/v1/services/{name}/search/upload",
        files={"file": ("q.png", query, "image/png")},
        data={"k": "10", "filter": json.dumps({"label": "cat"})},
    )
    assert filtered.status_code == 200, filtered.text
    assert sorted(h["image_id"] for h in filtered.json()["results"]) == [ids[1], ids[3], ids[5]]
    # default k is 10: all 6
    assert len(search(client, name, image_id=ids[0])["results"]) == 6


def test_bad_searches_name_the_field(client: Client, engine: Engine, api_data: Path) -> None:
    name = create(client)["name"]
    other = create(client)["name"]
    [image_id] = [i["id"] for i in index(client, name, [{"data": b64(png())}])["images"]]
    [foreign_id] = [i["id"] for i in index(client, other, [{"data": b64(png())}])["images"]]
    empty_dir = api_data / f"empty-{uuid.uuid4().hex[:6]}"
    empty_dir.mkdir()
    url = f"/api/v1/services/{name}/search"
    before = table_counts(engine)
    body = problem(client.post(url, json={"vector": [0.5] * (DIM - 1)}), 400, "vector")
    assert str(DIM) in body["detail"]
    problem(client.post(url, json={"vector": [0.5] * (DIM + 1)}), 400, "vector")
    problem(client.post(url, json={"vector": ["a"] * DIM}), 400, "vector[0]")
    problem(client.post(url, json={"vector": []}), 400, "vector")
    problem(client.post(url, json={"vector": [1e300] * DIM}), 400, "vector")
    problem(client.post(url, json={}), 400, "query")
    problem(client.post(url, json={"image_id": image_id, "vector": [0.0] * DIM}), 400, "query")
    problem(client.post(url, json={"image_id": image_id, "k": 0}), 400, "k")
    problem(client.post(url, json={"image_id": image_id, "k": 1001}), 400, "k")
    problem(client.post(url, json={"image_id": image_id, "filter": ["cat"]}), 400, "filter")
    problem(client.post(url, json={"image_id": image_id, "nprobe": 0}), 400, "nprobe")
    problem(client.post(url, json={"image_id": image_id, "near": 1}), 400)
    problem(client.post(url, json={"image_id": 0}), 400, "image_id")
    problem(client.post(url, json={"image_id": 2**63}), 400, "image_id")
    problem(client.post(url, json={"image_id": foreign_id}), 404)
    problem(client.post(url, json={"image": "not base64 and not a file!"}), 400, "image")
    problem(client.post(url, json={"image": b64(b"plain text")}), 400, "image")
    problem(client.post(url, json={"image": "/etc/hostname"}), 400, "image")
    problem(client.post(url, json={"image": "/etc"}), 400, "image")  # outside the roots, directory or not
    problem(client.post(url, json={"image": "http://169.254.169.254/latest"}), 400, "image")
    problem(client.post(url, json={"image_id": image_id, "filter": {"a": "\x00"}}), 400, "filter")
    problem(client.post(url, json={"image": str(empty_dir)}), 400, "image")
    problem(client.post(url, json={"image": str(api_data)}), 400, "image")
    upload = f"/api/v1/services/{name}/search/upload"
    query = {"file": ("q.png", png(), "image/png")}
    problem(client.post(upload, files=query, data={"k": "0"}), 400, "k")
    problem(client.post(upload, files=query, data={"k": "many"}), 400, "k")
    problem(client.post(upload, files=query, data={"filter": "[1]"}), 400, "filter")
    problem(client.post(upload, files=query, data={"filter": "{oops"}), 400, "filter")
    problem(client.post(upload, files={"file": ("q.png", b"nope", "image/png")}), 400, "file")
    problem(client.post(upload, files={"file": ("q.png", b"", "image/png")}), 400, "file")
    problem(client.post(upload, data={"k": "3"}), 400)
    assert table_counts(engine) == before


def _labelled(client: Client, name: str, count: int, cats: set[int]) -> tuple[list[int], list[bytes]]:
    contents = [png() for _ in range(count)]
    items = [
        {"data": b64(c), "metadata": {"label": "cat" if i in cats else "dog", "i": i}} for i, c in enumerate(contents)
    ]
    ids = [i["id"] for i in index(client, name, items)["images"]]
    return ids, contents


def test_a_filter_returns_the_k_matching_images_before_and_after_builds(client: Client) -> None:
    name = create(client)["name"]
    cats = {3, 9, 14, 20, 31, 38}
    ids, contents = _labelled(client, name, 40, cats)
    cat_ids = sorted(ids[i] for i in cats)
    query = {"image": b64(contents[0]), "k": 6, "filter": {"label": "cat"}}  # a dog

    def found(**extra: Any) -> list[int]:
        result = search(client, name, **query | extra)["results"]
        assert all(h["metadata"]["label"] == "cat" for h in result)
        return sorted(h["image_id"] for h in result)

    assert found() == cat_ids
    assert len(search(client, name, **query | {"k": 10})["results"]) == 6
    assert search(client, name, **query | {"filter": {"label": "bird"}})["results"] == []
    assert found(filter={"label": "cat", "i": 14}) == [ids[14]]

    flat = build(client, name, index_type="Flat")
    assert (flat["index_type"], flat["vector_count"]) == ("Flat", 40)
    assert found() == cat_ids

    ivf = build(client, name, index_type="IVF4,Flat")
    assert (ivf["index_type"], ivf["vector_count"]) == ("IVF4,Flat", 40)
    assert search(client, name, **query)["generation"] == ivf["id"]
    assert found(nprobe=4) == cat_ids  # every list probed
    # unfiltered, the IVF index still answers k
    assert len(search(client, name, image=b64(contents[0]), k=6)["results"]) == 6


@pytest.mark.parametrize("nprobe", [None, 1])
def test_a_filter_on_an_ivf_index_still_returns_k(client: Client, nprobe: int | None) -> None:
    name = create(client)["name"]
    cats = {3, 9, 14, 20, 31, 38}
    ids, contents = _labelled(client, name, 40, cats)
    build(client, name, index_type="IVF4,Flat")
    query = {"image": b64(contents[0]), "k": 6, "filter": {"label": "cat"}} | ({"nprobe": nprobe} if nprobe else {})
    assert sorted(h["image_id"] for h in search(client, name, **query)["results"]) == sorted(ids[i] for i in cats)


# ---- builds and health -----------------------------------------------------------------------------


def test_builds_are_listed_newest_first_and_a_bad_one_keeps_the_current(client: Client) -> None:
    name = create(client)["name"]
    url = f"/api/v1/services/{name}/builds"
    assert client.get(url).json() == []
    problem(client.post(url, json={}), 400, "service")  # no vectors yet: refused before a build row
    assert client.get(url).json() == []
    ids = [i["id"] for i in index(client, name, [{"data": b64(png())} for _ in range(5)])["images"]]

    first = build(client, name)
    assert (first["backend"], first["index_type"], first["vector_count"]) == ("faiss", "Flat", 5)
    assert first["watermark"] > 0
    assert first["error"] is None
    assert datetime.fromisoformat(first["finished_at"]) >= datetime.fromisoformat(first["started_at"])
    assert {"read_s", "train_add_s", "write_s"} <= set(first["timings"])
    assert client.get(f"/api/v1/services/{name}").json()["index"]["generation"] == first["id"]

    index(client, name, [{"data": b64(png())}])
    response = client.post(url)  # no body at all: the service's own settings
    assert response.status_code == 201, response.text
    second = response.json()
    assert (second["status"], second["vector_count"]) == ("ready", 6)
    assert second["watermark"] > first["watermark"]
    assert second["id"] > first["id"]

    before = client.get(url).json()
    problem(client.post(url, json={"index_type": "NotAnIndex"}), 400, "index_type")
    assert client.get(url).json() == before  # refused before anything was written
    problem(client.post(url, json={"index_type": "IVF64,Flat"}), 400, "index_type")  # cannot train on 6
    problem(client.post(url, json={"index_type": ""}), 400, "index_type")
    problem(client.post(url, json={"index_typ": "Flat"}), 400)

    listed = client.get(url)
    assert listed.status_code == 200
    builds = listed.json()
    assert [b["id"] for b in builds] == sorted((b["id"] for b in builds), reverse=True)
    assert [b["status"] for b in builds] == ["failed", "ready", "retired"]
    assert builds[1] == second
    assert builds[0]["index_type"] == "IVF64,Flat"
    assert builds[0]["error"]
    service = client.get(f"/api/v1/services/{name}").json()
    assert service["index"]["generation"] == second["id"]
    assert service["index"]["index_type"] == "Flat"
    result = search(client, name, image_id=ids[0], k=1)
    assert (result["generation"], result["results"][0]["image_id"]) == (second["id"], ids[0])


def test_health_lists_generations_and_what_is_loaded(client: Client) -> None:
    name = create(client)["name"]

    def mine() -> dict[str, Any]:
        response = client.get("/api/v1/health")
        assert response.status_code == 200
        body = response.json()
        assert (body["status"], body["database"]) == ("ok", True)
        entry: dict[str, Any] = next(s for s in body["services"] if s["name"] == name)
        return entry

    assert mine() == {"name": name, "generation": None, "loaded": None}
    [image_id] = [i["id"] for i in index(client, name, [{"data": b64(png())}])["images"]]
    built = build(client, name)
    assert mine() == {"name": name, "generation": built["id"], "loaded": None}
    search(client, name, image_id=image_id, k=1)
    assert mine() == {"name": name, "generation": built["id"], "loaded": built["id"]}
    rebuilt = build(client, name)
    # the new generation is announced (NOTIFY) and loaded in the background: the old one until then
    assert mine()["generation"] == rebuilt["id"]
    assert mine()["loaded"] in (built["id"], rebuilt["id"])
    search(client, name, image_id=image_id, k=1)
    assert mine()["loaded"] == rebuilt["id"]
    assert client.delete(f"/api/v1/services/{name}").status_code == 204
    assert name not in [s["name"] for s in client.get("/api/v1/health").json()["services"]]


# ---- auth ------------------------------------------------------------------------------------------

ADMIN_TOKEN = "admin-secret"  # noqa: S105 - test tokens
READ_TOKEN = "read-secret"  # noqa: S105


@pytest.fixture(scope="module")
def secured(engine: Engine, api_home: Path, api_data: Path) -> Any:
    app = create_app(api_settings(api_home, api_data, api_token=ADMIN_TOKEN, read_token=READ_TOKEN), engine=engine)
    with TestClient(app) as c:
        yield c


ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
READ = {"Authorization": f"Bearer {READ_TOKEN}"}


def test_tokens_guard_the_native_face(secured: Client, engine: Engine) -> None:
    # Without a token, or with a wrong one: 401 with a challenge.
    for headers, challenge in (
        ({}, "Bearer"),
        ({"Authorization": "Bearer wrong"}, 'Bearer error="invalid_token"'),
        ({"Authorization": "Basic YWRtaW46c2VjcmV0"}, "Bearer"),
        ({"Authorization": "Bearer "}, "Bearer"),
        ({"Authorization": "admin-secret"}, "Bearer"),
    ):
        for response in (
            secured.get("/api/v1/services", headers=headers),
            secured.get("/api/v1/images", headers=headers),
            secured.post("/api/v1/services", json={"name": new_name(), **MODEL}, headers=headers),
            secured.post("/api/v1/services/x/search", json={"image_id": 1}, headers=headers),
        ):
            problem(response, 401)
            assert response.headers["www-authenticate"] == challenge

    # The admin token does everything.
    name = new_name()
    created = secured.post("/api/v1/services", json={"name": name, **MODEL}, headers=ADMIN)
    assert created.status_code == 201, created.text
    indexed = secured.post(
        f"/api/v1/services/{name}/images", json={"items": [{"data": b64(png())}, {"data": b64(png())}]}, headers=ADMIN
    )
    assert indexed.status_code == 201
    image_id, other_id = (i["id"] for i in indexed.json()["images"])
    uploaded = secured.post(
        f"/api/v1/services/{name}/images/upload", files={"files": ("a.png", png(), "image/png")}, headers=ADMIN
    )
    assert uploaded.status_code == 201
    assert secured.post(f"/api/v1/services/{name}/builds", json={}, headers=ADMIN).status_code == 201
    assert secured.patch(f"/api/v1/images/{image_id}", json={"metadata": {"a": 1}}, headers=ADMIN).status_code == 200

    # The read token reads and searches...
    query = png()
    for response in (
        secured.get("/api/v1/services", headers=READ),
        secured.get(f"/api/v1/services/{name}", headers=READ),
        secured.get(f"/api/v1/services/{name}/builds", headers=READ),
        secured.get("/api/v1/images", params={"service": name}, headers=READ),
        secured.get(f"/api/v1/images/{image_id}", headers=READ),
        secured.post(f"/api/v1/services/{name}/search", json={"image_id": image_id, "k": 1}, headers=READ),
        secured.post(f"/api/v1/services/{name}/search", json={"image": b64(query), "k": 1}, headers=READ),
        secured.post(
            f"/api/v1/services/{name}/search/upload", files={"file": ("q.png", query, "image/png")}, headers=READ
        ),
        secured.post(f"/api/v1/services/{name}/search", json={"image_id": image_id}, headers=ADMIN),
    ):
        assert response.status_code == 200, response.text
    # ...and is refused every write, which leaves nothing behind.
    before = table_counts(engine)
    for response in (
        secured.post("/api/v1/services", json={"name": new_name(), **MODEL}, headers=READ),
        secured.delete(f"/api/v1/services/{name}", headers=READ),
        secured.post(f"/api/v1/services/{name}/images", json={"items": [{"data": b64(png())}]}, headers=READ),
        secured.post(
            f"/api/v1/services/{name}/images/upload", files={"files": ("b.png", png(), "image/png")}, headers=READ
        ),
        secured.post(f"/api/v1/services/{name}/builds", json={}, headers=READ),
        secured.patch(f"/api/v1/images/{image_id}", json={"metadata": {"b": 2}}, headers=READ),
        secured.delete(f"/api/v1/images/{image_id}", headers=READ),
    ):
        problem(response, 403)
    assert table_counts(engine) == before
    assert secured.get(f"/api/v1/images/{image_id}", headers=READ).json()["metadata"] == {"a": 1}
    # Health answers without a token (for probes).
    assert secured.get("/api/v1/health").status_code == 200

    assert secured.delete(f"/api/v1/images/{other_id}", headers=ADMIN).status_code == 204
    assert secured.delete(f"/api/v1/services/{name}", headers=ADMIN).status_code == 204


def test_tokens_guard_the_deepdetect_face(secured: Client, api_data: Path) -> None:
    name = new_name()
    create_body = {
        "mllib": "torch",
        "description": "image search",
        "type": "unsupervised",
        "parameters": {
            "input": {"connector": "image", "width": 64, "height": 64},
            "mllib": {"template": "resnet18", "weights": "none"},
        },
        "model": {"repository": str(api_data / name)},
    }
    info = secured.get("/info")
    assert info.status_code == 401
    assert info.headers["www-authenticate"] == "Bearer"
    assert info.json()["status"]["code"] == 401
    assert secured.get("/info", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert secured.get("/info", headers=READ).status_code == 200
    assert secured.put(f"/services/{name}", json=create_body, headers=READ).status_code == 403
    created = secured.put(f"/services/{name}", json=create_body, headers=ADMIN)
    assert created.status_code == 201, created.text
    assert secured.get(f"/services/{name}", headers=READ).status_code == 200

    content = b64(png())
    index_body = {"service": name, "data": [content], "parameters": {"output": {"index": True}}}
    refused = secured.post("/predict", json=index_body, headers=READ)
    assert refused.status_code == 403
    assert refused.json()["status"]["code"] == 403
    build_body = {"service": name, "data": [], "parameters": {"output": {"build_index": True}}}
    assert secured.post("/predict", json=build_body, headers=READ).status_code == 403
    assert secured.post("/predict", json=index_body).status_code == 401
    assert secured.post("/predict", json=index_body, headers=ADMIN).status_code == 200
    search_body = {"service": name, "data": [content], "parameters": {"output": {"search": True, "search_nn": 1}}}
    found = secured.post("/predict", json=search_body, headers=READ)
    assert found.status_code == 200, found.text
    assert found.json()["body"]["predictions"][0]["nns"][0]["dist"] == pytest.approx(0.0, abs=1e-4)
    assert secured.delete(f"/services/{name}", params={"clear": "full"}, headers=READ).status_code == 403
    assert secured.delete(f"/services/{name}", params={"clear": "full"}, headers=ADMIN).status_code == 200


def test_a_read_token_alone_makes_the_api_read_only(
    engine: Engine, api_home: Path, api_data: Path, client: Client
) -> None:
    name = create(client)["name"]
    app = create_app(api_settings(api_home, api_data, read_token=READ_TOKEN), engine=engine)
    with TestClient(app) as c:
        assert c.get(f"/api/v1/services/{name}", headers=READ).status_code == 200
        problem(c.get(f"/api/v1/services/{name}"), 401)
        problem(c.post("/api/v1/services", json={"name": new_name(), **MODEL}, headers=READ), 403)
        problem(c.delete(f"/api/v1/services/{name}", headers=READ), 403)
    assert client.get(f"/api/v1/services/{name}").status_code == 200


def test_request_size_and_item_limits(engine: Engine, api_home: Path, api_data: Path, client: Client) -> None:
    name = create(client)["name"]
    small = png()
    paths = folder(api_data, 3)
    settings = api_settings(api_home, api_data, max_request_bytes=4 * len(small) + 4096, max_items=2)
    with TestClient(create_app(settings, engine=engine)) as limited:
        before = table_counts(engine)
        items = [{"data": str(p)} for p in paths]
        problem(limited.post(f"/api/v1/services/{name}/images", json={"items": items}), 400, "items")
        three = [("files", (f"{i}.png", small, "image/png")) for i in range(3)]
        problem(limited.post(f"/api/v1/services/{name}/images/upload", files=three), 400, "files")
        problem(limited.post(f"/api/v1/services/{name}/images/upload", files=three * 2), 413)
        problem(limited.post(f"/api/v1/services/{name}/search", json={"image": b64(small * 4)}), 413)
        assert table_counts(engine) == before
        ok = limited.post(f"/api/v1/services/{name}/images", json={"items": items[:2]})
        assert ok.status_code == 201, ok.text
        assert ok.json()["indexed"] == 2


# ---- what Postgres cannot store, and JSON too deep ---------------------------------------------------


def test_nul_characters_and_deep_json_are_refused_naming_the_field(client: Client, engine: Engine) -> None:
    name = create(client)["name"]
    [image_id] = [i["id"] for i in index(client, name, [{"data": b64(png())}])["images"]]
    before = table_counts(engine)
    nested: dict[str, Any] = {"leaf": 1}
    for _ in range(40):
        nested = {"a": nested}
    for response, field in (
        (client.post("/api/v1/services", json={"name": new_name(), **MODEL, "index_type": "Flat\x00x"}), "index_type"),
        (client.post("/api/v1/services", json={"name": new_name(), **MODEL, "weights": "/a\x00.pth"}), "weights"),
        (client.post(f"/api/v1/services/{name}/builds", json={"index_type": "Flat\x00"}), "index_type"),
        (
            client.post(f"/api/v1/services/{name}/images", json={"items": [{"data": b64(png()), "uri": "u\x00"}]}),
            "items[0].uri",
        ),
        (
            client.post(
                f"/api/v1/services/{name}/images", json={"items": [{"data": b64(png()), "metadata": {"k\x00": 1}}]}
            ),
            "items[0].metadata",
        ),
        (
            client.post(f"/api/v1/services/{name}/images", json={"items": [{"data": b64(png()), "metadata": nested}]}),
            "items[0].metadata",
        ),
        (client.post(f"/api/v1/services/{name}/search", json={"image_id": image_id, "filter": nested}), "filter"),
        (client.post(f"/api/v1/services/{name}/search", json={"image": "\x00"}), "image"),
        (client.patch(f"/api/v1/images/{image_id}", json={"metadata": nested}), "metadata"),
        (client.patch(f"/api/v1/images/{image_id}", json={"metadata": {"a": ["\x00"]}}), "metadata"),
    ):
        problem(response, 400, field)
    for name_or_service in ("a\x00b", "é", "x" * 300, " "):
        problem(client.get("/api/v1/images", params={"service": name_or_service}), 404)
        problem(client.get(f"/api/v1/services/{quote(name_or_service)}"), 404)
    # JSON nested beyond what the decoder recurses into: a 400, on any JSON route
    deep = b'{"image_id": 1, "filter": ' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}"
    for url in (f"/api/v1/services/{name}/search", f"/api/v1/images/{image_id}"):
        sent = client.request(
            "PATCH" if "images" in url else "POST", url, content=deep, headers={"content-type": "application/json"}
        )
        problem(sent, 400)
    assert table_counts(engine) == before
    assert client.get(f"/api/v1/images/{image_id}").json()["metadata"] == {}


def test_weights_files_only_from_the_data_roots(client: Client, engine: Engine, tmp_path: Path) -> None:
    outside = tmp_path / "weights.pth"
    outside.write_bytes(b"not a state dict")
    before = table_counts(engine)
    body = problem(client.post("/api/v1/services", json={"name": new_name(), **MODEL, "weights": str(outside)}), 400)
    assert body["field"] == "weights"
    assert "outside" in body["detail"]
    assert table_counts(engine) == before


def test_a_weights_file_that_is_no_checkpoint_is_a_400(client: Client, api_data: Path) -> None:
    inside = api_data / f"w-{uuid.uuid4().hex[:6]}.pth"
    inside.write_bytes(b"not a state dict")
    response = client.post("/api/v1/services", json={"name": new_name(), **MODEL, "weights": str(inside)})
    problem(response, 400, "weights")


# ---- OpenAPI ---------------------------------------------------------------------------------------

OPERATIONS = {
    ("post", "/api/v1/services"): "ServiceCreate",
    ("get", "/api/v1/services"): None,
    ("get", "/api/v1/services/{name}"): None,
    ("delete", "/api/v1/services/{name}"): None,
    ("post", "/api/v1/services/{name}/images"): "IndexRequest",
    ("post", "/api/v1/services/{name}/images/upload"): "UploadForm",
    ("post", "/api/v1/services/{name}/search"): "SearchRequest",
    ("post", "/api/v1/services/{name}/search/upload"): "SearchUploadForm",
    ("post", "/api/v1/services/{name}/objects/search"): "ObjectSearchRequest",
    ("post", "/api/v1/services/{name}/objects/search/upload"): "ObjectSearchForm",
    ("post", "/api/v1/services/{name}/images/similar-objects"): "SimilarObjectsRequest",
    ("post", "/api/v1/services/{name}/images/similar-objects/upload"): "SimilarObjectsForm",
    ("post", "/api/v1/services/{name}/builds"): "BuildRequest",
    ("get", "/api/v1/services/{name}/builds"): None,
    ("get", "/api/v1/images"): None,
    ("get", "/api/v1/images/{image_id}"): None,
    ("get", "/api/v1/images/{image_id}/thumbnail"): None,
    ("get", "/api/v1/images/{image_id}/objects"): None,
    ("patch", "/api/v1/images/{image_id}"): "ImagePatch",
    ("delete", "/api/v1/images/{image_id}"): None,
    ("get", "/api/v1/health"): None,
    ("get", "/api/v1/ready"): None,
    ("get", "/api/v1/live"): None,
}


WRITES = {"createService", "deleteService", "indexImages", "uploadImages", "startBuild", "updateImage", "deleteImage"}


def test_openapi_documents_every_native_operation(client: Client) -> None:
    response = client.get("/schema/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    found = {
        (method, path): operation
        for path, item in schema["paths"].items()
        if path.startswith("/api/v1")
        for method, operation in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    }
    assert set(found) == set(OPERATIONS)
    assert not [p for p in schema["paths"] if not p.startswith("/api/v1")]  # the DeepDetect face is not in it
    operation_ids = [op["operationId"] for op in found.values()]
    assert all(operation_ids)
    assert len(set(operation_ids)) == len(operation_ids)
    components = schema["components"]["schemas"]
    for key, body_type in OPERATIONS.items():
        operation = found[key]
        assert operation.get("summary") or operation.get("description"), key
        success = [code for code in operation["responses"] if code.startswith("2")]
        assert success, key
        errors = {code: r for code, r in operation["responses"].items() if code.startswith("4")}
        for code, answer in errors.items():  # documented as what errors.py sends
            assert answer["content"] == {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            }, (key, code)
        if key in (("get", "/api/v1/health"), ("get", "/api/v1/ready"), ("get", "/api/v1/live")):
            assert "security" not in operation  # probes need no token
            assert not errors
        else:
            assert operation["security"] == [{"bearer": []}], key
            assert {"400", "401"} <= set(errors), key
        if "{" in key[1]:
            assert "404" in errors, key
        assert ("403" in errors) is (operation["operationId"] in WRITES), key  # the read token is refused
        if body_type is None:
            assert "requestBody" not in operation, key
            continue
        content = operation["requestBody"]["content"]
        [(media_type, body)] = content.items()
        assert media_type == ("multipart/form-data" if body_type.endswith("Form") else "application/json"), key
        assert operation["requestBody"]["required"] is (key[1] != "/api/v1/services/{name}/builds"), key
        refs = [body["schema"]] if "$ref" in body["schema"] else body["schema"]["oneOf"]  # builds: body optional
        assert {"$ref": f"#/components/schemas/{body_type}"} in refs, key
        assert components[body_type]["properties"], key
    for typed in ("ServiceOut", "IndexResult", "ImageOut", "ImagePage", "SearchResult", "BuildOut", "Health"):
        assert components[typed]["properties"], typed
    assert sorted(components["ServiceCreate"]["required"]) == ["model", "name"]
    assert sorted(components["Problem"]["required"]) == ["detail", "status", "title", "type"]
    assert components["ImagePage"]["properties"]["next_cursor"]
    assert set(components["SearchRequest"]["properties"]) >= {"image", "image_id", "vector", "k", "filter"}
    assert components["ImageItem"]["properties"]["metadata"].get("examples")
    assert schema["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert "security" not in schema  # per operation: health is open
    docs = client.get("/schema")
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]
