"""DeepDetect's own Python client and its demo scripts, replayed against the real app.

`DDClient` sends exactly what jolibrain/deepdetect's `clients/python/dd_client` sends (GET and DELETE with
no body, PUT/POST bodies built the same way, `clear` left out when not given, base64 as `encodebytes`
without its newlines, chains from `make_call`/`make_action`/`post_chain`) and, like it, raises on any 4xx
or 5xx (`raise_for_status`). The tests run the calls of `demo/imgsearch/imgsearch_dd.py` and
`demo/objsearch/objsearch_dd.py` in their order, changing only the model settings (a torch template with
seeded random weights and small inputs, so that everything runs offline), and read the answers the way
those scripts do. Every answer is also checked against the contract's envelope rules (the `client`
fixture, tests/ddwire.py).
"""

from __future__ import annotations

import base64
import contextlib
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from skimage import data as photos
from sqlalchemy import Engine
from tests.conftest import make_folder, table_counts, write_image

JSON = dict[str, Any]
FASTER = "fasterrcnn_mobilenet_v3_large_320_fpn"


class DDHTTPError(Exception):
    """What requests' raise_for_status raises in dd_client: any 4xx or 5xx."""

    def __init__(self, status: int, body: JSON) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body


class DDClient:
    """dd_client.DD's requests, sent through the test client, answers returned as Python (RETURN_PYTHON)."""

    def __init__(self, http: TestClient[Litestar]) -> None:
        self.http = http

    def _send(self, method: str, path: str, json: JSON | None = None) -> JSON:
        # requests with json=None sends no body at all (GET /info, GET and DELETE /services/...)
        response = self.http.request(method, path) if json is None else self.http.request(method, path, json=json)
        answer: JSON = response.json()
        if response.status_code >= 400:
            raise DDHTTPError(response.status_code, answer)
        return answer

    def info(self) -> JSON:
        return self._send("GET", "/info")

    def put_service(
        self,
        sname: str,
        model: JSON,
        description: str,
        mllib: str,
        parameters_input: JSON,
        parameters_mllib: JSON,
        parameters_output: JSON,
        mltype: str = "supervised",
    ) -> JSON:
        data = {
            "description": description,
            "mllib": mllib,
            "type": mltype,
            "parameters": {"input": parameters_input, "mllib": parameters_mllib, "output": parameters_output},
            "model": model,
        }
        return self._send("PUT", f"/services/{sname}", data)

    def get_service(self, sname: str) -> JSON:
        return self._send("GET", f"/services/{sname}")

    def delete_service(self, sname: str, clear: str | None = None) -> JSON:
        return self._send("DELETE", f"/services/{sname}" + (f"?clear={clear}" if clear else ""))

    def post_predict(
        self,
        sname: str,
        data: list[str],
        parameters_input: JSON,
        parameters_mllib: JSON,
        parameters_output: JSON,
        use_base64: bool = False,
        index_uris: list[str] | None = None,
    ) -> JSON:
        body: JSON = {
            "service": sname,
            "parameters": {"input": parameters_input, "mllib": parameters_mllib, "output": parameters_output},
            "data": [_as_base64(d) for d in data] if use_base64 else data,
        }
        if index_uris:
            body["index_uris"] = index_uris
        return self._send("POST", "/predict", body)

    def make_call(
        self,
        sname: str,
        data: list[str],
        parameters_input: JSON,
        parameters_mllib: JSON,
        parameters_output: JSON,
        use_base64: bool = False,
        index_uris: list[str] | None = None,
    ) -> JSON:
        call: JSON = {
            "service": sname,
            "parameters": {"input": parameters_input, "mllib": parameters_mllib, "output": parameters_output},
        }
        if data:
            call["data"] = [_as_base64(d) for d in data] if use_base64 else data
        if index_uris:
            call["index_uris"] = index_uris
        return call

    def make_action(self, action_type: str, parameters: JSON | None = None) -> JSON:
        action: JSON = {"action": {"type": action_type}}
        if parameters:
            action["action"]["parameters"] = parameters
        return action

    def post_chain(self, cname: str, calls: list[JSON]) -> JSON:
        return self._send("POST", f"/chain/{cname}", {"chain": {"calls": calls}})


def _as_base64(filename: str) -> str:
    """dd_client's _convert_base64 for a file: base64.encodebytes, its line breaks removed."""
    return base64.encodebytes(Path(filename).read_bytes()).decode("ascii").replace("\n", "")


def _walk(folder: Path) -> tuple[list[str], list[str]]:
    """The demos' file listing: every file os.walk yields, and `nfilenames` (the last folder's files)."""
    onlyfiles: list[str] = []
    nfilenames: list[str] = []
    for dirpath, _, filenames in os.walk(folder):
        nfilenames = [dirpath + "/" + f for f in filenames]
        onlyfiles.extend(nfilenames)
    return onlyfiles, nfilenames


def _batch(items: list[str], n: int = 1) -> list[list[str]]:
    return [items[i : i + n] for i in range(0, len(items), n)]


@pytest.fixture
def dd(client: TestClient[Litestar]) -> DDClient:
    return DDClient(client)


# ---- demo/imgsearch/imgsearch_dd.py ----------------------------------------------------------------


def _imgsearch_service(dd: DDClient, repository: Path, parameters_mllib: JSON) -> None:
    """The demo's creation, errors swallowed as its `try: ... except: pass` does."""
    model = {"repository": str(repository), "templates": "../templates/caffe/"}
    parameters_input = {"connector": "image", "width": 64, "height": 64}
    with contextlib.suppress(DDHTTPError):
        dd.put_service(
            "imgserv", model, "image classification", "torch", parameters_input, parameters_mllib, {}, "unsupervised"
        )


def _imgsearch_index(dd: DDClient, repository: Path, folder: Path) -> int:
    """`imgsearch_dd.py --index FOLDER`, the model settings changed to a torch template."""
    _imgsearch_service(dd, repository, {"nclasses": 1000, "template": "resnet18", "weights": "none"})
    parameters_input: JSON = {}
    parameters_mllib = {"gpu": True, "extract_layer": "fc"}  # the demo's loss3/classifier: the classifier
    parameters_output: JSON = {"binarized": False, "index": True}
    onlyfiles, nfilenames = _walk(folder)
    c = 0
    for x in _batch(onlyfiles):
        classif = dd.post_predict("imgserv", x, parameters_input, parameters_mllib, parameters_output)
        c += len(classif["body"]["predictions"])
        if c >= 100:
            break
    # "one last dumb predict call to build the index"
    parameters_output["index"] = False
    parameters_output["build_index"] = True
    dd.post_predict("imgserv", [nfilenames[0]], parameters_input, parameters_mllib, parameters_output)
    dd.delete_service("imgserv", clear="")
    return c


def _imgsearch_search(dd: DDClient, repository: Path, query: str, search_size: int = 10) -> list[str]:
    """`imgsearch_dd.py --search IMAGE`, unchanged: its service is created with {"nclasses": 1000} only."""
    _imgsearch_service(dd, repository, {"nclasses": 1000})
    parameters_mllib = {"gpu": True, "extract_layer": "fc"}
    parameters_output = {"binarized": False, "search": True, "search_nn": search_size}
    classif = dd.post_predict("imgserv", [query], {}, parameters_mllib, parameters_output)
    near_names = [nn["uri"] for nn in classif["body"]["predictions"][0]["nns"]]
    for name in near_names:
        assert cv2.imread(name) is not None  # the demo shows each neighbour
    dd.delete_service("imgserv", clear="")
    return near_names


def test_imgsearch_demo(dd: DDClient, engine: Engine, api_data: Path) -> None:
    folder = api_data / "imgsearch"
    paths = make_folder(folder, 6, start=300)
    repository = api_data / "imgsearch-model"
    assert _imgsearch_index(dd, repository, folder) == 6
    assert "imgserv" not in [s["name"] for s in dd.info()["head"]["services"]]  # deleted with clear=mem
    vectors = table_counts(engine)["embedding"]
    near = _imgsearch_search(dd, repository, str(paths[2]))
    assert near[0] == str(paths[2])
    assert sorted(near) == sorted(str(p) for p in paths)
    # the demo again: both runs re-attach the stored service, nothing is stored twice
    assert _imgsearch_index(dd, repository, folder) == 6
    assert _imgsearch_search(dd, repository, str(paths[4]), search_size=3)[0] == str(paths[4])
    assert table_counts(engine)["embedding"] == vectors


# ---- demo/objsearch/objsearch_dd.py ----------------------------------------------------------------


@pytest.fixture(scope="module")
def scenes(api_data: Path) -> Path:
    folder = api_data / "objsearch"
    write_image(folder / "astronaut.png", photos.astronaut())
    write_image(folder / "coffee.png", photos.coffee())
    write_image(folder / "chelsea.png", photos.chelsea())
    return folder


def test_objsearch_demo(dd: DDClient, api_data: Path, scenes: Path) -> None:
    """`objsearch_dd.py --index FOLDER`, then `--search IMAGE`, the model settings changed to a torchvision
    Faster R-CNN (its box-head vector per object is DeepDetect's "rois")."""
    sname = "imageserv"
    model = {"repository": str(api_data / "objsearch-model"), "templates": "../templates/caffe/"}
    parameters_input = {"connector": "image", "width": 320, "height": 320}
    parameters_mllib: JSON = {"nclasses": 21, "template": FASTER, "weights": "none"}
    with contextlib.suppress(DDHTTPError):  # the demo's try: ... except: pass
        dd.put_service(
            sname, model, "image classification", "torch", parameters_input, parameters_mllib, {}, "supervised"
        )
    parameters_mllib = {"gpu": True}  # reset call params
    parameters_output: JSON = {"rois": "rois", "confidence_threshold": 0.01, "best": 1, "index": True}
    onlyfiles, nfilenames = _walk(scenes)
    c = d = 0
    for x in _batch(onlyfiles):
        classif = dd.post_predict(sname, x, {}, parameters_mllib, parameters_output)
        for p in classif["body"]["predictions"]:
            c += 1
            assert p["uri"] in onlyfiles
            d += len(p["rois"])
    assert (c, d > 0) == (3, True)
    parameters_output["index"] = False
    parameters_output["build_index"] = True
    dd.post_predict(sname, [nfilenames[0]], {}, parameters_mllib, parameters_output)
    # --search
    parameters_output["search"] = True
    parameters_output["search_nn"] = 10
    query = str(scenes / "astronaut.png")
    classif = dd.post_predict(sname, [query], {}, parameters_mllib, parameters_output)
    res = classif["body"]["predictions"][0]["rois"]
    assert res
    height, width = cv2.imread(query).shape[:2]
    for roi in res:
        near = roi["nns"]
        bbox, cat = roi["bbox"], roi["cat"]
        assert isinstance(cat, str)
        assert 0 <= bbox["xmin"] <= bbox["xmax"] <= width
        assert 0 <= bbox["ymin"] <= bbox["ymax"] <= height
        for n in near:
            assert cv2.imread(n["uri"]) is not None
            assert {"xmin", "ymin", "xmax", "ymax"} <= set(n["bbox"])
            assert isinstance(n["cat"], str)
    # the same search ranking whole images by their objects (DeepDetect's multibox_rois): a client reads
    # the query objects from `classes` and the images from `nns`
    parameters_output["multibox_rois"] = True
    classif = dd.post_predict(sname, [query], {}, parameters_mllib, parameters_output)
    prediction = classif["body"]["predictions"][0]
    assert [(c["cat"], c["bbox"]) for c in prediction["classes"]] == [(r["cat"], r["bbox"]) for r in res]
    assert prediction["classes"][-1]["last"] is True
    images = [n["uri"] for n in prediction["nns"]]
    assert sorted(images) == sorted({n["uri"] for roi in res for n in roi["nns"]})  # every image hit
    assert [n["dist"] for n in prediction["nns"]] == sorted(n["dist"] for n in prediction["nns"])
    dd.delete_service(sname, clear="")


# ---- the client itself: every method, a chain, and an error raised -----------------------------------


def test_client_methods_and_a_chain(dd: DDClient, engine: Engine, api_data: Path, scenes: Path) -> None:
    """A chain as DeepDetect's object search tutorial builds it with make_call / make_action / post_chain:
    a face detector, a crop, an extractor (no parent_id: it takes the crop's output)."""
    faces, vectors = "ddfaces", "ddvectors"
    cascade = {"template": "opencv:haarcascade_frontalface_default"}
    dd.put_service(faces, {}, "faces", "torch", {"connector": "image"}, cascade, {"bbox": True})
    small = {"connector": "image", "width": 64, "height": 64}
    dd.put_service(vectors, {}, "face vectors", "torch", small, {"template": "resnet18", "weights": "none"}, {})
    info = dd.info()["head"]["services"]
    assert {"name": faces, "description": "faces", "mllib": "torch", "type": "supervised"} in info
    described = dd.get_service(vectors)["body"]
    assert (described["type"], described["parameters"]["input"]["width"]) == ("supervised", 64)
    assert "generation" not in described["index"]  # never built: omitted, not null
    collage = write_image(
        api_data / "chain" / "collage.png", np.concatenate([photos.astronaut(), photos.astronaut()], axis=1)
    )
    data = [str(scenes / "astronaut.png"), str(collage)]

    detect = {"bbox": True, "confidence_threshold": 0.3}

    def chain(output: JSON, images: list[str], *, use_base64: bool = False) -> list[JSON]:
        calls = [
            dd.make_call(faces, images, {"keep_orig": True}, {"gpu": True}, detect, use_base64=use_base64),
            dd.make_action("crop", {"padding_ratio": 0.1}),
            dd.make_call(vectors, [], {}, {"gpu": True, "extract_layer": "avgpool"}, output),
        ]
        predictions: list[JSON] = dd.post_chain("objects", calls)["body"]["predictions"]
        return predictions

    stored = chain({"index": True}, data)
    assert [p["uri"] for p in stored] == data
    assert all(c[vectors]["indexed"] is True for p in stored for c in p["classes"])
    [found] = chain({"search": True, "search_nn": 2}, data[:1], use_base64=True)
    assert found["uri"] == "0"  # base64 content is answered under its position in data
    assert all(c[vectors]["nns"][0]["uri"] in data for c in found["classes"])
    [ranked] = chain({"search": True, "search_nn": 1, "multibox_rois": True}, [str(collage)])
    assert ranked["classes"][-1]["last"] is True
    assert {n["uri"] for n in ranked["nns"]} <= set(data)
    # an error is an exception, as dd_client's raise_for_status makes it; nothing written
    before = table_counts(engine)
    with pytest.raises(DDHTTPError) as refused:
        dd.post_predict(vectors, [str(api_data / "missing.png")], {}, {"gpu": True}, {"index": True})
    assert (refused.value.status, refused.value.body["status"]["dd_code"]) == (400, 1005)
    with pytest.raises(DDHTTPError) as unknown:
        dd.get_service("nosuchservice")
    assert (unknown.value.status, unknown.value.body["status"]["dd_code"]) == (404, 1002)
    assert table_counts(engine) == before
    dd.delete_service(faces)  # clear omitted: mem
    dd.delete_service(vectors, clear="full")
    with pytest.raises(DDHTTPError):
        dd.delete_service(faces)
