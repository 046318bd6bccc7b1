"""Property-based fuzz of the DeepDetect face's bodies (POST /predict, PUT /services/{name}, PUT /chain/{name}),
beside the schemathesis run of /api/v1 (test_api_schema.py), over the real app, real Postgres and real models.

The bodies mix DeepDetect's structure (the field names of ../shared/deepdetect-api.md, with plausible values:
real files, folders, base64 images, layer and index names) with wrong JSON types and hostile values (lone
surrogates, NULs, huge and non-finite numbers, deep nesting, paths out of the roots), so that requests get past
the top-level type checks into the parsing of each section, the inputs and the models. For every request:
no 5xx, the contract's envelope (tests/ddwire.py: status.code == HTTP status, no null member, msg and dd_msg
as the table says), and on a 4xx the row count of every table unchanged.
"""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from typing import Any

import cv2
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine
from tests.conftest import draw_image, make_folder, table_counts
from tests.ddwire import check_envelope

EXTRACTOR = "fz_images"  # resnet18, random weights, 64 px: a few images indexed, built
DETECTOR = "fz_faces"  # OpenCV's frontal face cascade: offline and fast
FUZZ = settings(
    max_examples=200, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)


@pytest.fixture(scope="module")
def world(client: TestClient[Litestar], api_data: Path) -> dict[str, Any]:
    """Two services and files good and bad in the data root: the values the strategies draw from."""
    extractor = {
        "mllib": "torch",
        "parameters": {"input": {"width": 64, "height": 64}, "mllib": {"template": "resnet18", "weights": "none"}},
    }
    assert client.put(f"/services/{EXTRACTOR}", json=extractor).status_code == 201
    detector = {"mllib": "torch", "parameters": {"mllib": {"template": "opencv:haarcascade_frontalface_default"}}}
    assert client.put(f"/services/{DETECTOR}", json=detector).status_code == 201
    paths = make_folder(api_data / "fuzz", 3, start=300)
    (api_data / "fuzz" / "notes.txt").write_text("not an image")
    odd = api_data / "odd"
    make_folder(odd, 1, start=310)
    os.symlink("loop", odd / "loop")
    os.mkfifo(odd / "pipe")
    indexed = client.post(
        "/predict",
        json={"service": EXTRACTOR, "data": [str(p) for p in paths], "parameters": {"output": {"index": True}}},
    )
    assert indexed.status_code == 200, indexed.text
    built = client.post("/predict", json={"service": EXTRACTOR, "parameters": {"output": {"build_index": True}}})
    assert built.status_code == 200, built.text
    png = cv2.imencode(".png", draw_image(320))[1].tobytes()
    return {
        "files": [str(p) for p in paths],
        "folders": [str(api_data / "fuzz"), str(odd)],
        "base64": base64.b64encode(png).decode(),
        "truncated": base64.b64encode(png[: len(png) // 2]).decode(),
        "data_root": str(api_data),
    }


# ---- values -----------------------------------------------------------------------------------------

DEEP = re.compile(r'"\\u0000deep(\d+)"')  # a placeholder for a nesting too deep for json.dumps to write


def _deep(depth: int) -> str:
    return f"\0deep{depth}"


def _dumps(body: Any) -> bytes:
    """JSON text for `body`, NaN and Infinity included (Python's json accepts them), deep placeholders
    replaced by `[[[...]]]` nested that deep."""
    text = json.dumps(body, allow_nan=True)
    return DEEP.sub(lambda m: "[" * int(m[1]) + "]" * int(m[1]), text).encode()


TEXT = st.text(st.characters(exclude_categories=()), max_size=12)  # surrogates, NULs, controls included
HUGE = st.sampled_from([2**31, 2**63, 10**30, -(10**30), -1, 0])
ODD: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    HUGE,
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
    st.sampled_from(["", "\x00", "\ud800", "x" * 5000, "../../../etc/passwd", "file:///etc/passwd"]),
    st.lists(st.integers() | TEXT, max_size=3),
    st.dictionaries(TEXT, st.integers() | TEXT, max_size=3),
    st.integers(min_value=2, max_value=3000).map(_deep),
)


def mostly(right: st.SearchStrategy[Any], wrong: st.SearchStrategy[Any] = ODD) -> st.SearchStrategy[Any]:
    """`right` about eleven times in twelve, else `wrong` (st.one_of would flatten ODD's branches into its own and
    draw each as often as `right`; and the choice is not 0, which hypothesis draws most)."""
    return st.integers(0, 11).flatmap(lambda i: wrong if i == 3 else right)


def typed(right: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a value of the right type (to get past the type check), sometimes anything."""
    return mostly(right)


def section(
    fields: dict[str, st.SearchStrategy[Any]], required: dict[str, st.SearchStrategy[Any]] | None = None
) -> st.SearchStrategy[Any]:
    """An object with the `required` fields (whose values may still be null: missing, to this face) and any
    subset of `fields`, now and then a stray key; now and then not an object at all."""
    extra = st.dictionaries(st.sampled_from(["stray", "\ud800", ""]), ODD, max_size=1)
    stray = st.integers(0, 9).flatmap(lambda i: extra if i == 5 else st.just({}))
    obj = st.fixed_dictionaries(required or {}, optional=fields)
    return mostly(obj.flatmap(lambda d: stray.map(lambda e: e | d)))


SMALL_INT = st.integers(min_value=-2, max_value=300)
FLAG = typed(st.booleans())
OUTPUT_FIELDS = {
    "index": FLAG,
    "build_index": FLAG,
    "search": FLAG,
    "search_nn": typed(st.one_of(SMALL_INT, HUGE)),
    "index_type": typed(st.sampled_from(["Flat", "IVF4,Flat", "HNSW8", "PQ4", "IVF1,SQ8", "Bogus", ""])),
    "train_samples": typed(st.one_of(SMALL_INT, HUGE)),
    "nprobe": typed(st.one_of(SMALL_INT, HUGE)),
    "ef_search": typed(st.one_of(SMALL_INT, HUGE)),
    "ondisk": FLAG,
    "index_gpu": FLAG,
    "index_gpuid": typed(SMALL_INT),
    "metric": typed(mostly(st.sampled_from(["l2", "cosine"]), st.sampled_from(["ip", "manhattan"]))),
    "index_backend": typed(mostly(st.sampled_from(["faiss", "annoy"]), st.just("hnswlib"))),
    "n_trees": typed(st.one_of(SMALL_INT, HUGE)),
    "search_k": typed(st.one_of(SMALL_INT, HUGE)),
    "confidence_threshold": typed(st.floats(min_value=-1, max_value=2) | st.sampled_from([0.0, 0.5, 1.0])),
    "best": typed(st.one_of(SMALL_INT, HUGE)),
    "bbox": FLAG,
    "rois": typed(st.sampled_from(["rois", ""])),
    "multibox_rois": FLAG,
    "multibox_roi": FLAG,
    "binarized": FLAG,
}
SIZE = typed(st.one_of(st.sampled_from([64, 32, 224, 96, 8, 0]), HUGE))


def input_section(connector: bool) -> st.SearchStrategy[Any]:
    fields = {"width": SIZE, "height": SIZE, "keep_orig": FLAG}
    if connector:
        fields["connector"] = typed(st.sampled_from(["image", "csv"]))
    return section(fields)


MLLIB_PREDICT = section(
    {
        "extract_layer": typed(st.sampled_from(["avgpool", "layer3", "layer4", "flatten", "last", "layer99", ""])),
        "gpu": FLAG,
        "gpuid": typed(st.one_of(SMALL_INT, st.lists(SMALL_INT, max_size=2))),
    }
)


def parameters(connector: bool, mllib: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return section({"input": input_section(connector)}, {"mllib": mllib, "output": section(OUTPUT_FIELDS)})


def data_items(world: dict[str, Any]) -> st.SearchStrategy[Any]:
    real = st.sampled_from(
        [*world["files"], *world["folders"], world["base64"], world["truncated"], world["data_root"] + "/../x.png"]
    )
    item = mostly(real, st.one_of(TEXT, st.sampled_from(["", "http://127.0.0.1:9/a.png", "/etc/passwd"]), ODD))
    return typed(mostly(st.lists(item, min_size=1, max_size=3), st.just([])))


def predict_bodies(world: dict[str, Any]) -> st.SearchStrategy[Any]:
    body = st.fixed_dictionaries(
        {
            "service": typed(mostly(st.sampled_from([EXTRACTOR, DETECTOR, EXTRACTOR.upper()]), st.just("nowhere"))),
            "data": data_items(world),
            "parameters": parameters(False, MLLIB_PREDICT),
        },
        optional={
            "index_uris": typed(st.lists(mostly(st.sampled_from(["sku-1", "sku-2"])), max_size=3)),
        },
    )
    return mostly(body)


MLLIB_CREATE = section(
    {
        "extract_layer": typed(st.sampled_from(["avgpool", "layer4", "layer99"])),
        "nclasses": typed(SMALL_INT),
        "gpu": FLAG,
        "gpuid": typed(SMALL_INT),
    },
    {
        "template": typed(
            mostly(
                st.sampled_from(["resnet18", "opencv:haarcascade_frontalface_default"]),
                st.sampled_from(["resnet5000", "opencv:nope", ""]),
            )
        ),
        # always given: without weights a service would download torchvision's (no network in a test)
        "weights": mostly(st.just("none"), st.sampled_from(["/no/such/weights.pth", "BOGUS", 5])),
    },
)


def service_bodies(world: dict[str, Any]) -> st.SearchStrategy[Any]:
    repository = st.sampled_from([world["data_root"] + "/repo", "/etc/simsearch-repo", "", "relative/repo"])
    body = st.fixed_dictionaries(
        {
            "mllib": typed(mostly(st.sampled_from(["torch", "TORCH"]), st.sampled_from(["caffe", "sklearn"]))),
            "parameters": parameters(True, MLLIB_CREATE),
        },
        optional={
            "description": typed(TEXT),
            "type": typed(mostly(st.sampled_from(["supervised", "unsupervised"]), st.just("semisupervised"))),
            "model": section({"repository": typed(repository), "templates": typed(TEXT)}),
        },
    )
    return mostly(body)


CROP = section(
    {
        "padding_ratio": typed(st.floats(min_value=-1, max_value=200)),
        "fixed_width": typed(st.one_of(SMALL_INT, HUGE)),
        "fixed_height": typed(st.one_of(SMALL_INT, HUGE)),
        "min_width": typed(SMALL_INT),
        "min_height": typed(SMALL_INT),
        "force_square": FLAG,
    }
)
ACTION = st.fixed_dictionaries(
    {"type": typed(mostly(st.sampled_from(["crop", "filter"]), st.just("rotate")))},
    optional={"parameters": st.one_of(CROP, section({"classes": typed(st.lists(typed(TEXT), max_size=2))}))},
)


def chain_bodies(world: dict[str, Any]) -> st.SearchStrategy[Any]:
    detector_call = st.fixed_dictionaries(
        {
            "service": typed(mostly(st.just(DETECTOR), st.sampled_from([EXTRACTOR, "nowhere"]))),
            "data": data_items(world),
        },
        optional={
            "index_uris": typed(st.lists(mostly(st.just("sku-1")), max_size=2)),
            "parameters": parameters(False, MLLIB_PREDICT),
            "id": typed(st.sampled_from(["detect", "crop"])),
        },
    )
    action_call = st.fixed_dictionaries(
        {"action": mostly(ACTION)}, optional={"id": typed(st.sampled_from(["crop", "detect"]))}
    )
    extractor_call = st.fixed_dictionaries(
        {"service": typed(mostly(st.just(EXTRACTOR), st.just(DETECTOR)))},
        optional={
            "parent_id": typed(st.sampled_from(["crop", "detect", "nowhere"])),
            "parameters": parameters(False, MLLIB_PREDICT),
        },
    )
    calls = st.integers(0, 4).flatmap(
        lambda i: [
            st.tuples(detector_call, action_call, extractor_call).map(list),
            st.tuples(detector_call, action_call, extractor_call).map(list),
            st.tuples(detector_call, extractor_call).map(list),
            st.tuples(detector_call).map(list),
            st.lists(st.one_of(detector_call, action_call, extractor_call, ODD), max_size=4),
        ][i]
    )
    spec = st.fixed_dictionaries({"calls": typed(calls)}, optional={"resource": typed(st.just("predict"))})
    return mostly(st.fixed_dictionaries({"chain": mostly(spec)}))


# ---- the invariants -----------------------------------------------------------------------------------


def _send(client: TestClient[Litestar], engine: Engine, method: str, path: str, body: Any) -> httpx.Response:
    """One request, and what must hold of its answer whatever the body."""
    before = table_counts(engine)
    response = client.request(method, path, content=_dumps(body), headers={"content-type": "application/json"})
    assert response.status_code < 500, f"{method} {path} {_dumps(body)[:1500]!r}: {response.text[:1500]}"
    answer = check_envelope(response)
    assert answer["status"]["code"] == response.status_code
    if 400 <= response.status_code < 500:
        assert table_counts(engine) == before, f"a refused request wrote: {_dumps(body)[:1500]!r}: {response.text}"
    return response


@pytest.fixture(scope="module")
def strategies(world: dict[str, Any]) -> dict[str, st.SearchStrategy[Any]]:
    return {"predict": predict_bodies(world), "service": service_bodies(world), "chain": chain_bodies(world)}


@FUZZ
@given(data=st.data())
def test_predict_bodies(
    data: st.DataObject, client: TestClient[Litestar], engine: Engine, strategies: dict[str, Any]
) -> None:
    _send(client, engine, "POST", "/predict", data.draw(strategies["predict"]))


@FUZZ
@given(data=st.data(), name=st.sampled_from(["fz_new", "FZ_New", EXTRACTOR, "bad name!", "n" * 101]))
def test_service_bodies(
    data: st.DataObject, name: str, client: TestClient[Litestar], engine: Engine, strategies: dict[str, Any]
) -> None:
    response = _send(client, engine, "PUT", f"/services/{name}", data.draw(strategies["service"]))
    if response.status_code == 201:  # made: gone again, so the next creation of that name is tried too
        assert client.delete(f"/services/{name}", params={"clear": "full"}).status_code == 200


@FUZZ
@given(data=st.data())
def test_chain_bodies(
    data: st.DataObject, client: TestClient[Litestar], engine: Engine, strategies: dict[str, Any]
) -> None:
    _send(client, engine, "PUT", "/chain/fuzz", data.draw(strategies["chain"]))


# What the fuzz found, pinned so that every run tries them whatever the generated examples are.
EMPTY_TEMPLATE = {"mllib": "torch", "parameters": {"mllib": {"template": "", "weights": "none"}}}
NUL_STORED = {"template": "resnet18", "weights": "none"}
FOUND = [
    pytest.param("PUT", "/services/fz_new", EMPTY_TEMPLATE, id="empty-template"),
    pytest.param("POST", "/predict", {"service": "\x00", "data": ["<file>"]}, id="nul-in-service-name"),
    pytest.param(
        "PUT",
        "/chain/fuzz",
        {"chain": {"calls": [{"service": DETECTOR, "data": ["<file>"]}, {"action": None}, {"service": EXTRACTOR}]}},
        id="chain-null-action",
    ),
    pytest.param(
        "PUT",
        "/services/fz_new",
        {"mllib": "torch", "parameters": {"mllib": NUL_STORED, "output": {"stray": "\x00"}}},
        id="nul-in-stored-parameters",
    ),
]


@pytest.mark.parametrize(("method", "path", "body"), FOUND)
def test_what_the_fuzz_found(
    client: TestClient[Litestar], engine: Engine, world: dict[str, Any], method: str, path: str, body: Any
) -> None:
    filled = json.loads(json.dumps(body).replace("<file>", world["files"][0]))
    response = _send(client, engine, method, path, filled)
    if response.status_code == 201:
        assert client.delete(path, params={"clear": "full"}).status_code == 200


def test_the_services_still_answer(client: TestClient[Litestar], world: dict[str, Any]) -> None:
    """After the fuzz (or alone), the server answers and the fixture's service still searches."""
    assert client.get("/info").status_code == 200
    found = client.post(
        "/predict",
        json={"service": EXTRACTOR, "data": world["files"][:1], "parameters": {"output": {"search": True}}},
    )
    assert found.status_code == 200, found.text
    assert found.json()["body"]["predictions"][0]["nns"]
