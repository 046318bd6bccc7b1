"""The Annoy backend: built from Postgres, memory-mapped, searched with the same distances as FAISS,
and, unlike DeepDetect, open to indexing after a build (new rows are searched exactly)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine
from tests.conftest import api_settings, draw_image, make_folder, write_image
from tests.ddwire import check_every_response

from simsearch.api import create_app

Client = TestClient[Litestar]


def _search(client: Client, name: str, path: Path, k: int = 3) -> dict[str, object]:
    answer = client.post(f"/api/v1/services/{name}/search", json={"image": str(path), "k": k})
    assert answer.status_code == 200, answer.text
    found: dict[str, object] = answer.json()
    return found


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_annoy_generation_answers_like_exact_search(
    client: Client, api_home: Path, api_data: Path, metric: str
) -> None:
    name = f"annoy_{metric}_{uuid.uuid4().hex[:6]}"
    paths = make_folder(api_data / name, 10)
    body = {"name": name, "model": "resnet18", "weights": "none", "size": 64, "metric": metric}
    created = client.post("/api/v1/services", json=body | {"index_backend": "annoy", "n_trees": 20})
    assert created.status_code == 201, created.text
    assert (created.json()["index"]["backend"], created.json()["index"]["n_trees"]) == ("annoy", 20)
    client.post(f"/api/v1/services/{name}/images", json={"items": [{"data": str(p)} for p in paths]})
    exact = {str(p): _search(client, name, p) for p in paths[:4]}  # no build yet: exact search

    build = client.post(f"/api/v1/services/{name}/builds", json={}).json()
    assert (build["status"], build["backend"], build["vector_count"]) == ("ready", "annoy", 10)
    folder = api_home / "indexes" / name / f"gen-{build['id']:08d}"
    assert (folder / "index.annoy").is_file()
    assert (folder / "ids.npy").is_file()
    for path, before in exact.items():
        after = _search(client, name, Path(path))
        assert after["generation"] == build["id"]
        got = [(r["uri"], r["distance"]) for r in after["results"]]  # type: ignore[attr-defined]
        want = [(r["uri"], r["distance"]) for r in before["results"]]  # type: ignore[attr-defined]
        assert [u for u, _ in got] == [u for u, _ in want]
        assert [d for _, d in got] == pytest.approx([d for _, d in want], abs=2e-3)
        assert got[0][0] == path

    # indexed after the build: found at once (exact tail); deleted: gone at once
    late = write_image(api_data / name / "late.png", draw_image(999))
    client.post(f"/api/v1/services/{name}/images", json={"items": [{"data": str(late)}]})
    assert _search(client, name, late, k=1)["results"][0]["uri"] == str(late)  # type: ignore[index]
    first = _search(client, name, paths[0], k=1)["results"][0]  # type: ignore[index]
    assert client.delete(f"/api/v1/images/{first['image_id']}").status_code == 204
    gone = _search(client, name, paths[0], k=10)["results"]
    assert str(paths[0]) not in [r["uri"] for r in gone]  # type: ignore[attr-defined]
    assert len(gone) == 10  # type: ignore[arg-type]


def test_annoy_files_are_memory_mapped_again_by_a_new_app(
    client: Client, engine: Engine, api_home: Path, api_data: Path
) -> None:
    name = f"annoy_reload_{uuid.uuid4().hex[:6]}"
    paths = make_folder(api_data / name, 6)
    created = client.put(
        f"/services/{name}",
        json={
            "mllib": "torch",
            "parameters": {
                "input": {"width": 64, "height": 64},
                "mllib": {"template": "resnet18", "weights": "none"},
                "output": {"index_backend": "annoy", "n_trees": 8},
            },
        },
    )
    assert created.status_code == 201, created.text
    indexed = client.post(
        "/predict",
        json={
            "service": name,
            "data": [str(api_data / name)],
            "parameters": {"output": {"index": True, "build_index": True}},
        },
    )
    assert indexed.status_code == 200, indexed.text
    info = client.get(f"/services/{name}").json()["body"]["index"]
    assert (info["backend"], info["metric"], info["count"]) == ("annoy", "cosine", 6)
    with TestClient(create_app(api_settings(api_home, api_data), engine=engine)) as fresh:
        check_every_response(fresh)
        answer = fresh.post(
            "/predict",
            json={"service": name, "data": [str(paths[4])], "parameters": {"output": {"search": True, "search_nn": 2}}},
        ).json()
        nns = answer["body"]["predictions"][0]["nns"]
        assert nns[0]["uri"] == str(paths[4])
        assert nns[0]["dist"] < 1e-2  # sqrt(2 - 2cos) of a vector with itself
