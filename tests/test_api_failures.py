"""Failures that are not the client's fault: a damaged index file (searches degrade to exact, never fail), a
database that changed under the server (a clear 5xx for the face it came through); the server goes on serving."""

from __future__ import annotations

import uuid
from pathlib import Path

from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine, text
from tests.conftest import make_folder

_CREATE = {
    "mllib": "torch",
    "parameters": {"input": {"width": 64, "height": 64}, "mllib": {"template": "resnet18", "weights": "none"}},
}


def _service(client: TestClient[Litestar], data: Path) -> tuple[str, list[Path]]:
    name = f"fail_{uuid.uuid4().hex[:6]}"
    assert client.put(f"/services/{name}", json=_CREATE).status_code == 201
    paths = make_folder(data / name, 3)
    indexed = client.post(
        "/predict",
        json={
            "service": name,
            "data": [str(data / name)],
            "parameters": {"output": {"index": True, "build_index": True}},
        },
    )
    assert indexed.status_code == 200, indexed.text
    return name, paths


def _search(client: TestClient[Litestar], name: str, path: Path) -> dict[str, object]:
    answer: dict[str, object] = client.post(
        "/predict", json={"service": name, "data": [str(path)], "parameters": {"output": {"search": True}}}
    ).json()
    return answer


def test_a_damaged_index_file_degrades_search_instead_of_failing_it(
    client: TestClient[Litestar], api_data: Path
) -> None:
    """Degraded, never dark (issue 13; this test asserted a 503 before): a generation whose file is damaged
    before this replica loads it is not served; searches answer exactly from Postgres, readiness says why."""
    name, paths = _service(client, api_data)
    index_file = next((Path(client.get(f"/services/{name}").json()["body"]["repository"])).glob("gen-*/index.faiss"))
    index_file.write_bytes(b"not a faiss index")
    answer = _search(client, name, paths[0])
    assert answer["status"]["code"] == 200  # type: ignore[index]
    assert answer["body"]["predictions"][0]["nns"][0]["uri"] == str(paths[0])  # type: ignore[index]
    native = client.post(f"/api/v1/services/{name}/search", json={"image": str(paths[0])})
    assert native.status_code == 200
    assert native.json()["results"][0]["uri"] == str(paths[0])
    ready = client.get("/api/v1/ready").json()
    mine = next(s for s in ready["services"] if s["name"] == name)
    assert ready["status"] == "degraded", ready
    assert mine["reason"], mine
    rebuilt = client.post(
        "/predict", json={"service": name, "data": [], "parameters": {"output": {"build_index": True}}}
    )
    assert rebuilt.status_code == 200
    assert _search(client, name, paths[0])["body"]["predictions"][0]["nns"][0]["uri"] == str(paths[0])  # type: ignore[index]


def test_an_unexpected_error_is_a_500_envelope_and_the_server_stays_up(
    client: TestClient[Litestar], engine: Engine, api_data: Path
) -> None:
    name, paths = _service(client, api_data)
    with engine.begin() as conn:  # an analyst renames a table under the running server
        conn.execute(text("ALTER TABLE image RENAME TO image_renamed"))
    try:
        answer = _search(client, name, paths[1])
        assert answer["status"]["code"] == 500  # type: ignore[index]
        assert answer["status"]["msg"] == "InternalError"  # type: ignore[index]
        assert answer["status"]["dd_code"] == 1007  # type: ignore[index]
        assert "image" in answer["status"]["dd_msg"]  # type: ignore[index]
        native = client.get("/api/v1/images/1")
        assert native.status_code == 500
        assert native.json()["status"] == 500
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE image_renamed RENAME TO image"))
    assert client.get("/info").status_code == 200
    assert _search(client, name, paths[1])["body"]["predictions"][0]["nns"][0]["uri"] == str(paths[1])  # type: ignore[index]
