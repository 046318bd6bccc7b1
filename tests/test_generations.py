"""Generations across processes and replicas: a build announced over LISTEN/NOTIFY is loaded by every
app on the database; a build killed midway leaves the previous generation serving."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine, text
from tests.conftest import api_settings, make_folder

from simsearch.api import create_app

_SERVICE = {"model": "resnet18", "weights": "none", "size": 64}


def _wait_for(predicate: object, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_a_build_in_one_app_is_loaded_by_another_over_notify(engine: Engine, api_home: Path, api_data: Path) -> None:
    name = f"gen_{uuid.uuid4().hex[:6]}"
    paths = make_folder(api_data / name, 6)
    app_a = create_app(api_settings(api_home, api_data), engine=engine)
    app_b = create_app(api_settings(api_home, api_data), engine=engine)
    with TestClient(app_a) as a, TestClient(app_b) as b:
        assert a.post("/api/v1/services", json={"name": name, **_SERVICE}).status_code == 201
        a.post(f"/api/v1/services/{name}/images", json={"items": [{"data": str(p)} for p in paths]})
        first = a.post(f"/api/v1/services/{name}/builds", json={}).json()["id"]
        assert b.app.state.core.indexes.wait_listening(10)
        # b serves the service (its first search asks Postgres once), then only listens
        assert b.post(f"/api/v1/services/{name}/search", json={"image": str(paths[0])}).json()["generation"] == first
        second = a.post(f"/api/v1/services/{name}/builds", json={"index_type": "HNSW16"}).json()["id"]
        assert second > first

        def b_loaded_second() -> bool:
            health = b.get("/api/v1/health").json()
            return any(s["name"] == name and s["loaded"] == second for s in health["services"])

        assert _wait_for(b_loaded_second), "app b never loaded the announced generation"
        found = b.post(f"/api/v1/services/{name}/search", json={"image": str(paths[3]), "k": 2}).json()
        assert found["generation"] == second
        assert found["results"][0]["uri"] == str(paths[3])


_BUILD_SCRIPT = """
import sys
from pathlib import Path
from simsearch import store
from simsearch.index import build_generation
engine = store.make_engine(sys.argv[1])
with engine.connect() as conn:
    service = store.get_service(conn, sys.argv[2])
build_generation(engine, service, Path(sys.argv[3]), index_type="IVF4,Flat")
"""


def test_a_build_killed_midway_leaves_the_previous_generation_serving(
    engine: Engine, database_url: str, api_home: Path, api_data: Path
) -> None:
    name = f"kill_{uuid.uuid4().hex[:6]}"
    paths = make_folder(api_data / name, 8)
    app = create_app(api_settings(api_home, api_data), engine=engine)
    with TestClient(app) as client:
        assert client.post("/api/v1/services", json={"name": name, **_SERVICE}).status_code == 201
        client.post(f"/api/v1/services/{name}/images", json={"items": [{"data": str(p)} for p in paths]})
        ready = client.post(f"/api/v1/services/{name}/builds", json={}).json()["id"]
        # Hold the current generation's row: a build in its own process records its `building` row, builds,
        # then waits to retire that row; we kill it midway with SIGKILL (it cannot clean anything up).
        with engine.connect() as holder:
            holder.execute(text("SELECT id FROM index_build WHERE id = :id FOR UPDATE"), {"id": ready})
            builder = subprocess.Popen(
                [sys.executable, "-c", _BUILD_SCRIPT, database_url, name, str(api_home / "indexes")],
                env={**os.environ, "PYTHONWARNINGS": "ignore"},
            )
            try:

                def building() -> bool:
                    with engine.connect() as conn:
                        rows = conn.execute(
                            text(
                                "SELECT count(*) FROM index_build b JOIN service s ON s.id = b.service_id"
                                " WHERE s.name = :n AND b.status = 'building'"
                            ),
                            {"n": name},
                        )
                        return bool(rows.scalar_one())

                assert _wait_for(building, timeout=60), "the build never started"
                builder.send_signal(signal.SIGKILL)
                builder.wait(timeout=30)
            finally:
                holder.rollback()
        assert builder.returncode == -signal.SIGKILL
        found = client.post(f"/api/v1/services/{name}/search", json={"image": str(paths[2]), "k": 1}).json()
        assert found["generation"] == ready
        assert found["results"][0]["uri"] == str(paths[2])
        again = client.post(f"/api/v1/services/{name}/builds", json={"index_type": "IVF4,Flat"})
        assert again.status_code == 201, again.text
        assert again.json()["status"] == "ready"
        builds = client.get(f"/api/v1/services/{name}/builds").json()
        killed = [b for b in builds if b["id"] not in (ready, again.json()["id"])]
        assert len(killed) == 1
        assert killed[0]["status"] == "failed"
        assert "interrupted" in killed[0]["error"]
        assert [b["status"] for b in builds if b["id"] == ready] == ["retired"]
        searched = client.post(f"/api/v1/services/{name}/search", json={"image": str(paths[2])}).json()
        assert searched["generation"] == again.json()["id"]


def test_ondisk_ivf_lists_live_beside_the_index_and_reload(engine: Engine, api_home: Path, api_data: Path) -> None:
    name = f"disk_{uuid.uuid4().hex[:6]}"
    paths = make_folder(api_data / name, 12)
    body = {"name": name, **_SERVICE, "index_type": "IVF4,Flat", "ondisk": True, "nprobe": 4}
    app = create_app(api_settings(api_home, api_data), engine=engine)
    with TestClient(app) as client:
        created = client.post("/api/v1/services", json=body)
        assert created.status_code == 201, created.text
        assert created.json()["index"]["ondisk"] is True
        client.post(f"/api/v1/services/{name}/images", json={"items": [{"data": str(p)} for p in paths]})
        first = client.post(f"/api/v1/services/{name}/builds", json={}).json()
        folder = api_home / "indexes" / name / f"gen-{first['id']:08d}"
        assert (folder / "index.ivfdata").stat().st_size > 0
        # the lists are not in the index file: it is far smaller than the vectors (12 x 512 floats)
        assert (folder / "index.faiss").stat().st_size < 12 * 512 * 4
        for i in (0, 7, 11):
            hit = client.post(f"/api/v1/services/{name}/search", json={"image": str(paths[i]), "k": 1}).json()
            assert hit["results"][0]["uri"] == str(paths[i])
        second = client.post(f"/api/v1/services/{name}/builds", json={}).json()
        assert not folder.exists()  # the retired generation's folder (lists included) is gone
        hit = client.post(f"/api/v1/services/{name}/search", json={"image": str(paths[5]), "k": 1}).json()
        assert (hit["generation"], hit["results"][0]["uri"]) == (second["id"], str(paths[5]))
    # a fresh process state (a restarted server) maps the same files again and searches
    with TestClient(create_app(api_settings(api_home, api_data), engine=engine)) as again:
        for i in (3, 9):
            hit = again.post(f"/api/v1/services/{name}/search", json={"image": str(paths[i]), "k": 3}).json()
            assert hit["results"][0]["uri"] == str(paths[i])
            assert len(hit["results"]) == 3
    # and so does a separate process, loading the file with faiss directly
    script = (
        "import sys, numpy as np; from pathlib import Path; from simsearch.index import faiss_index as f;"
        "i = f.load(Path(sys.argv[1])); q = np.zeros((1, 512), 'float32');"
        "print('found', (f.search(i, q, 3, nprobe=4)[1] >= 0).sum(), 'of', i.ntotal)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(api_home / "indexes" / name / f"gen-{second['id']:08d}" / "index.faiss")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "found 3 of 12" in done.stdout  # (faiss also prints a note about the lists' folder)


def test_ondisk_needs_an_ivf_index(client: TestClient[Litestar]) -> None:
    body = {"name": f"disk_{uuid.uuid4().hex[:6]}", **_SERVICE, "index_type": "HNSW32", "ondisk": True}
    answer = client.post("/api/v1/services", json=body)
    assert answer.status_code == 400
    assert answer.json()["field"] == "ondisk"
