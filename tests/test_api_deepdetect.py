"""The DeepDetect-compatible face (/info, /services/{name}, /predict, /chain/{name}) against
../shared/deepdetect-api.md: every route, every row of the error table, a DeepDetect-style flow and the
documented deviations, over the real app, real Postgres and real (randomly initialised) models."""

from __future__ import annotations

import base64
import hashlib
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine
from tests.conftest import api_settings, draw_image, make_folder, table_counts, write_image
from tests.ddwire import check_every_response

from simsearch import __version__
from simsearch.api import create_app
from simsearch.index.faiss_index import gpu_count

Client = TestClient[Litestar]
JSON = dict[str, Any]

RANDOM_WEIGHTS = "weights: none: random initialisation, the vectors mean nothing (for tests only)"
SMALL: JSON = {"input": {"width": 64, "height": 64}, "mllib": {"template": "resnet18", "weights": "none"}}


def _create_body(**output: object) -> JSON:
    parameters: JSON = {"input": dict(SMALL["input"]), "mllib": dict(SMALL["mllib"])}
    if output:
        parameters["output"] = output
    return {"mllib": "torch", "description": "test service", "parameters": parameters}


def _name(prefix: str = "dd") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def _answer(response: Any, status: int = 200) -> JSON:
    """The envelope, after checking that the HTTP status equals status.code."""
    body: JSON = response.json()
    assert response.status_code == body["status"]["code"] == status, body
    return body


def _error(response: Any, status: int, dd_code: int | None, starts: str | None = None) -> str:
    """An error envelope: exactly {code, msg, dd_code, dd_msg} (dd_* absent where the table says -)."""
    body = _answer(response, status)
    assert set(body) == {"status"}, body
    msg = {400: "BadRequest", 404: "NotFound", 405: "MethodNotAllowed", 409: "Conflict"}[status]
    if dd_code is None:
        assert body["status"] == {"code": status, "msg": msg}
        return ""
    assert body["status"]["msg"] == msg
    assert body["status"]["dd_code"] == dd_code
    dd_msg: str = body["status"]["dd_msg"]
    if starts is not None:
        assert dd_msg.startswith(starts), dd_msg
    return dd_msg


def _create(client: Client, body: JSON | None = None, name: str | None = None) -> str:
    name = name or _name()
    created = _answer(client.put(f"/services/{name}", json=body or _create_body()), 201)
    assert created["status"] == {"code": 201, "msg": "Created"}
    return name.lower()


def _predict(client: Client, name: str, data: list[str], status: int = 200, **output: object) -> JSON:
    body: JSON = {"service": name, "data": data}
    if output:
        body["parameters"] = {"output": output}
    return _answer(client.post("/predict", json=body), status)


def _predictions(answer: JSON) -> list[JSON]:
    predictions: list[JSON] = answer["body"]["predictions"]
    return predictions


def _index_info(client: Client, name: str) -> JSON:
    index: JSON = _answer(client.get(f"/services/{name}"))["body"]["index"]
    return index


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _sha_uri(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def images(api_data: Path) -> list[Path]:
    """Six images in their own folder, shared by tests that only search or fail."""
    return make_folder(api_data / "shared", 6, start=100)


# ---- routes ---------------------------------------------------------------------------------------


def test_info_lists_the_services(client: Client) -> None:
    name = _create(client, {**_create_body(), "description": "listed"}, _name("Info"))
    answer = _answer(client.get("/info"))
    assert answer["status"] == {"code": 200, "msg": "OK"}
    assert set(answer) == {"status", "head"}
    head = answer["head"]
    assert head["method"] == "/info"
    assert head["version"] == __version__
    assert {"name": name, "description": "listed", "mllib": "torch", "type": "supervised"} in head["services"]
    assert all(s["name"] == s["name"].lower() for s in head["services"])


@pytest.mark.parametrize("method", ["PUT", "POST"])
def test_create_then_get_describes_the_service_as_created(client: Client, api_data: Path, method: str) -> None:
    name = _name("Mixed")
    repository = api_data / "repos" / name.lower()
    parameters = {
        "input": {"connector": "image", "width": 64, "height": 64},
        "mllib": {"template": "resnet18", "weights": "none", "nclasses": 1000, "gpu": False},
        "output": {"index_type": "IVF4,Flat", "metric": "l2", "search_nn": 3},
    }
    body = {
        "mllib": "torch",
        "description": "image similarity",
        "type": "unsupervised",
        "parameters": parameters,
        "model": {"repository": str(repository), "templates": "ignored"},
    }
    created = client.request(method, f"/services/{name}", json=body)
    assert _answer(created, 201) == {"status": {"code": 201, "msg": "Created"}, "head": {"warning": RANDOM_WEIGHTS}}
    assert repository.is_dir()  # created when missing
    for spelling in (name.lower(), name, name.upper()):
        answer = _answer(client.get(f"/services/{spelling}"))
        assert answer["head"] == {"method": "/services", "service": name.lower()}
        assert answer["body"] == {
            "name": name.lower(),
            "description": "image similarity",
            "mllib": "torch",
            "type": "unsupervised",
            "parameters": parameters,
            "repository": str(repository.resolve()),
            "index": {
                "backend": "faiss",
                "index_type": "IVF4,Flat",
                "metric": "l2",
                "dimension": 512,
                "count": 0,  # never built: no generation, no built_at (null members are omitted)
            },
        }
    # the name exists whatever its case
    _error(client.put(f"/services/{name.upper()}", json=_create_body()), 409, 1014, "Service already exists")
    _answer(client.delete(f"/services/{name.upper()}?clear=full"))
    _error(client.get(f"/services/{name.lower()}"), 404, 1002, "Service Not Found")


def test_defaults_of_a_minimal_service(client: Client) -> None:
    name = _create(client, {"mllib": "torch", "parameters": SMALL})
    body = _answer(client.get(f"/services/{name}"))["body"]
    assert (body["description"], body["type"], body["parameters"]) == ("", "supervised", SMALL)
    assert body["repository"].endswith(f"/indexes/{name}")
    assert body["index"] == {
        "backend": "faiss",
        "index_type": "Flat",
        "metric": "l2",
        "dimension": 512,
        "count": 0,
    }


def test_unknown_route_and_wrong_method_are_envelopes(client: Client) -> None:
    _error(client.get("/no/such/route"), 404, None)
    _error(client.post("/services"), 404, None)
    _error(client.patch("/info"), 405, None)
    _error(client.get("/predict"), 405, None)
    _error(client.patch("/services/any"), 405, None)
    _error(client.get("/chain/any"), 405, None)


@pytest.mark.parametrize("method", ["PUT", "POST"])
def test_chain_route_answers_envelopes(client: Client, method: str) -> None:
    """Both methods reach the chain (object search: tests/test_api_objects_deepdetect.py)."""
    chain = {"chain": {"calls": [{"service": "faces", "data": ["x"]}, {"id": "crop", "action": {"type": "crop"}}]}}
    _error(client.request(method, "/chain/objects", json=chain), 404, 1002, "Service Not Found: ")
    _error(client.request(method, "/chain/objects", content=b"{not json"), 400, None)


# ---- creation errors ------------------------------------------------------------------------------
# (single-request refusals are rows of the one bad-input table, test_api_bad_inputs.py)


def _with(section: str, **values: object) -> JSON:
    body = _create_body()
    body["parameters"].setdefault(section, {}).update(values)
    return body


def test_a_refused_service_leaves_no_repository_folder(client: Client, engine: Engine, api_data: Path) -> None:
    before = table_counts(engine)
    folder = api_data / "repos" / "refused" / "deep"
    body = {**_with("mllib", template="nosuchnet"), "model": {"repository": str(folder)}}
    _error(client.put(f"/services/{_name()}", json=body), 400, 1006, "Service Bad Request Error: ")
    assert not folder.exists()
    assert not folder.parent.exists()
    a_file = api_data / "repos" / "a-file"
    a_file.parent.mkdir(parents=True, exist_ok=True)
    a_file.write_text("not a folder")
    for repository in (a_file, a_file / "below"):
        body = {**_create_body(), "model": {"repository": str(repository)}}
        msg = _error(client.put(f"/services/{_name()}", json=body), 400, 1006, "Service Bad Request Error: ")
        assert msg.startswith("Service Bad Request Error: model.repository: ")
    assert a_file.read_text() == "not a folder"
    assert table_counts(engine) == before


def test_create_error_messages_name_the_remedy(client: Client) -> None:
    caffe = _error(client.put(f"/services/{_name()}", json={"mllib": "caffe", "parameters": SMALL}), 400, 1006)
    assert '"torch"' in caffe
    layer = _error(client.put(f"/services/{_name()}", json=_with("mllib", extract_layer="nope")), 400, 1006)
    assert "'nope'" in layer
    assert all(node in layer for node in ("avgpool", "flatten", "fc", "layer4.1.relu_1"))
    bad_name = _error(client.put("/services/bad.name!", json=_create_body()), 400, 1006, "Service Bad Request Error: ")
    assert "name" in bad_name


# ---- predict ---------------------------------------------------------------------------------------
# (the refusals of creation and predict requests are rows of the one bad-input table, test_api_bad_inputs.py)


@pytest.fixture(scope="module")
def searchable(client: Client, images: list[Path]) -> str:
    """A service holding one vector: bad requests against it must leave it as it is."""
    name = _create(client)
    _predict(client, name, [str(images[0])], index=True)
    return name


# ---- a DeepDetect-style flow ----------------------------------------------------------------------


def _search(client: Client, name: str, data: list[str], status: int = 200, **output: object) -> list[JSON]:
    return _predictions(_predict(client, name, data, status, search=True, **output))


def _assert_nns(nns: list[JSON], k: int) -> None:
    dists = [n["dist"] for n in nns]
    assert dists == sorted(dists)
    assert 0 < len(nns) <= k
    assert len({n["uri"] for n in nns}) == len(nns)  # never padded with repeats


def test_deepdetect_flow(client: Client, engine: Engine, api_data: Path) -> None:
    folder = api_data / "flow"
    paths = [*make_folder(folder, 4, start=10), write_image(folder / "sub" / "deep.png", draw_image(14))]
    (folder / "notes.txt").write_text("not an image")
    name = _create(client, name=_name("Flow"))
    images_before = table_counts(engine)["image"]

    # index a directory: one prediction per image, in data order, the text file skipped
    answer = _predict(client, name, [str(folder)], index=True)
    assert answer["status"] == {"code": 200, "msg": "OK"}
    head = answer["head"]
    assert (head["method"], head["service"], head["skipped"], head["warning"]) == (
        "/predict",
        name,
        1,
        RANDOM_WEIGHTS,
    )
    assert isinstance(head["time"], float)
    predictions = _predictions(answer)
    assert [p["uri"] for p in predictions] == [str(p) for p in paths]
    for i, p in enumerate(predictions):
        assert set(p) == ({"uri", "vals", "indexed", "last"} if i == len(paths) - 1 else {"uri", "vals", "indexed"})
        assert p["indexed"] is True
        assert len(p["vals"]) == 512
        assert all(isinstance(v, float) for v in p["vals"])
    assert predictions[-1]["last"] is True
    assert table_counts(engine)["image"] == images_before + 5
    assert _index_info(client, name)["count"] == 5

    # build with no data (Deviation: no dummy image needed)
    built = _predict(client, name, [], build_index=True)
    assert _predictions(built) == []
    assert built["head"]["method"] == "/predict"
    index = _index_info(client, name)
    assert (index["count"], index["index_type"]) == (5, "Flat")
    assert isinstance(index["generation"], int)
    assert isinstance(index["built_at"], str)
    generation = index["generation"]

    # search: each image finds itself first, at most search_nn, sorted, never padded
    found = _search(client, name, [str(p) for p in paths], search_nn=3)
    assert [p["uri"] for p in found] == [str(p) for p in paths]
    for path, p in zip(paths, found, strict=True):
        assert "indexed" not in p
        _assert_nns(p["nns"], 3)
        assert len(p["nns"]) == 3
        assert p["nns"][0]["uri"] == str(path)
        assert p["nns"][0]["dist"] == pytest.approx(0.0, abs=1e-5)
        assert set(p["nns"][0]) == {"uri", "dist"}
    [alone] = _search(client, name, [str(paths[0])], search_nn=50)
    _assert_nns(alone["nns"], 50)
    assert len(alone["nns"]) == 5
    [default_k] = _search(client, name, [str(paths[0])])
    assert len(default_k["nns"]) == 5

    # clear=mem: gone from the API, vectors kept
    removed = _answer(client.delete(f"/services/{name.upper()}?clear=mem"))
    assert removed == {"status": {"code": 200, "msg": "OK"}, "head": {"method": "/services", "service": name}}
    _error(client.get(f"/services/{name}"), 404, 1002, "Service Not Found: ")
    _error(client.post("/predict", json={"service": name, "data": [str(paths[0])]}), 404, 1002, "Service Not Found: ")
    assert name not in [s["name"] for s in _answer(client.get("/info"))["head"]["services"]]
    _error(client.delete(f"/services/{name}"), 404, None)  # already removed from the API

    # re-created with the same settings: the vectors are back, searchable without re-indexing
    _create(client, name=name)
    index = _index_info(client, name)
    assert (index["count"], index["generation"]) == (5, generation)
    [again] = _search(client, name, [str(paths[2])], search_nn=2)
    assert again["nns"][0]["uri"] == str(paths[2])

    # removed again, re-created with another model: 409 saying to clear
    _answer(client.delete(f"/services/{name}"))
    bigger = _create_body()
    bigger["parameters"]["input"] = {"width": 96, "height": 96}
    other = _create_body()
    other["parameters"]["mllib"]["template"] = "resnet34"
    for body in (bigger, other):
        msg = _error(client.put(f"/services/{name}", json=body), 409, 1014, "Service already exists")
        assert "clear=full" in msg
    _error(client.get(f"/services/{name}"), 404, 1002)

    # clear=full removes the stored vectors and images; then any model may take the name
    _answer(client.delete(f"/services/{name}?clear=full"))
    assert table_counts(engine)["image"] == images_before
    _create(client, bigger, name=name)
    index = _index_info(client, name)
    assert index["count"] == 0
    assert "generation" not in index
    assert "built_at" not in index
    [fresh] = _search(client, name, [str(paths[0])])
    assert "nns" not in fresh  # nothing stored: absent, not empty
    assert fresh["last"] is True


def test_clear_mem_keeps_index_files_and_clear_full_removes_them(client: Client, api_data: Path) -> None:
    name = _name()
    repository = api_data / "repos" / name
    body = {**_create_body(), "model": {"repository": str(repository)}}
    _create(client, body, name)
    paths = make_folder(api_data / name, 2)
    _predict(client, name, [str(p) for p in paths], index=True, build_index=True)
    generations = list(repository.glob("gen-*"))
    assert len(generations) == 1
    assert (generations[0] / "index.faiss").is_file()
    _answer(client.delete(f"/services/{name}?clear=mem"))
    assert list(repository.glob("gen-*")) == generations
    _create(client, body, name)
    assert _index_info(client, name)["generation"] == int(generations[0].name.removeprefix("gen-"))
    _answer(client.delete(f"/services/{name}?clear=full"))
    assert list(repository.glob("gen-*")) == []


@pytest.mark.parametrize("clear", ["index", "lib", "full", "dir"])
def test_delete_with_clear_removes_vectors_and_images(
    client: Client, engine: Engine, api_data: Path, clear: str
) -> None:
    name = _create(client)
    before = table_counts(engine)
    paths = make_folder(api_data / name, 2)
    _predict(client, name, [str(p) for p in paths], index=True)
    assert table_counts(engine)["embedding"] == before["embedding"] + 2
    answer = _answer(client.delete(f"/services/{name}?clear={clear}"))
    assert answer == {"status": {"code": 200, "msg": "OK"}, "head": {"method": "/services", "service": name}}
    after = table_counts(engine)
    assert after == before | {"service": before["service"] - 1}
    _create(client, name=name)
    assert _index_info(client, name)["count"] == 0


def test_delete_errors(client: Client) -> None:
    _error(client.delete(f"/services/{_name()}"), 404, None)
    _error(client.delete(f"/services/{_name()}?clear=full"), 404, None)
    name = _create(client)
    _error(client.delete(f"/services/{name}?clear=bogus"), 400, 400, "clear: ")
    _answer(client.get(f"/services/{name}"))  # still there


def test_images_shared_with_another_service_survive_its_deletion(
    client: Client, engine: Engine, api_data: Path
) -> None:
    first, second = _create(client), _create(client)
    path = write_image(api_data / "shared-by-two.png", draw_image(31))
    before = table_counts(engine)["image"]
    for name in (first, second):
        _predict(client, name, [str(path)], index=True)
    assert table_counts(engine)["image"] == before + 1  # images are stored once, by uri
    _answer(client.delete(f"/services/{first}?clear=full"))
    [hit] = _search(client, second, [str(path)])
    assert hit["nns"][0]["uri"] == str(path)
    _answer(client.delete(f"/services/{second}?clear=full"))
    assert table_counts(engine)["image"] == before


# ---- base64, index_uris, re-indexing -----------------------------------------------------------


def test_base64_input_and_index_uris(client: Client, engine: Engine, api_data: Path) -> None:
    name = _create(client)
    a, b, c, d = (write_image(api_data / "b64" / f"{i}.png", draw_image(40 + i)) for i in range(4))
    images_before = table_counts(engine)["image"]

    # the prediction's uri is the position; the same content twice is answered twice, stored once
    answer = _predict(client, name, [_b64(a), _b64(b), _b64(a)], index=True)
    assert [(p["uri"], p["indexed"]) for p in _predictions(answer)] == [("0", True), ("1", True), ("2", True)]
    assert [p.get("last") for p in _predictions(answer)] == [None, None, True]
    assert _predictions(answer)[0]["vals"] == _predictions(answer)[2]["vals"]
    assert _index_info(client, name)["count"] == 2
    assert table_counts(engine)["image"] == images_before + 2

    # stored as sha256:<hex of the decoded bytes>, searchable at once (no build)
    [found] = _search(client, name, [_b64(a)], search_nn=5)
    assert found["uri"] == "0"
    assert [n["uri"] for n in found["nns"]] == [_sha_uri(a), _sha_uri(b)]
    assert found["nns"][0]["dist"] == pytest.approx(0.0, abs=1e-5)

    # index_uris decides the stored uri (and the prediction still says indexed)
    index: JSON = {"output": {"index": True}}
    body: JSON = {"service": name, "data": [_b64(c), str(d)], "index_uris": ["sku-c", "sku-d"], "parameters": index}
    named = _answer(client.post("/predict", json=body))
    assert [(p["uri"], p["indexed"]) for p in _predictions(named)] == [("0", True), (str(d), True)]
    [hit_c, hit_d] = _search(client, name, [_b64(c), str(d)], search_nn=1)
    assert (hit_c["nns"][0]["uri"], hit_d["nns"][0]["uri"]) == ("sku-c", "sku-d")

    # re-indexing a stored uri replaces its vector: count unchanged, found once
    count = _index_info(client, name)["count"]
    _predict(client, name, [_b64(a)], index=True)
    body = {"service": name, "data": [_b64(c)], "index_uris": ["sku-c"], "parameters": index}
    _answer(client.post("/predict", json=body))
    assert _index_info(client, name)["count"] == count
    [again] = _search(client, name, [_b64(a)], search_nn=50)
    uris = [n["uri"] for n in again["nns"]]
    assert uris.count(_sha_uri(a)) == 1
    assert uris[0] == _sha_uri(a)
    assert len(uris) == count

    # after a build, new items are still searchable at once
    _predict(client, name, [], build_index=True)
    e = write_image(api_data / "b64" / "late.png", draw_image(49))
    _predict(client, name, [_b64(e)], index=True)
    [late] = _search(client, name, [_b64(e)], search_nn=2)
    assert late["nns"][0]["uri"] == _sha_uri(e)

    # a deleted service's images are gone
    _answer(client.delete(f"/services/{name}?clear=full"))
    assert table_counts(engine)["image"] == images_before


# ---- distances and output flags -------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_distances_follow_the_metric_before_and_after_a_build(client: Client, api_data: Path, metric: str) -> None:
    name = _create(client, _create_body(metric=metric))
    assert _index_info(client, name)["metric"] == metric
    folder = api_data / f"dist-{metric}"
    make_folder(folder, 5, start=60)
    stored = {p["uri"]: np.array(p["vals"]) for p in _predictions(_predict(client, name, [str(folder)], index=True))}
    query = write_image(api_data / f"query-{metric}.png", draw_image(99))
    answers = []
    for build in (False, True):
        if build:
            _predict(client, name, [], build_index=True)
        [found] = _search(client, name, [str(query)])
        q = np.array(found["vals"])
        if metric == "cosine":
            assert np.linalg.norm(q) == pytest.approx(1.0, abs=1e-5)  # cosine services return unit vectors
        for nn in found["nns"]:
            x = stored[nn["uri"]]
            if metric == "l2":
                expected = float(np.mean((q - x) ** 2))
            else:
                expected = float(np.sqrt(max(0.0, 2 - 2 * q @ x / (np.linalg.norm(q) * np.linalg.norm(x)))))
            assert nn["dist"] == pytest.approx(expected, rel=1e-4)
        assert len(found["nns"]) == 5
        answers.append(found["nns"])
    before, after = answers
    assert [n["uri"] for n in before] == [n["uri"] for n in after]
    assert [n["dist"] for n in after] == pytest.approx([n["dist"] for n in before], rel=1e-5)


def test_output_defaults_from_creation_and_a_predicts_own_values(client: Client, images: list[Path]) -> None:
    name = _create(client, _create_body(search_nn=2))
    assert _answer(client.get(f"/services/{name}"))["body"]["parameters"]["output"] == {"search_nn": 2}
    _predict(client, name, [str(p) for p in images[:4]], index=True)
    [default] = _search(client, name, [str(images[0])])
    assert len(default["nns"]) == 2
    [own] = _search(client, name, [str(images[0])], search_nn=3)
    assert len(own["nns"]) == 3
    [default_again] = _search(client, name, [str(images[0])])
    assert len(default_again["nns"]) == 2


def test_index_defaults_from_creation_and_nprobe_for_one_search(client: Client, api_data: Path) -> None:
    name = _create(client, _create_body(index_type="IVF4,Flat", nprobe=1))
    folder = api_data / "ivf"
    paths = make_folder(folder, 20, start=200)
    _predict(client, name, [str(folder)], index=True, build_index=True)
    index = _index_info(client, name)
    assert (index["index_type"], index["count"]) == ("IVF4,Flat", 20)
    query = [str(paths[3])]
    [narrow] = _search(client, name, query, search_nn=20)  # nprobe 1 (the service's): one list of four
    [wide] = _search(client, name, query, search_nn=20, nprobe=4)  # every list: every vector
    [narrow_again] = _search(client, name, query, search_nn=20)
    assert len(wide["nns"]) == 20
    assert len(narrow["nns"]) < 20
    assert narrow_again["nns"] == narrow["nns"]  # nprobe applied to that search only
    for found in (narrow, wide):
        _assert_nns(found["nns"], 20)
        assert found["nns"][0]["uri"] == str(paths[3])

    # index settings on a call that fails are not kept; on a call that succeeds they are
    msg = _error(
        client.post(
            "/predict",
            json={
                "service": name,
                "data": [],
                "parameters": {"output": {"build_index": True, "index_type": "IVF64,Flat"}},
            },
        ),
        400,
        1006,
        "Service Bad Request Error: parameters.output.index_type: ",
    )
    assert "at least 64 vectors" in msg
    assert "has 20" in msg
    bad = {"index": True, "index_type": "HNSW32"}
    body = {"service": name, "data": [str(paths[0]), "!!unreadable!!"], "parameters": {"output": bad}}
    _error(client.post("/predict", json=body), 400, 1005, "Service Input Error: data[1]: ")
    index = _index_info(client, name)
    assert (index["index_type"], index["count"]) == ("IVF4,Flat", 20)
    [still] = _search(client, name, query, search_nn=20, nprobe=4)
    assert len(still["nns"]) == 20  # the previous generation keeps serving
    _predict(client, name, [], build_index=True, index_type="Flat")
    assert _index_info(client, name)["index_type"] == "Flat"
    [exact] = _search(client, name, query, search_nn=20)
    assert [n["uri"] for n in exact["nns"]] == [n["uri"] for n in wide["nns"]]


def test_binarized_values_are_zero_or_one(client: Client, images: list[Path]) -> None:
    name = _create(client)
    [plain] = _predictions(_predict(client, name, [str(images[1])]))
    answer = _predict(client, name, [str(images[1])], binarized=True, index=True)
    [binary] = _predictions(answer)
    assert set(binary["vals"]) == {0.0, 1.0}
    assert binary["vals"] == [1.0 if v > 0 else 0.0 for v in plain["vals"]]
    [found] = _search(client, name, [str(images[1])], binarized=True)
    assert found["vals"] == binary["vals"]
    assert found["nns"][0] == {"uri": str(images[1]), "dist": 0.0}


@pytest.mark.skipif(gpu_count() > 0, reason="a GPU is present: tests/test_gpu.py covers it")
def test_index_gpu_works_on_the_cpu_and_says_so(client: Client, images: list[Path]) -> None:
    body = _create_body(index_gpu=True)
    created = _answer(client.put(f"/services/{(name := _name())}", json=body), 201)
    warnings = created["head"]["warning"].split("; ")  # one string, warnings joined by "; "
    assert len(warnings) == 2
    assert warnings[0] == RANDOM_WEIGHTS
    assert warnings[1].startswith("index_gpu: ")
    assert "CPU" in warnings[1]
    other = _create(client)
    answer = _predict(client, other, [str(images[2])], index=True, build_index=True, index_gpu=True)
    assert "CPU" in answer["head"]["warning"]
    assert RANDOM_WEIGHTS in answer["head"]["warning"]
    [found] = _search(client, other, [str(images[2])], index_gpu=True)
    assert found["nns"][0]["uri"] == str(images[2])
    assert _index_info(client, name)["count"] == 0


def test_extract_layer(client: Client, engine: Engine, images: list[Path]) -> None:
    name = _create(client)

    def call(layer: str, data: list[str], status: int = 200, **output: object) -> JSON:
        body = {"service": name, "data": data, "parameters": {"mllib": {"extract_layer": layer}, "output": output}}
        return _answer(client.post("/predict", json=body), status)

    # a failed first index call with another layer leaves the service's layer alone
    before = table_counts(engine)
    call("layer3", [str(images[0]), "!!unreadable!!"], 400, index=True)
    assert table_counts(engine) == before
    assert _index_info(client, name)["dimension"] == 512
    [plain] = _predictions(_predict(client, name, [str(images[0])]))
    assert len(plain["vals"]) == 512

    # the first successful index call decides the layer
    [indexed] = _predictions(call("layer3", [str(images[0])], index=True))
    assert len(indexed["vals"]) == 256
    assert _index_info(client, name)["dimension"] == 256
    [found] = _search(client, name, [str(images[0])])  # no extract_layer: the service's
    assert len(found["vals"]) == 256
    assert found["nns"][0]["uri"] == str(images[0])
    [same] = _predictions(call("layer3", [str(images[1])], index=True, search=True))
    assert same["nns"][-1]["uri"] == str(images[0])

    # another layer for an index or search call while the service stores vectors, or an unknown one: 1006
    for layer, flag in (("flatten", "search"), ("avgpool", "index")):
        msg = _error(
            client.post(
                "/predict",
                json={
                    "service": name,
                    "data": [str(images[0])],
                    "parameters": {"mllib": {"extract_layer": layer}, "output": {flag: True}},
                },
            ),
            400,
            1006,
            "Service Bad Request Error: parameters.mllib.extract_layer: ",
        )
        assert "layer3" in msg
    _error(
        client.post(
            "/predict",
            json={"service": name, "data": [str(images[0])], "parameters": {"mllib": {"extract_layer": "layer99"}}},
        ),
        400,
        1006,
        "Service Bad Request Error: parameters.mllib.extract_layer: ",
    )
    assert _index_info(client, name)["count"] == 2


def test_a_directory_counts_what_it_skips(client: Client, api_data: Path) -> None:
    name = _create(client)
    folder = api_data / "mixed"
    paths = make_folder(folder, 2, start=300)
    (folder / "notes.txt").write_text("hello")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "empty.jpg").write_bytes(b"")
    answer = _predict(client, name, [str(folder)], index=True)
    assert answer["head"]["skipped"] == 3
    assert [p["uri"] for p in _predictions(answer)] == [str(p) for p in paths]
    assert _index_info(client, name)["count"] == 2
    clean = _predict(client, name, [str(paths[0])])
    assert "skipped" not in clean["head"]
    only_text = api_data / "only-text"
    only_text.mkdir()
    (only_text / "readme.md").write_text("# nothing")
    nothing = _predict(client, name, [str(only_text)], index=True, search=True)
    assert (nothing["head"]["skipped"], _predictions(nothing)) == (1, [])


def test_predictions_follow_the_order_of_data(client: Client, images: list[Path]) -> None:
    name = _create(client)
    data = [str(images[3]), _b64(images[0]), str(images[3]), str(images[1])]
    answer = _predict(client, name, data, index=True)
    assert [p["uri"] for p in _predictions(answer)] == [str(images[3]), "1", str(images[3]), str(images[1])]
    assert _index_info(client, name)["count"] == 3


def test_directory_entries_come_sorted_by_path_string(client: Client, api_data: Path) -> None:
    name = _create(client)
    folder = api_data / "order"
    for i, rel in enumerate(["a/x.png", "a.png", "a-b.png", "B.png", "a0.png"]):
        write_image(folder / rel, draw_image(400 + i))
    uris = [p["uri"] for p in _predictions(_predict(client, name, [str(folder)]))]
    assert len(uris) == 5
    assert uris == sorted(uris)


def test_valid_base64_that_is_no_image_is_named_as_given(client: Client, searchable: str) -> None:
    body = {"service": searchable, "data": ["nope"]}
    _error(client.post("/predict", json=body), 400, 1005, "Service Input Error: data[0]: Could not read image(s): nope")


def test_too_few_vectors_to_train_names_the_minimum(client: Client, images: list[Path]) -> None:
    name = _create(client)
    _predict(client, name, [str(p) for p in images[:3]], index=True)
    body = {"service": name, "data": [], "parameters": {"output": {"build_index": True, "index_type": "IVF16,Flat"}}}
    msg = _error(client.post("/predict", json=body), 400, 1006)
    assert "at least 16" in msg


# ---- other settings: tokens, limits -------------------------------------------------------------


def test_tokens_guard_every_route(engine: Engine, api_home: Path, api_data: Path, images: list[Path]) -> None:
    admin_token, read_token = uuid.uuid4().hex, uuid.uuid4().hex
    settings = api_settings(api_home, api_data, api_token=admin_token, read_token=read_token)
    admin = {"Authorization": f"Bearer {admin_token}"}
    reader = {"Authorization": f"Bearer {read_token}"}
    app = create_app(settings, engine=engine)
    with TestClient(app) as c:
        check_every_response(c)
        name = _name()
        assert _answer(c.put(f"/services/{name}", json=_create_body(), headers=admin), 201)
        eager = _name()  # a creation default that writes on every predict
        assert _answer(c.put(f"/services/{eager}", json=_create_body(index=True), headers=admin), 201)
        index = {"service": name, "data": [str(images[0])], "parameters": {"output": {"index": True}}}
        search = {"service": name, "data": [str(images[0])], "parameters": {"output": {"search": True}}}
        build = {"service": name, "data": [], "parameters": {"output": {"build_index": True}}}
        for headers, status in (({}, 401), ({"Authorization": "Bearer wrong"}, 401)):
            _answer(c.get("/info", headers=headers), status)
            _answer(c.post("/predict", json=search, headers=headers), status)
        _answer(c.get("/info", headers=reader))
        _answer(c.get(f"/services/{name}", headers=reader))
        _answer(c.post("/predict", json=search, headers=reader))
        for forbidden in (
            c.post("/predict", json=index, headers=reader),
            c.post("/predict", json=build, headers=reader),
            c.post("/predict", json={"service": eager, "data": [str(images[0])]}, headers=reader),
            c.put(f"/services/{_name()}", json=_create_body(), headers=reader),
            c.delete(f"/services/{name}", headers=reader),
        ):
            answer = _answer(forbidden, 403)
            assert answer["status"]["msg"] == "Forbidden"
        counts = [_answer(c.get(f"/services/{n}", headers=admin))["body"]["index"]["count"] for n in (name, eager)]
        assert counts == [0, 0]
        _answer(c.post("/predict", json=index, headers=admin))
        _answer(c.post("/predict", json={"service": eager, "data": [str(images[1])]}, headers=admin))
        counts = [_answer(c.get(f"/services/{n}", headers=admin))["body"]["index"]["count"] for n in (name, eager)]
        assert counts == [1, 1]
        for n in (name, eager):
            _answer(c.delete(f"/services/{n}?clear=full", headers=admin))


def test_item_and_pixel_limits(engine: Engine, api_home: Path, api_data: Path, images: list[Path]) -> None:
    app = create_app(api_settings(api_home, api_data, max_items=2, max_pixels=10_000), engine=engine)
    with TestClient(app) as c:
        check_every_response(c)
        name = _create(c)
        before = table_counts(engine)
        many = {"service": name, "data": [str(p) for p in images[:3]], "parameters": {"output": {"index": True}}}
        msg = _error(c.post("/predict", json=many), 400, 1005, "Service Input Error: data: ")
        assert "SIMSEARCH_MAX_ITEMS" in msg
        large = {"service": name, "data": [str(images[0])], "parameters": {"output": {"index": True}}}  # 128x96
        msg = _error(c.post("/predict", json=large), 400, 1005, "Service Input Error: data[0]: ")
        assert "SIMSEARCH_MAX_PIXELS" in msg
        assert table_counts(engine) == before
        small = write_image(api_data / "small.png", draw_image(5, size=(48, 64)))
        [ok] = _predictions(_predict(c, name, [str(small)], index=True))
        assert ok["indexed"] is True


def test_a_plain_predict_may_extract_another_layer(client: Client, searchable: str, images: list[Path]) -> None:
    body = {"service": searchable, "data": [str(images[0])], "parameters": {"mllib": {"extract_layer": "layer3"}}}
    [plain] = _predictions(_answer(client.post("/predict", json=body)))
    assert len(plain["vals"]) == 256


# ---- as DeepDetect's clients use it (contract: non-square input, template-less re-creation, names) --


def _sized(width: int, height: int) -> JSON:
    body = _create_body()
    body["parameters"]["input"] = {"connector": "image", "width": width, "height": height}
    return body


def test_non_square_input_is_resized_to_width_by_height(client: Client, engine: Engine, images: list[Path]) -> None:
    wide, tall, square = _create(client, _sized(300, 200)), _create(client, _sized(200, 300)), _create(client)
    body = _answer(client.get(f"/services/{wide}"))["body"]
    assert body["parameters"]["input"] == {"connector": "image", "width": 300, "height": 200}
    data = [str(p) for p in images[:3]]
    indexed = _predictions(_predict(client, wide, data, index=True))
    assert all(p["indexed"] is True and len(p["vals"]) == 512 for p in indexed)
    [other] = _predictions(_predict(client, tall, data[:1]))
    assert not np.allclose(other["vals"], indexed[0]["vals"])  # 200x300 is not 300x200: the height is used
    [squared] = _predictions(_predict(client, square, data[:1]))
    assert not np.allclose(squared["vals"], indexed[0]["vals"])
    found = _search(client, wide, data, search_nn=1)
    assert [p["nns"][0]["uri"] for p in found] == data
    # a predict may restate the service's size, not change it
    same = {"service": wide, "data": data[:1], "parameters": {"input": {"width": 300, "height": 200}}}
    _answer(client.post("/predict", json=same))
    flipped = {"service": wide, "data": data[:1], "parameters": {"input": {"width": 200, "height": 300}}}
    before = table_counts(engine)
    msg = _error(client.post("/predict", json=flipped), 400, 1005, "Service Input Error: parameters.input")
    assert "300x200" in msg
    assert table_counts(engine) == before
    # re-created after clear=mem: the same width and height re-attach, another height is a different model
    _answer(client.delete(f"/services/{wide}"))
    msg = _error(client.put(f"/services/{wide}", json=_sized(300, 300)), 409, 1014, "Service already exists")
    assert "300x200" in msg
    _create(client, _sized(300, 200), name=wide)
    assert _index_info(client, wide)["count"] == 3


def test_detached_service_is_re_attached_by_a_creation_without_template(
    client: Client, engine: Engine, api_data: Path
) -> None:
    """DeepDetect's imgsearch demo creates its search-time service with {"nclasses":1000} only."""
    name = _name("imgserv")
    repository = api_data / "repos" / name
    paths = make_folder(api_data / name, 3, start=40)
    created = {
        "mllib": "torch",
        "description": "image classification",
        "type": "unsupervised",
        "parameters": {
            "input": {"connector": "image", "width": 64, "height": 64},
            "mllib": {"template": "resnet18", "weights": "none", "nclasses": 1000},
            "output": {"index_type": "IVF2,Flat", "train_samples": 3},
        },
        "model": {"repository": str(repository)},
    }
    _create(client, created, name)
    _predict(client, name, [str(p) for p in paths], index=True, build_index=True)
    generation = _index_info(client, name)["generation"]
    _answer(client.delete(f"/services/{name}"))  # clear=mem, as dd_client sends it with clear=''
    again = {
        "mllib": "torch",
        "description": "image classification",
        "type": "unsupervised",
        "parameters": {"input": {"connector": "image", "width": 64, "height": 64}, "mllib": {"nclasses": 1000}},
        "model": {"repository": str(repository), "templates": "../templates/caffe/"},
    }
    assert _answer(client.put(f"/services/{name}", json=again), 201)["head"] == {"warning": RANDOM_WEIGHTS}
    body = _answer(client.get(f"/services/{name}"))["body"]
    assert body["type"] == "unsupervised"
    assert body["parameters"]["mllib"] == {"template": "resnet18", "weights": "none", "nclasses": 1000}
    assert (body["index"]["count"], body["index"]["generation"], body["index"]["index_type"]) == (
        3,
        generation,
        "IVF2,Flat",
    )
    found = _search(client, name, [str(p) for p in paths], search_nn=1)
    assert [p["nns"][0]["uri"] for p in found] == [str(p) for p in paths]
    # by its repository: another name takes the detached service (and its vectors) over
    _answer(client.delete(f"/services/{name}"))
    renamed = _name("imgserv")
    _answer(client.put(f"/services/{renamed}", json=again), 201)
    assert _index_info(client, renamed)["count"] == 3
    _error(client.get(f"/services/{name}"), 404, 1002)
    # the template alone: the weights and the input size are the stored ones
    _answer(client.delete(f"/services/{renamed}"))
    template_only = {"mllib": "torch", "parameters": {"mllib": {"template": "resnet18"}}}
    _answer(client.put(f"/services/{renamed}", json=template_only), 201)
    assert _index_info(client, renamed)["count"] == 3
    # settings given that differ from the stored ones: another model, 409
    _answer(client.delete(f"/services/{renamed}"))
    bigger = {**again, "parameters": {"input": {"width": 96, "height": 96}, "mllib": {}}}
    _error(client.put(f"/services/{renamed}", json=bigger), 409, 1014, "Service already exists")
    # nothing to re-attach: the template is missing (400/1006), nothing written
    before = table_counts(engine)
    lonely = {"mllib": "torch", "parameters": {"mllib": {"nclasses": 1000}}}
    msg = _error(client.put(f"/services/{_name()}", json=lonely), 400, 1006, "Service Bad Request Error: ")
    assert msg.startswith("Service Bad Request Error: parameters.mllib.template: missing")
    assert table_counts(engine) == before


def test_an_unknown_template_says_so_and_lists_close_names(client: Client, engine: Engine) -> None:
    before = table_counts(engine)
    for weights in ("DEFAULT", "none"):
        body = _with("mllib", template="resnet5000", weights=weights)
        msg = _error(client.put(f"/services/{_name()}", json=body), 400, 1006, "Service Bad Request Error: ")
        assert msg.startswith("Service Bad Request Error: parameters.mllib.template: unknown model 'resnet5000'"), msg
        assert "resnet50" in msg
        assert "pretrained weights" not in msg
    assert table_counts(engine) == before


def test_info_and_get_echo_the_type_that_was_created(client: Client) -> None:
    created = {
        kind: _create(client, {**_create_body(), **({"type": kind} if kind else {})}, _name("kind"))
        for kind in ("supervised", "unsupervised", None)
    }
    native = _name("native")
    made = client.post("/api/v1/services", json={"name": native, "model": "resnet18", "weights": "none", "size": 64})
    assert made.status_code == 201, made.text
    listed = {s["name"]: s["type"] for s in _answer(client.get("/info"))["head"]["services"]}
    for kind, name in [*created.items(), (None, native)]:
        expected = kind or "supervised"  # the contract's default, for a service created without a type
        assert listed[name] == expected, name
        assert _answer(client.get(f"/services/{name}"))["body"]["type"] == expected, name


def test_lone_surrogates_in_strings_are_400_naming_the_field(
    client: Client, engine: Engine, searchable: str, images: list[Path]
) -> None:
    before = table_counts(engine)
    index = '"parameters":{"output":{"index":true}}'
    cases = [
        (
            "/predict",
            f'{{"service":"{searchable}","data":["{images[1]}"],"index_uris":["u\\ud800"],{index}}}',
            "index_uris[0]",
        ),
        ("/predict", f'{{"service":"{searchable}","data":["\\udfff.png"]}}', "data[0]"),
        ("/predict", '{"service":"s\\ud800"}', "service"),
        (f"/services/{_name()}", '{"mllib":"torch","description":"\\ud83d"}', "description"),
        ("/chain/c", '{"chain":{"calls":[{"service":"x","data":["\\ud800"]}]}}', "chain.calls[0].data[0]"),
        ("/predict", '{"service":"x","parameters":{"output":{"\\ud800":true}}}', "parameters.output"),
    ]
    for route, raw, field in cases:
        method = "PUT" if route.startswith("/services") else "POST"
        response = client.request(method, route, content=raw.encode(), headers={"content-type": "application/json"})
        msg = _error(response, 400, 400, field)
        assert "surrogate" in msg, msg
    assert table_counts(engine) == before


def test_a_creation_without_template_over_a_serving_service_is_a_conflict(client: Client) -> None:
    """Only a detached service is re-attached by a template-less creation; one that serves is 409/1014,
    as any creation over an existing name is."""
    name = _create(client)
    template_less = {"mllib": "torch", "parameters": {"mllib": {"nclasses": 1000}}}
    _error(client.put(f"/services/{name}", json=template_less), 409, 1014, "Service already exists")
    assert _answer(client.get(f"/services/{name}"))["body"]["parameters"]["mllib"]["template"] == "resnet18"
