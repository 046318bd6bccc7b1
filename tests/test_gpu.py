"""GPU indexes (faiss-gpu in its own environment, see README): build and search on the device, same
answers as the CPU. Skipped where faiss sees no GPU, as on CI."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from tests.conftest import make_folder

from simsearch.index.faiss_index import gpu_count

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(gpu_count() == 0, reason="faiss sees no GPU (faiss-cpu or no device)"),
]


@pytest.mark.parametrize("index_type", ["Flat", "IVF4,Flat"])
def test_a_gpu_index_finds_what_the_cpu_finds(client: TestClient[Litestar], api_data: Path, index_type: str) -> None:
    name = f"gpu_{uuid.uuid4().hex[:6]}"
    paths = make_folder(api_data / name, 12)
    body = {"name": name, "model": "resnet18", "weights": "none", "size": 64, "index_type": index_type}
    assert client.post("/api/v1/services", json=body | {"index_gpu": True, "nprobe": 4}).status_code == 201
    client.post(f"/api/v1/services/{name}/images", json={"items": [{"data": str(p)} for p in paths]})
    exact = [client.post(f"/api/v1/services/{name}/search", json={"image": str(p), "k": 3}).json() for p in paths]
    build = client.post(f"/api/v1/services/{name}/builds", json={}).json()
    assert build["status"] == "ready"
    for path, before in zip(paths, exact, strict=True):
        after = client.post(f"/api/v1/services/{name}/search", json={"image": str(path), "k": 3}).json()
        assert after["generation"] == build["id"]
        assert [r["uri"] for r in after["results"]] == [r["uri"] for r in before["results"]]
        assert [r["distance"] for r in after["results"]] == pytest.approx(
            [r["distance"] for r in before["results"]], abs=1e-3
        )
