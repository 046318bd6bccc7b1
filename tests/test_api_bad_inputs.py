"""Bad inputs on both HTTP faces, in one table: each is a 4xx whose message names the field, and nothing
is written.

Every case runs against the real app, real Postgres and a real model (`weights none`). Before and after
each request the row count of every table and the file tree under the app's home (index files) and
its data root are compared: a refused request must leave all of them unchanged. The DeepDetect face
must answer with the status, `msg` and `dd_code` of the error table in ../shared/deepdetect-api.md; the
native face with RFC 9457 problem details whose `detail` and `field` name the field.

Strings `<name>` in a case's path, request and expected message are replaced by the fixture `world`'s
value of that name (a file path, base64 bytes, an image id...) when the case runs.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine, text
from tests.conftest import api_settings, draw_image, make_folder, table_counts, write_image
from tests.ddwire import DD_MSG_PREFIX, MSG, check_every_response

from simsearch.api import create_app
from simsearch.index.faiss_index import gpu_count

DD_SVC = "bad_dd"  # created on the DeepDetect face, 3 files indexed
NAT_SVC = "bad_native"  # created on the native face, 3 base64 images indexed with metadata, built once
EMPTY_SVC = "bad_empty"  # no vectors at all
DETACHED_SVC = "bad_detached"  # removed with clear=mem: its vectors stay for a re-creation with the same model
UNKNOWN = "no_such_service"
MISSING_ID = 987_654_321  # no image has this id

LIMIT_PIXELS = 5_000  # the drawn images are 96x128 = 12,288 pixels
LIMIT_ITEMS = 2
LIMIT_BYTES = 64 << 10

JSON_HEADERS = {"content-type": "application/json"}


def dd_service(library: Any = "torch", **changes: Any) -> dict[str, Any]:
    """A valid DeepDetect service body (resnet18, random weights, 64px); `library` is its `mllib`, keywords
    `input`, `mllib` and `output` replace `parameters.<section>`, any other keyword a top-level key."""
    body: dict[str, Any] = {
        "mllib": library,
        "description": "bad inputs",
        "parameters": {
            "input": {"connector": "image", "width": 64, "height": 64},
            "mllib": {"template": "resnet18", "weights": "none"},
            "output": {},
        },
    }
    for key, value in changes.items():
        if key in ("input", "mllib", "output"):
            body["parameters"][key] = value
        else:
            body[key] = value
    return body


def native_service(**changes: Any) -> dict[str, Any]:
    return {"name": "bad_new", "model": "resnet18", "weights": "none", "size": 64} | changes


def predict(service: Any = DD_SVC, data: Any = None, **output: Any) -> dict[str, Any]:
    """A /predict body on `service`; `output` is parameters.output (default: index)."""
    body: dict[str, Any] = {"service": service, "parameters": {"output": output or {"index": True}}}
    if data is not None:
        body["data"] = data
    return body


def items(*data: str, **extra: Any) -> dict[str, Any]:
    return {"items": [{"data": d} | extra for d in data]}


def _png(rgb: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return encoded.tobytes()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


# ---- the cases ------------------------------------------------------------------------------------
# pytest.param(method, path, request kwargs, expected status, expected dd_code (DeepDetect face; None
# where the contract has none, and on the native face), substring the message must contain (the field;
# None where the contract gives no message), or S(field, ...) where a case says more about the message)

P = pytest.param


@dataclass(frozen=True)
class S:
    """What a refusal's message says beyond naming `field`."""

    field: str | None
    starts: str | None = None  # DeepDetect: dd_msg starts with this
    words: tuple[str, ...] = ()  # in the message (dd_msg, or the native detail)
    exact: bool = False  # native: the problem's `field` is exactly `field`
    bare: bool = False  # DeepDetect: the status is exactly {code, msg}
    unknown_after: bool = False  # a refused DeepDetect creation: the name is still unknown afterwards


GOOD = "<good_b64>"  # a valid image that is not stored yet: writing it would change the counts
BAD, INPUT = DD_MSG_PREFIX[1006] + ": ", DD_MSG_PREFIX[1005] + ": "  # how dd_msg starts for 1006, 1005

# fmt: off
DD_CASES = [
    # -- PUT/POST /services/{name}
    P("PUT", f"/services/{UNKNOWN}", {"content": b"{not json", "headers": JSON_HEADERS}, 400, None, None,
      id="dd-create-not-json"),
    P("PUT", f"/services/{UNKNOWN}", {"json": [dd_service()]}, 400, 400,
      S("body", starts="body: ", unknown_after=True), id="dd-create-json-array"),
    P("PUT", f"/services/{UNKNOWN}", {"json": {"parameters": {}}}, 400, 400,
      S("mllib", starts="mllib: missing", unknown_after=True), id="dd-create-no-mllib"),
    P("PUT", f"/services/{UNKNOWN}", {"json": dd_service(library=7)}, 400, 400,
      S("mllib", starts="mllib: must be a string", unknown_after=True), id="dd-create-mllib-number"),
    P("PUT", f"/services/{UNKNOWN}", {"json": dd_service(library="caffe")}, 400, 1006,
      S("mllib: caffe", starts=f"{BAD}mllib: ", unknown_after=True),
      id="dd-create-mllib-caffe"),
    P("POST", f"/services/{UNKNOWN}", {"json": dd_service(library="sklearn")}, 404, 1000, "sklearn",
      id="dd-create-mllib-unknown"),
    P("PUT", f"/services/{UNKNOWN}", {"json": dd_service(description="nul\u0000here")}, 400, 1006, "description",
      id="dd-create-description-nul"),
    P("PUT", f"/services/{UNKNOWN}", {"json": dd_service(parameters=[])}, 400, 400,
      S("parameters", starts="parameters: must be an object", unknown_after=True),
      id="dd-create-parameters-list"),
    P("PUT", f"/services/{UNKNOWN}", {"json": dd_service(mllib={"weights": "none"})}, 400, 1006,
      S("parameters.mllib.template", starts=f"{BAD}parameters.mllib.template: missing", unknown_after=True),
      id="dd-create-no-template"),  # nothing to re-attach (the contract)
    P("PUT", f"/services/{UNKNOWN}", {"json": dd_service(mllib={"template": 18, "weights": "none"})}, 400, 400,
      "parameters.mllib.template", id="dd-create-template-number"),
    P("PUT", f"/services/{UNKNOWN}", {"json": dd_service(mllib={"template": "resnet999", "weights": "none"})},
      400, 1006, S("parameters.mllib.template", starts=f"{BAD}parameters.mllib.template: ", unknown_after=True),
      id="dd-create-unknown-template"),
    P("PUT", f"/services/{UNKNOWN}",
      {"json": dd_service(mllib={"template": "resnet18", "weights": "none", "extract_layer": "layer99"})},
      400, 1006,
      S("parameters.mllib.extract_layer", starts=f"{BAD}parameters.mllib.extract_layer: ", unknown_after=True),
      id="dd-create-unknown-extract-layer"),
    P("PUT", f"/services/{UNKNOWN}", {"json": dd_service(mllib={"template": "resnet18", "weights": "BOGUS"})},
      400, 1006, S("parameters.mllib.weights", starts=f"{BAD}parameters.mllib.weights: ", unknown_after=True),
      id="dd-create-unknown-weights"),
    P("PUT", f"/services/{UNKNOWN}",
      {"json": dd_service(mllib={"template": "resnet18", "weights": "/no/such/weights.pth"})},
      400, 1006, S("parameters.mllib.weights", starts=f"{BAD}parameters.mllib.weights: ", unknown_after=True),
      id="dd-create-missing-weights-file"),
    P("PUT", f"/services/{UNKNOWN}", {"json": dd_service(input={"connector": "csv"})}, 404, 1004,
      S("csv", starts="Input Connector Not Found: csv", unknown_after=True),
      id="dd-create-unknown-connector"),
    P("PUT", f"/services/{UNKNOWN}", {"json": dd_service(input={"width": 8, "height": 8})}, 400, 1005,
      S("parameters.input.width", starts=f"{INPUT}parameters.input.width: ", unknown_after=True),
      id="dd-create-size-too-small"),
    P("PUT", f"/services/{UNKNOWN}", {"json": dd_service(input={"width": 64, "height": 8})}, 400, 1005,
      S("parameters.input.height", starts=f"{INPUT}parameters.input.height: ", unknown_after=True),
      id="dd-create-height-too-small"),  # width x height may differ, not be tiny
    P("PUT", f"/services/{UNKNOWN}", {"json": dd_service(input={"width": "64"})}, 400, 400,
      S("parameters.input.width", starts="parameters.input.width: must be an integer", unknown_after=True),
      id="dd-create-width-string"),
    P("PUT", f"/services/{UNKNOWN}", {"json": dd_service(output={"index_type": "IVF-nonsense"})}, 400, 1006,
      S("parameters.output.index_type", starts=f"{BAD}parameters.output.index_type: ", unknown_after=True),
      id="dd-create-bad-index-type"),
    P("PUT", f"/services/{UNKNOWN}", {"json": dd_service(output={"metric": "manhattan"})}, 400, 1006,
      S("parameters.output.metric", starts=f"{BAD}parameters.output.metric: ", unknown_after=True),
      id="dd-create-bad-metric"),
    P("PUT", f"/services/{UNKNOWN}", {"json": dd_service(output={"index_backend": "hnswlib"})}, 400, 1006,
      S("parameters.output.index_backend", starts=f"{BAD}parameters.output.index_backend: ", unknown_after=True),
      id="dd-create-bad-backend"),
    P("PUT", f"/services/{UNKNOWN}", {"json": dd_service(output={"nprobe": -1})}, 400, 1006,
      "parameters.output.nprobe", id="dd-create-negative-nprobe"),
    P("PUT", f"/services/{UNKNOWN}", {"json": dd_service(type="semisupervised")}, 400, 1006,
      S("type", starts=f"{BAD}type: ", unknown_after=True),
      id="dd-create-bad-type"),
    P("PUT", "/services/bad!name", {"json": dd_service()}, 400, 1006, "name", id="dd-create-bad-name"),
    P("PUT", f"/services/{'n' * 101}", {"json": dd_service()}, 400, 1006, "name", id="dd-create-name-too-long"),
    P("PUT", f"/services/{DD_SVC}", {"json": dd_service()}, 409, 1014, DD_SVC, id="dd-create-duplicate"),
    P("PUT", f"/services/{DD_SVC.upper()}", {"json": dd_service()}, 409, 1014, DD_SVC,
      id="dd-create-duplicate-uppercase"),
    P("PUT", f"/services/{DETACHED_SVC}", {"json": dd_service(input={"width": 32, "height": 32})}, 409, 1014,
      "clear", id="dd-recreate-detached-other-model"),
    P("PUT", f"/services/{UNKNOWN}", {"json": dd_service(model={"repository": "/etc/simsearch-repo"})}, 400, 1006,
      S("model.repository", starts=f"{BAD}model.repository: ", unknown_after=True),
      id="dd-create-repository-outside-roots"),
    P("PUT", f"/services/{UNKNOWN}",
      {"json": dd_service(model={"repository": "<home>/new-repo"},
                          mllib={"template": "resnet999", "weights": "none"})},
      400, 1006, "parameters.mllib.template", id="dd-create-repository-then-bad-template"),
    P("PUT", f"/services/{UNKNOWN}", {"json": dd_service(library="foo")}, 404, 1000,
      S("foo", starts="Unknown Library: foo", unknown_after=True), id="dd-create-mllib-unknown-put"),
    P("PUT", f"/services/{UNKNOWN}", {"json": dd_service(library="tensorflow")}, 400, 1006,
      S("mllib", starts=f"{BAD}mllib: ", unknown_after=True), id="dd-create-mllib-tensorflow"),
    P("PUT", f"/services/{UNKNOWN}", {"json": dd_service(type=1)}, 400, 400,
      S("type", starts="type: must be a string", unknown_after=True), id="dd-create-type-number"),
    P("PUT", f"/services/{UNKNOWN}", {"json": dd_service(description=5)}, 400, 400,
      S("description", starts="description: ", unknown_after=True), id="dd-create-description-number"),
    P("PUT", f"/services/{UNKNOWN}", {"json": dd_service(input="x")}, 400, 400,
      S("parameters.input", starts="parameters.input: ", unknown_after=True), id="dd-create-input-string"),
    P("PUT", f"/services/{UNKNOWN}",
      {"json": dd_service(mllib={"template": "resnet18", "weights": "none", "gpu": "yes"})}, 400, 400,
      S("parameters.mllib.gpu", starts="parameters.mllib.gpu: must be a boolean", unknown_after=True),
      id="dd-create-gpu-string"),
    P("PUT", f"/services/{UNKNOWN}", {"json": dd_service(output={"nprobe": "x"})}, 400, 400,
      S("parameters.output.nprobe", starts="parameters.output.nprobe: must be an integer", unknown_after=True),
      id="dd-create-nprobe-string"),
    P("PUT", f"/services/{UNKNOWN}", {"json": dd_service(output={"index_type": 5})}, 400, 400,
      S("parameters.output.index_type", starts="parameters.output.index_type: must be a string",
        unknown_after=True), id="dd-create-index-type-number"),
    P("PUT", f"/services/{UNKNOWN}", {"json": dd_service(output={"search_nn": "2"})}, 400, 400,
      S("parameters.output.search_nn", starts="parameters.output.search_nn: ", unknown_after=True),
      id="dd-create-search-nn-string"),
    P("PUT", f"/services/{UNKNOWN}", {"json": dd_service(output={"index_gpu": 1})}, 400, 400,
      S("parameters.output.index_gpu", starts="parameters.output.index_gpu: ", unknown_after=True),
      id="dd-create-index-gpu-number"),
    P("PUT", f"/services/{UNKNOWN}", {"json": dd_service(output={"nprobe": 0})}, 400, 1006,
      S("parameters.output.nprobe", starts=f"{BAD}parameters.output.nprobe: ", unknown_after=True),
      id="dd-create-zero-nprobe"),
    P("PUT", f"/services/{UNKNOWN}", {"json": dd_service(output={"index_backend": "annoy", "n_trees": 0})}, 400,
      1006, S("parameters.output.n_trees", starts=f"{BAD}parameters.output.n_trees: ", unknown_after=True),
      id="dd-create-annoy-no-trees"),
    P("PUT", f"/services/{UNKNOWN}", {"json": dd_service(output={"search_nn": 0})}, 400, 1006,
      S("parameters.output.search_nn", starts=f"{BAD}parameters.output.search_nn: ", unknown_after=True),
      id="dd-create-zero-search-nn"),
    P("PUT", f"/services/{UNKNOWN}", {"json": dd_service(output={"rois": "rois"})}, 400, 1006,
      S("parameters.output.rois", starts=f"{BAD}parameters.output.rois: ", unknown_after=True),
      id="dd-create-rois-on-extractor"),
    P("PUT", f"/services/{UNKNOWN}", {"json": dd_service(model=[])}, 400, 400,
      S("model", starts="model: must be an object", unknown_after=True), id="dd-create-model-list"),
    P("PUT", f"/services/{UNKNOWN}", {"content": b"mllib=torch"}, 400, None, S(None, bare=True),
      id="dd-create-form-body"),
    P("POST", f"/services/{UNKNOWN}", {"content": b"\xff\xfe"}, 400, None, S(None, bare=True),
      id="dd-create-body-not-utf8"),
    # -- GET/DELETE /services/{name}
    P("GET", f"/services/{UNKNOWN}", {}, 404, 1002, UNKNOWN, id="dd-get-unknown-service"),
    P("DELETE", f"/services/{UNKNOWN}", {}, 404, None, None, id="dd-delete-unknown-service"),
    P("DELETE", f"/services/{DD_SVC}", {"params": {"clear": "bogus"}}, 400, 400, "clear", id="dd-delete-bad-clear"),
    # -- POST /predict: the body and the service
    P("POST", "/predict", {"content": b"data=1", "headers": JSON_HEADERS}, 400, None, None, id="dd-predict-not-json"),
    P("POST", "/predict", {"content": b'{"service": '}, 400, None, S(None, bare=True), id="dd-predict-cut-json"),
    P("POST", "/predict", {"content": b"service=x"}, 400, None, S(None, bare=True), id="dd-predict-form-body"),
    P("POST", "/predict", {"json": [predict(data=[GOOD])]}, 400, 400,
      S("body", starts="body: must be a JSON object"), id="dd-predict-json-array"),
    P("POST", "/predict", {"json": {"data": [GOOD], "parameters": {"output": {"index": True}}}}, 400, None,
      S(None, bare=True),
      id="dd-predict-no-service"),
    P("POST", "/predict", {"json": predict(service=5, data=[GOOD])}, 400, 400,
      S("service", starts="service: must be a string"),
      id="dd-predict-service-number"),
    P("POST", "/predict", {"json": predict(service=UNKNOWN, data=[GOOD])}, 404, 1002,
      S(UNKNOWN, starts="Service Not Found: "),
      id="dd-predict-unknown-service"),
    # -- data and index_uris
    P("POST", "/predict", {"json": predict(data=GOOD)}, 400, 400, S("data", starts="data: must be an array"),
      id="dd-data-string"),
    P("POST", "/predict", {"json": predict(data=[GOOD, 7])}, 400, 400, "data[1]", id="dd-data-number-item"),
    P("POST", "/predict", {"json": predict(data=[1])}, 400, 400, S("data[0]", starts="data[0]: must be a string"),
      id="dd-data-number-first"),
    P("POST", "/predict", {"json": predict(data=[])}, 400, 1005, S("data", starts=f"{INPUT}data: missing data"),
      id="dd-data-empty"),
    P("POST", "/predict", {"json": predict(search=True)}, 400, 1005, S("data", starts=f"{INPUT}data: missing data"),
      id="dd-data-missing"),
    P("POST", "/predict", {"json": predict(data=[""])}, 400, 1005, "data[0]", id="dd-data-empty-string"),
    P("POST", "/predict", {"json": predict(data=["<corrupt_b64>"])}, 400, 1005, "data[0]", id="dd-corrupt-base64"),
    P("POST", "/predict", {"json": predict(data=["<truncated_b64>"])}, 400, 1005, "data[0]",
      id="dd-truncated-png-base64"),
    P("POST", "/predict", {"json": predict(data=["<truncated>"])}, 400, 1005,
      S("data[0]", starts=f"{INPUT}data[0]: "), id="dd-truncated-png-file"),
    P("POST", "/predict", {"json": predict(data=["<empty>"])}, 400, 1005, "data[0]", id="dd-empty-file"),
    P("POST", "/predict", {"json": predict(data=["<notes>"])}, 400, 1005, S("data[0]", starts=f"{INPUT}data[0]: "),
      id="dd-text-file"),
    P("POST", "/predict", {"json": predict(data=["<data>/no-such-file.png"])}, 400, 1005, "data[0]",
      id="dd-missing-file"),
    P("POST", "/predict", {"json": predict(data=["<etc_passwd_traversal>"])}, 400, 1005, "data[0]",
      id="dd-traversal-etc-passwd"),
    P("POST", "/predict", {"json": predict(data=["<secret_traversal>"])}, 400, 1005,
      S("data[0]", starts=f"{INPUT}data[0]: "),
      id="dd-traversal-to-image"),
    P("POST", "/predict", {"json": predict(data=["<secret>"])}, 400, 1005,
      S("data[0]", starts=f"{INPUT}data[0]: <secret> is outside"), id="dd-absolute-outside"),
    P("POST", "/predict", {"json": predict(data=["<link>"])}, 400, 1005, S("data[0]", starts=f"{INPUT}data[0]: "),
      id="dd-symlink-outside"),
    P("POST", "/predict", {"json": predict(data=["<outside_dir>"])}, 400, 1005, "data[0]", id="dd-directory-outside"),
    P("POST", "/predict", {"json": predict(data=["file://<good0>"])}, 400, 1005,
      S("data[0]", starts=f"{INPUT}data[0]: file://"), id="dd-file-url"),
    P("POST", "/predict", {"json": predict(data=["http://example.org/cat.jpg"])}, 400, 1005,
      S("data[0]", starts=f"{INPUT}data[0]: URL fetching is disabled"),
      id="dd-http-url-disabled"),
    P("POST", "/predict", {"json": predict(data=["HTTPS://example.org/cat.jpg"])}, 400, 1005, "data[0]",
      id="dd-https-url-upper-disabled"),
    P("POST", "/predict", {"json": predict(data=[GOOD, "<corrupt_b64>"])}, 400, 1005,
      S("data[1]", starts=f"{INPUT}data[1]: "),
      id="dd-mixed-good-and-corrupt"),
    P("POST", "/predict", {"json": predict(data=[*(f"<good_b64_{i}>" for i in range(9)), "<truncated>"])},
      400, 1005, "data[9]", id="dd-mixed-second-batch-truncated"),
    P("POST", "/predict", {"json": predict(data=["<fresh>", "!!no such file!!"])}, 400, 1005,
      S("data[1]", starts=f"{INPUT}data[1]: Could not read image(s): !!no such file!!"),
      id="dd-unreadable-after-good"),
    P("POST", "/predict", {"json": predict(data=["<loop>"])}, 400, 1005, S("data[0]", words=("symlink loop",)),
      id="dd-symlink-loop"),
    P("POST", "/predict", {"json": predict(data=["<hdr_b64>"])}, 400, 1005,
      S("data[0]", words=("100000000 pixels",)), id="dd-header-too-many-pixels"),
    P("POST", "/predict", {"json": predict(data=[GOOD], index=True) | {"index_uris": "sku-1"}}, 400, 400,
      S("index_uris", starts="index_uris: must be an array"), id="dd-index-uris-string"),
    P("POST", "/predict", {"json": predict(data=[GOOD, "<good_b64_1>"]) | {"index_uris": ["sku-1"]}}, 400, 1005,
      S("index_uris", starts=f"{INPUT}index_uris: "), id="dd-index-uris-length"),
    P("POST", "/predict", {"json": predict(data=[GOOD], index=True) | {"index_uris": ["sku\u0000-1"]}}, 400, 1005,
      "index_uris[0]", id="dd-index-uris-nul"),
    # -- parameters
    P("POST", "/predict", {"json": predict(data=["<fresh>"]) | {"parameters": []}}, 400, 400,
      S("parameters", starts="parameters: must be an object"), id="dd-parameters-list"),
    P("POST", "/predict", {"json": predict(data=[GOOD]) | {"parameters": {"output": [1]}}}, 400, 400,
      S("parameters.output", starts="parameters.output: must be an object"), id="dd-output-list"),
    P("POST", "/predict", {"json": predict(data=[GOOD], index="yes")}, 400, 400,
      S("parameters.output.index", starts="parameters.output.index: must be a boolean"),
      id="dd-index-flag-string"),
    P("POST", "/predict", {"json": predict(data=[GOOD], index=1)}, 400, 400, S(None, starts="parameters.output.index"),
      id="dd-index-flag-number"),
    P("POST", "/predict", {"json": predict(data=["<fresh>"], search=1)}, 400, 400,
      S("parameters.output.search", starts="parameters.output.search: must be a boolean"),
      id="dd-search-flag-number"),
    P("POST", "/predict", {"json": predict(data=["<fresh>"], nprobe="x")}, 400, 400,
      S("parameters.output.nprobe", starts="parameters.output.nprobe: must be an integer"), id="dd-nprobe-string"),
    P("POST", "/predict", {"json": predict(data=["<fresh>"], confidence_threshold="x")}, 400, 400,
      S("parameters.output.confidence_threshold", starts="parameters.output.confidence_"),
      id="dd-threshold-string"),
    P("POST", "/predict",
      {"json": predict(data=["<fresh>"]) | {"parameters": {"output": {"index": True}, "input": {"width": "64"}}}},
      400, 400, S("parameters.input.width", starts="parameters.input.width: must be an integer"),
      id="dd-input-width-string"),
    P("POST", "/predict", {"json": predict(data=[GOOD], search=True, search_nn="5")}, 400, 400,
      S("parameters.output.search_nn", starts="parameters.output.search_nn: must be an"), id="dd-search-nn-string"),
    P("POST", "/predict", {"json": predict(data=[GOOD], search=True, search_nn=2.5)}, 400, 400,
      "parameters.output.search_nn", id="dd-search-nn-float"),
    P("POST", "/predict", {"json": predict(data=[GOOD], index=True, search=True, search_nn=-3)}, 400, 1006,
      S("parameters.output.search_nn", starts=f"{BAD}parameters.output.search_nn: "), id="dd-search-nn-negative"),
    P("POST", "/predict", {"json": predict(data=[GOOD], index=True, search=True, search_nn=0)}, 400, 1006,
      "parameters.output.search_nn", id="dd-search-nn-zero"),
    P("POST", "/predict", {"json": predict(data=[GOOD], index=True, best="1")}, 400, 400, "parameters.output.best",
      id="dd-best-string"),
    P("POST", "/predict", {"json": predict(data=[GOOD], index=True, binarized="true")}, 400, 400,
      S("parameters.output.binarized", starts="parameters.output.binarized: "), id="dd-binarized-string"),
    P("POST", "/predict", {"json": predict(data=[GOOD], index=True, rois="rois")}, 400, 1006,
      S("parameters.output.rois", starts=f"{BAD}parameters.output.rois: "), id="dd-rois-on-extractor"),
    P("POST", "/predict", {"json": predict(data=[GOOD], index=True, index_type="IVF-nonsense")}, 400, 1006,
      S("parameters.output.index_type", starts=f"{BAD}parameters.output.index_type: "), id="dd-index-bad-index-type"),
    P("POST", "/predict", {"json": predict(data=["<fresh>"], index=True, index_backend="hnswlib")}, 400, 1006,
      S("parameters.output.index_backend", starts=f"{BAD}parameters.output.index_backend: "),
      id="dd-index-bad-backend"),
    P("POST", "/predict", {"json": predict(data=["<fresh>"], index=True, index_type="HNSW32", ondisk=True)}, 400,
      1006, S("parameters.output.ondisk", starts=f"{BAD}parameters.output.ondisk: "),
      id="dd-index-ondisk-without-ivf"),
    P("POST", "/predict", {"json": predict(data=["<fresh>"], index=True, metric="cosine")}, 400, 1006,
      S("parameters.output.metric", starts=f"{BAD}parameters.output.metric: "), id="dd-index-metric-differs"),
    P("POST", "/predict", {"json": predict(data=["<fresh>"], search=True, multibox_rois=True)}, 400, 1006,
      S("parameters.output.multibox_rois", starts=f"{BAD}parameters.output.multibox_rois: "),
      id="dd-multibox-rois-on-extractor"),
    P("POST", "/predict", {"json": predict(data=["<fresh>"], search=True, multibox_roi=True)}, 400, 1006,
      S("parameters.output.multibox_rois", starts=f"{BAD}parameters.output.multibox_rois: "),
      id="dd-multibox-roi-on-extractor"),
    P("POST", "/predict", {"json": predict(data=[GOOD], index=True, nprobe=0)}, 400, 1006,
      S("parameters.output.nprobe", starts=f"{BAD}parameters.output.nprobe: "), id="dd-index-zero-nprobe"),
    P("POST", "/predict", {"json": predict(EMPTY_SVC, ["<corrupt_b64>"], index=True, index_type="IVF4,Flat")}, 400,
      1005, "data[0]", id="dd-index-settings-with-corrupt-image"),
    P("POST", "/predict",
      {"json": predict(EMPTY_SVC, ["<corrupt_b64>"]) | {"parameters": {"output": {"index": True},
                                                                      "mllib": {"extract_layer": "layer3"}}}},
      400, 1005, "data[0]", id="dd-first-layer-with-corrupt-image"),
    P("POST", "/predict", {"json": predict(build_index=True, index_type="Bogus")}, 400, 1006,
      "parameters.output.index_type", id="dd-build-bad-index-type"),
    P("POST", "/predict", {"json": predict(EMPTY_SVC, build_index=True)}, 400, 1006, EMPTY_SVC,
      id="dd-build-no-vectors"),
    P("POST", "/predict",
      {"json": predict(data=[GOOD], index=True) | {"parameters": {"output": {"index": True},
                                                                  "mllib": {"extract_layer": "layer99"}}}},
      400, 1006, S("parameters.mllib.extract_layer", starts=f"{BAD}parameters.mllib.extract_layer: "),
      id="dd-unknown-extract-layer"),
    P("POST", "/predict",
      {"json": predict(data=[GOOD], index=True) | {"parameters": {"output": {"index": True},
                                                                  "mllib": {"extract_layer": "layer3"}}}},
      400, 1006, S("parameters.mllib.extract_layer", starts=f"{BAD}parameters.mllib.extract_layer: "),
      id="dd-other-layer-wrong-dimension"),
    P("POST", "/predict",
      {"json": predict(data=[GOOD]) | {"parameters": {"output": {"index": True}, "mllib": {"extract_layer": 4}}}},
      400, 400, S("parameters.mllib.extract_layer", starts="parameters.mllib.extract_layer: must be a"),
      id="dd-extract-layer-number"),
    P("POST", "/predict",
      {"json": predict(data=[GOOD]) | {"parameters": {"output": {"index": True}, "input": {"width": 128}}}},
      400, 1005, S("parameters.input.width", starts=f"{INPUT}parameters.input.width: "), id="dd-input-width-differs"),
]

NATIVE_CASES = [
    # -- services
    P("POST", "/api/v1/services", {"content": b"{name: x", "headers": JSON_HEADERS}, 400, None, "body",
      id="native-create-not-json"),
    P("POST", "/api/v1/services", {"content": b"", "headers": JSON_HEADERS}, 400, None, "body",
      id="native-create-empty-body"),
    P("POST", "/api/v1/services", {"json": [native_service()]}, 400, None, "body", id="native-create-json-array"),
    P("POST", "/api/v1/services", {"json": {"model": "resnet18"}}, 400, None, S("name", words=("`name`",)),
      id="native-create-no-name"),
    P("POST", "/api/v1/services", {"json": {"name": "ok"}}, 400, None, S(None, words=("`model`",)),
      id="native-create-no-model"),
    P("POST", "/api/v1/services", {"content": b"[1, 2"}, 400, None, "body", id="native-create-cut-json"),
    P("POST", "/api/v1/services", {"content": b'"just a string"'}, 400, None, "body", id="native-create-json-string"),
    P("POST", "/api/v1/services", {"json": native_service(name="bad name!")}, 400, None, S("name", exact=True),
      id="native-create-bad-name"),
    P("POST", "/api/v1/services", {"json": native_service(name="")}, 400, None, S("name", exact=True),
      id="native-create-empty-name"),
    P("POST", "/api/v1/services", {"json": native_service(name=5)}, 400, None, S("name", exact=True),
      id="native-create-name-number"),
    P("POST", "/api/v1/services", {"json": native_service(name="n" * 101)}, 400, None, S("name", exact=True),
      id="native-create-name-too-long"),
    P("POST", "/api/v1/services", {"json": native_service(name=NAT_SVC)}, 409, None, NAT_SVC,
      id="native-create-duplicate"),
    P("POST", "/api/v1/services", {"json": native_service(name=DETACHED_SVC, size=32)}, 409, None, DETACHED_SVC,
      id="native-recreate-detached-other-model"),
    P("POST", "/api/v1/services", {"json": native_service(model="resnet999")}, 400, None, S("model", exact=True),
      id="native-create-unknown-model"),
    P("POST", "/api/v1/services", {"json": native_service(layer="layer99")}, 400, None, S("layer", exact=True),
      id="native-create-unknown-layer"),
    P("POST", "/api/v1/services", {"json": native_service(weights="/no/such/weights.pth")}, 400, None, "weights",
      id="native-create-missing-weights-file"),
    P("POST", "/api/v1/services", {"json": native_service(weights="NOPE")}, 400, None, S("weights", exact=True),
      id="native-create-unknown-weights"),
    P("POST", "/api/v1/services", {"json": native_service(metric="manhattan")}, 400, None, S("metric", exact=True),
      id="native-create-bad-metric"),
    P("POST", "/api/v1/services", {"json": native_service(size=8)}, 400, None, S("size", exact=True),
      id="native-create-size-small"),
    P("POST", "/api/v1/services", {"json": native_service(size=100_000)}, 400, None, "size",
      id="native-create-size-large"),
    P("POST", "/api/v1/services", {"json": native_service(name="bad_size_string", size="64")}, 400, None,
      "size", id="native-create-size-string"),
    P("POST", "/api/v1/services", {"json": native_service(index_type="IVF-nonsense")}, 400, None,
      S("index_type", exact=True),
      id="native-create-bad-index-type"),
    P("POST", "/api/v1/services", {"json": native_service(nprobe=0)}, 400, None, S("nprobe", exact=True),
      id="native-create-zero-nprobe"),
    P("POST", "/api/v1/services", {"json": native_service(index_gpu=True)}, 400, None, S("index_gpu", exact=True),
      id="native-create-index-gpu", marks=pytest.mark.skipif(gpu_count() > 0, reason="a GPU is present")),
    P("POST", "/api/v1/services", {"json": native_service(colour="red")}, 400, None, S("colour", words=("`colour`",)),
      id="native-create-unknown-key"),
    P("POST", "/api/v1/services", {"json": native_service(description="a\x00b")}, 400, None,
      S("description", exact=True), id="native-create-description-nul"),
    P("GET", f"/api/v1/services/{UNKNOWN}", {}, 404, None, UNKNOWN, id="native-get-unknown-service"),
    P("DELETE", f"/api/v1/services/{UNKNOWN}", {}, 404, None, UNKNOWN, id="native-delete-unknown-service"),
    # -- index (JSON)
    P("POST", f"/api/v1/services/{UNKNOWN}/images", {"json": items(GOOD)}, 404, None, UNKNOWN,
      id="native-index-unknown-service"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images", {"content": b"items", "headers": JSON_HEADERS}, 400, None,
      "body", id="native-index-not-json"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images", {"json": [{"data": GOOD}]}, 400, None, "body",
      id="native-index-json-array"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images", {"json": {}}, 400, None, "items", id="native-index-no-items"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images", {"json": {"items": []}}, 400, None, "items",
      id="native-index-empty-items"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images", {"json": {"items": {"data": GOOD}}}, 400, None, "items",
      id="native-index-items-object"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images", {"json": {"items": [{"uri": "x"}]}}, 400, None, "items[0]",
      id="native-index-item-no-data"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images", {"json": {"items": [{"data": 5}]}}, 400, None, "data",
      id="native-index-data-number"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images", {"json": items(GOOD, metadata=["cat"])}, 400, None, "metadata",
      id="native-index-metadata-list"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images", {"json": items(GOOD, uri="")}, 400, None, "uri",
      id="native-index-empty-uri"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images", {"json": items("<corrupt_b64>")}, 400, None, "data[0]",
      id="native-index-corrupt-base64"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images", {"json": items("<truncated_b64>")}, 400, None, "data[0]",
      id="native-index-truncated-png"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images", {"json": items("<empty>")}, 400, None, "data[0]",
      id="native-index-empty-file"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images", {"json": items("<etc_passwd_traversal>")}, 400, None,
      "data[0]", id="native-index-traversal"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images", {"json": items("<secret>")}, 400, None, "data[0]",
      id="native-index-absolute-outside"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images", {"json": items("<link>")}, 400, None, "data[0]",
      id="native-index-symlink-outside"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images", {"json": items("<loop>")}, 400, None,
      S("data[0]", words=("symlink loop",)), id="native-index-symlink-loop"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images", {"json": items("<hdr_b64>")}, 400, None,
      S("data[0]", words=("100000000 pixels",), exact=True), id="native-index-header-too-many-pixels"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images", {"json": items("<outside_dir>")}, 400, None, "data[0]",
      id="native-index-directory-outside"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images", {"json": items("file://<good0>")}, 400, None, "data[0]",
      id="native-index-file-url"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images", {"json": items("https://example.org/a.png")}, 400, None,
      "data[0]", id="native-index-url-disabled"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images", {"json": items(GOOD, "<notes>")}, 400, None, "data[1]",
      id="native-index-mixed-good-and-text"),
    # -- index (multipart upload)
    P("POST", f"/api/v1/services/{UNKNOWN}/images/upload", {"files": {"files": ("a.png", "<good_png>")}}, 404,
      None, UNKNOWN, id="native-upload-unknown-service"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images/upload", {"files": {"files": ("empty.png", b"")}}, 400, None,
      "files[0]", id="native-upload-empty-file"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images/upload", {"files": {"files": ("t.png", "<truncated_png>")}}, 400,
      None, "files[0]", id="native-upload-truncated-png"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images/upload",
      {"files": [("files", ("a.png", "<good_png>")), ("files", ("b.bin", "<corrupt_bytes>"))]}, 400, None,
      "files[1]", id="native-upload-mixed-good-and-corrupt"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images/upload",
      {"files": {"files": ("a.png", "<good_png>")}, "data": {"items": "[{"}}, 400, None, "items",
      id="native-upload-items-not-json"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images/upload",
      {"files": {"files": ("a.png", "<good_png>")}, "data": {"items": "[{}, {}]"}}, 400, None, "items",
      id="native-upload-items-length"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images/upload", {"data": {"items": "[]"}, "files": {"x": ("a", b"1")}},
      400, None, "files", id="native-upload-no-files"),
    # -- search
    P("POST", f"/api/v1/services/{UNKNOWN}/search", {"json": {"image_id": 1}}, 404, None, UNKNOWN,
      id="native-search-unknown-service"),
    P("POST", f"/api/v1/services/{NAT_SVC}/search", {"content": b"k=3", "headers": JSON_HEADERS}, 400, None,
      "body", id="native-search-not-json"),
    P("POST", f"/api/v1/services/{NAT_SVC}/search", {"json": [{"image_id": "<image_id>"}]}, 400, None, "body",
      id="native-search-json-array"),
    P("POST", f"/api/v1/services/{NAT_SVC}/search", {"json": {"k": 3}}, 400, None, "query",
      id="native-search-no-query"),
    P("POST", f"/api/v1/services/{NAT_SVC}/search", {"json": {"image_id": "<image_id>", "vector": [0.5] * 512}},
      400, None, "query", id="native-search-two-queries"),
    P("POST", f"/api/v1/services/{NAT_SVC}/search", {"json": {"image_id": "<image_id>", "k": "5"}}, 400, None, "k",
      id="native-search-k-string"),
    P("POST", f"/api/v1/services/{NAT_SVC}/search", {"json": {"image_id": "<image_id>", "k": 0}}, 400, None, "k",
      id="native-search-k-zero"),
    P("POST", f"/api/v1/services/{NAT_SVC}/search", {"json": {"image_id": "<image_id>", "k": -2}}, 400, None, "k",
      id="native-search-k-negative"),
    P("POST", f"/api/v1/services/{NAT_SVC}/search", {"json": {"image_id": "<image_id>", "k": 1_000_000}}, 400,
      None, "k", id="native-search-k-too-large"),
    P("POST", f"/api/v1/services/{NAT_SVC}/search", {"json": {"image_id": "<image_id>", "filter": ["cat"]}}, 400,
      None, "filter", id="native-search-filter-list"),
    P("POST", f"/api/v1/services/{NAT_SVC}/search", {"json": {"image_id": "<image_id>", "nprobe": 0}}, 400, None,
      "nprobe", id="native-search-zero-nprobe"),
    P("POST", f"/api/v1/services/{NAT_SVC}/search", {"json": {"image_id": MISSING_ID}}, 404, None, str(MISSING_ID),
      id="native-search-unknown-image-id"),
    P("POST", f"/api/v1/services/{NAT_SVC}/search", {"json": {"image_id": 0}}, 400, None, "image_id",
      id="native-search-image-id-zero"),
    P("POST", f"/api/v1/services/{NAT_SVC}/search", {"json": {"image_id": 2**64}}, 400, None, "image_id",
      id="native-search-image-id-overflow"),
    P("POST", f"/api/v1/services/{NAT_SVC}/search", {"json": {"image_id": "<dd_image_id>"}}, 404, None,
      "<dd_image_id>", id="native-search-image-of-other-service"),
    P("POST", f"/api/v1/services/{NAT_SVC}/search", {"json": {"vector": [0.1, 0.2, 0.3]}}, 400, None, "vector",
      id="native-search-vector-dimension"),
    P("POST", f"/api/v1/services/{NAT_SVC}/search", {"json": {"vector": []}}, 400, None, "vector",
      id="native-search-vector-empty"),
    P("POST", f"/api/v1/services/{NAT_SVC}/search", {"json": {"vector": ["a"] * 512}}, 400, None, "vector",
      id="native-search-vector-strings"),
    P("POST", f"/api/v1/services/{NAT_SVC}/search", {"json": {"image": "<corrupt_b64>"}}, 400, None, "image",
      id="native-search-corrupt-image"),
    P("POST", f"/api/v1/services/{NAT_SVC}/search", {"json": {"image": "<secret>"}}, 400, None, "image",
      id="native-search-image-outside-roots"),
    P("POST", f"/api/v1/services/{UNKNOWN}/search/upload", {"files": {"file": ("a.png", "<good_png>")}}, 404, None,
      UNKNOWN, id="native-search-upload-unknown-service"),
    P("POST", f"/api/v1/services/{NAT_SVC}/search/upload",
      {"files": {"file": ("a.png", "<good_png>")}, "data": {"k": "0"}}, 400, None, "k",
      id="native-search-upload-k-zero"),
    P("POST", f"/api/v1/services/{NAT_SVC}/search/upload", {"files": {"file": ("e.png", b"")}}, 400, None, "file",
      id="native-search-upload-empty-file"),
    P("POST", f"/api/v1/services/{NAT_SVC}/search/upload",
      {"files": {"file": ("a.png", "<good_png>")}, "data": {"filter": "[1]"}}, 400, None, "filter",
      id="native-search-upload-filter-list"),
    # -- builds
    P("POST", f"/api/v1/services/{UNKNOWN}/builds", {}, 404, None, UNKNOWN, id="native-build-unknown-service"),
    P("GET", f"/api/v1/services/{UNKNOWN}/builds", {}, 404, None, UNKNOWN, id="native-list-builds-unknown-service"),
    P("POST", f"/api/v1/services/{NAT_SVC}/builds", {"json": {"index_type": "Bogus"}}, 400, None, "index_type",
      id="native-build-bad-index-type"),
    P("POST", f"/api/v1/services/{NAT_SVC}/builds", {"json": {"index_type": ""}}, 400, None, "index_type",
      id="native-build-empty-index-type"),
    P("POST", f"/api/v1/services/{EMPTY_SVC}/builds", {}, 400, None, "service", id="native-build-no-vectors"),
    # -- images
    P("GET", f"/api/v1/images/{MISSING_ID}", {}, 404, None, str(MISSING_ID), id="native-get-unknown-image"),
    P("PATCH", f"/api/v1/images/{MISSING_ID}", {"json": {"metadata": {"a": 1}}}, 404, None, str(MISSING_ID),
      id="native-patch-unknown-image"),
    P("DELETE", f"/api/v1/images/{MISSING_ID}", {}, 404, None, str(MISSING_ID), id="native-delete-unknown-image"),
    P("GET", f"/api/v1/images/{2**63}", {}, 400, None, "image_id", id="native-get-image-id-overflow"),
    P("DELETE", f"/api/v1/images/{2**63}", {}, 400, None, "image_id", id="native-delete-image-id-overflow"),
    P("PATCH", "/api/v1/images/<image_id>", {"json": {"metadata": {"a": 1}, "colour": "red"}}, 400, None, "colour",
      id="native-patch-unknown-key"),
    P("PATCH", "/api/v1/images/<image_id>", {"json": {"metadata": ["cat"]}}, 400, None, "metadata",
      id="native-patch-metadata-list"),
    P("PATCH", "/api/v1/images/<image_id>", {"json": {"replace": True}}, 400, None, "metadata",
      id="native-patch-no-metadata"),
    P("GET", "/api/v1/images", {"params": {"service": UNKNOWN}}, 404, None, UNKNOWN,
      id="native-list-images-unknown-service"),
    P("GET", "/api/v1/images", {"params": {"cursor": "abc"}}, 400, None, S("cursor", exact=True),
      id="native-list-bad-cursor"),
    P("GET", "/api/v1/images", {"params": {"cursor": "-5"}}, 400, None, S("cursor", exact=True),
      id="native-list-negative-cursor"),
    P("GET", "/api/v1/images", {"params": {"cursor": "²"}}, 400, None, S("cursor", exact=True),
      id="native-list-superscript-cursor"),
    P("GET", "/api/v1/images", {"params": {"cursor": "9" * 30}}, 400, None, S("cursor", exact=True),
      id="native-list-huge-cursor"),
    P("GET", "/api/v1/images", {"params": {"limit": 0}}, 400, None, S("limit", exact=True),
      id="native-list-limit-zero"),
    P("GET", "/api/v1/images", {"params": {"limit": 5000}}, 400, None, "limit", id="native-list-limit-too-large"),
    P("GET", "/api/v1/images", {"params": {"limit": 1001}}, 400, None, S("limit", exact=True),
      id="native-list-limit-just-too-large"),
    P("GET", "/api/v1/images", {"params": {"limit": "ten"}}, 400, None, S("limit", exact=True),
      id="native-list-limit-string"),
]

URL_CASES = [  # URL fetching on, private addresses off
    P("POST", "/predict", {"json": predict(data=["http://127.0.0.1:9/cat.png"])}, 400, 1005, "data[0]",
      id="dd-url-loopback"),
    P("POST", "/predict", {"json": predict(data=["http://localhost:9/cat.png"])}, 400, 1005, "data[0]",
      id="dd-url-localhost"),
    P("POST", "/predict", {"json": predict(data=["http://169.254.169.254/latest/meta-data"])}, 400, 1005, "data[0]",
      id="dd-url-link-local"),
    P("POST", "/predict", {"json": predict(data=["http://[::ffff:127.0.0.1]:9/cat.png"])}, 400, 1005, "data[0]",
      id="dd-url-ipv4-mapped-loopback"),
    P("POST", "/predict", {"json": predict(data=[GOOD, "http://10.0.0.1/cat.png"])}, 400, 1005, "data[1]",
      id="dd-url-private-after-good"),
    P("POST", "/predict", {"json": predict(data=["file://<good0>"])}, 400, 1005, "data[0]",
      id="dd-url-file-still-refused"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images", {"json": items("http://127.0.0.1:9/cat.png")}, 400, None,
      "data[0]", id="native-url-loopback"),
    P("POST", f"/api/v1/services/{NAT_SVC}/search", {"json": {"image": "http://127.0.0.1:9/cat.png"}}, 400, None,
      "image", id="native-search-url-loopback"),
]

LIMIT_CASES = [  # max_pixels, max_items and max_request_bytes small
    P("POST", "/predict", {"json": predict(data=[GOOD])}, 400, 1005, "data[0]", id="dd-too-many-pixels"),
    P("POST", "/predict", {"json": predict(data=["<good0>", "<good1>", "<good2>"])}, 400, 1005, "data",
      id="dd-too-many-items"),
    P("POST", "/predict", {"json": predict(data=["<big_b64>"])}, 413, None, None, id="dd-body-too-large"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images", {"json": items(GOOD)}, 400, None, "data[0]",
      id="native-too-many-pixels"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images", {"json": items("<good0>", "<good1>", "<good2>")}, 400, None,
      "items", id="native-too-many-items"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images/upload",
      {"files": [("files", (f"{i}.png", f"<small_png_{i}>")) for i in range(3)]}, 400, None, "files",
      id="native-upload-too-many-files"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images", {"json": items("<big_b64>")}, 413, None, None,
      id="native-body-too-large"),
    P("POST", f"/api/v1/services/{NAT_SVC}/images/upload", {"files": {"files": ("big.png", "<big_bytes>")}}, 413,
      None, None, id="native-upload-too-large"),
    P("POST", f"/api/v1/services/{NAT_SVC}/search", {"json": {"image": GOOD}}, 400, None, "image",
      id="native-search-too-many-pixels"),
]
# fmt: on


# ---- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(
    client: TestClient[Litestar],
    engine: Engine,
    api_data: Path,
    api_home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """Three services with a few images, files good and bad in the data root and outside it; the values
    the cases' `<name>` placeholders stand for."""
    outside = tmp_path_factory.mktemp("outside")
    secret = write_image(outside / "secret.png", draw_image(900))
    outside_dir = outside / "photos"
    make_folder(outside_dir, 2, start=910)
    good = make_folder(api_data / "good", 3, start=100)
    png = _png(draw_image(7))
    truncated = png[: len(png) // 2]
    (api_data / "truncated.png").write_bytes(truncated)
    (api_data / "empty.png").write_bytes(b"")
    (api_data / "notes.txt").write_text("not an image\n")
    (api_data / "link.png").symlink_to(secret)
    (api_data / "loop").symlink_to("loop")  # a link to itself
    fresh = write_image(api_data / "fresh.png", draw_image(302))  # a good file never stored
    # a Radiance header claiming 10000 x 10000 pixels, sent before any pixel data
    hdr = b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 10000 +X 10000\n" + b"\2\2\x27\x10" + b"\x80\x00" * 64
    corrupt = b"these bytes are no image at all, whatever the base64 says \x00\x01\x02" * 4

    response = client.put(f"/services/{DD_SVC}", json=dd_service())
    assert response.status_code == 201, response.text
    response = client.post("/predict", json=predict(data=[str(p) for p in good]))
    assert response.status_code == 200, response.text
    response = client.put(f"/services/{EMPTY_SVC}", json=dd_service())
    assert response.status_code == 201, response.text
    response = client.put(f"/services/{DETACHED_SVC}", json=dd_service())
    assert response.status_code == 201, response.text
    response = client.post("/predict", json=predict(DETACHED_SVC, data=[_b64(_png(draw_image(600)))]))
    assert response.status_code == 200, response.text
    response = client.delete(f"/services/{DETACHED_SVC}", params={"clear": "mem"})
    assert response.status_code == 200, response.text
    response = client.post("/api/v1/services", json=native_service(name=NAT_SVC))
    assert response.status_code == 201, response.text
    stored = [
        {"data": _b64(_png(draw_image(200 + i))), "uri": f"native-{i}", "metadata": {"label": "cat"}} for i in range(3)
    ]
    response = client.post(f"/api/v1/services/{NAT_SVC}/images", json={"items": stored})
    assert response.status_code == 201, response.text
    image_id = response.json()["images"][0]["id"]
    response = client.get("/api/v1/images", params={"service": DD_SVC})
    assert response.status_code == 200, response.text
    dd_image_id = response.json()["items"][0]["id"]
    response = client.post(f"/api/v1/services/{NAT_SVC}/builds")
    assert response.status_code == 201, response.text
    assert table_counts(engine)["embedding"] == 7
    assert any((api_home / "indexes").rglob("*.faiss"))

    big = os.urandom(LIMIT_BYTES * 2)
    values: dict[str, Any] = {
        "data": str(api_data),
        "home": str(api_home),
        "good0": str(good[0]),
        "good1": str(good[1]),
        "good2": str(good[2]),
        "good_b64": _b64(_png(draw_image(300))),
        "good_png": _png(draw_image(301)),
        "corrupt_b64": _b64(corrupt),
        "corrupt_bytes": corrupt,
        "truncated": str(api_data / "truncated.png"),
        "truncated_b64": _b64(truncated),
        "truncated_png": truncated,
        "empty": str(api_data / "empty.png"),
        "notes": str(api_data / "notes.txt"),
        "link": str(api_data / "link.png"),
        "loop": str(api_data / "loop"),
        "fresh": str(fresh),
        "hdr_b64": _b64(hdr),
        "secret": str(secret),
        "secret_traversal": f"{api_data}/../{outside.name}/secret.png",
        "etc_passwd_traversal": str(api_data) + "/.." * 40 + "/etc/passwd",
        "outside_dir": str(outside_dir),
        "image_id": image_id,
        "dd_image_id": dd_image_id,
        "big_b64": _b64(big),
        "big_bytes": big,
    }
    for i in range(10):
        values[f"good_b64_{i}"] = _b64(_png(draw_image(400 + i)))
        values[f"small_png_{i}"] = _png(draw_image(500 + i, size=(32, 32)))
    return values


@pytest.fixture(scope="module")
def url_client(engine: Engine, api_home: Path, api_data: Path, world: dict[str, Any]) -> Iterator[TestClient[Litestar]]:
    """A second app on the same database that fetches URLs but may not reach private addresses."""
    app = create_app(api_settings(api_home, api_data, allow_urls=True), engine=engine)
    with TestClient(app) as test_client:
        yield check_every_response(test_client)


@pytest.fixture(scope="module")
def limits_client(
    engine: Engine, api_home: Path, api_data: Path, world: dict[str, Any]
) -> Iterator[TestClient[Litestar]]:
    """A second app with small limits: pixels per image, items per call, bytes per request."""
    settings = api_settings(
        api_home, api_data, max_pixels=LIMIT_PIXELS, max_items=LIMIT_ITEMS, max_request_bytes=LIMIT_BYTES
    )
    with TestClient(create_app(settings, engine=engine)) as test_client:
        yield check_every_response(test_client)


# ---- running a case ------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"<([a-z0-9_]+)>")


def _fill(value: Any, world: dict[str, Any]) -> Any:
    """`value` with each `<name>` replaced by world[name]; a string that is only a placeholder becomes
    the value itself (bytes, an int)."""
    if isinstance(value, str):
        whole = _PLACEHOLDER.fullmatch(value)
        if whole:
            return world[whole.group(1)]
        return _PLACEHOLDER.sub(lambda m: str(world[m.group(1)]), value)
    if isinstance(value, dict):
        return {k: _fill(v, world) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, world) for v in value]
    if isinstance(value, tuple):
        return tuple(_fill(v, world) for v in value)
    return value


def _filled(text: str | None, world: dict[str, Any]) -> str | None:
    """An expected message part with its placeholders filled (an image id becomes its digits)."""
    return None if text is None else str(_fill(text, world))


_ROWS = {  # what a refused request must not change, beyond the row counts
    "service": "SELECT * FROM service ORDER BY id",
    "image": "SELECT id, uri, sha256, width, height, metadata FROM image ORDER BY id",
    "embedding": "SELECT id, service_id, image_id, roi_id, vector::text FROM embedding ORDER BY id",
    "index_build": "SELECT id, service_id, status, index_type, path FROM index_build ORDER BY id",
}


def _rows(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as conn:
        return {table: [tuple(row) for row in conn.execute(text(query))] for table, query in _ROWS.items()}


def _tree(folder: Path) -> set[str]:
    """Every file and folder under `folder` (symlinks not followed), with file sizes."""
    found = set()
    for parent, dirs, files in os.walk(folder):
        for name in dirs:
            found.add(os.path.relpath(os.path.join(parent, name), folder) + "/")
        for name in files:
            path = os.path.join(parent, name)
            found.add(f"{os.path.relpath(path, folder)} {os.lstat(path).st_size}")
    return found


def _state(engine: Engine, folders: tuple[Path, Path]) -> dict[str, Any]:
    """What a refused request must leave as it was: rows (counted and read) and files (index files under the
    home, and the data root)."""
    return {
        "row counts": table_counts(engine),
        "rows": _rows(engine),
        "home": _tree(folders[0]),
        "data root": _tree(folders[1]),
    }


def _check_deepdetect(response: Any, status: int, dd_code: int | None, says: S) -> None:
    answer = response.json()
    assert set(answer) == {"status"}, answer
    st = answer["status"]
    assert st["code"] == status
    assert st["msg"] == MSG[status]
    assert st.get("dd_code") == dd_code, st
    if says.bare:
        assert st == {"code": status, "msg": MSG[status]}, st
    if says.starts is not None:
        assert st["dd_msg"].startswith(says.starts), st
    for word in says.words:
        assert word in st["dd_msg"], st
    if says.field is None:
        return
    field, message = says.field, st["dd_msg"]
    assert field in message, f"{field!r} not named in {message!r}"
    if dd_code in DD_MSG_PREFIX:
        assert message.startswith(DD_MSG_PREFIX[dd_code]), message
    assert len(message) > len(field) + 10, f"no reason given: {message!r}"


def _check_native(response: Any, status: int, says: S) -> None:
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status
    assert problem["title"]
    for word in says.words:
        assert word in problem["detail"], problem
    if says.field is None:
        return
    field = says.field
    assert field in problem["detail"], f"{field!r} not named in {problem['detail']!r}"
    if says.exact:
        assert problem.get("field") == field, problem
    if status == 400:
        assert "field" in problem, problem
        assert field in problem["field"] or problem["field"] in field, problem


def _run_case(
    client: TestClient[Litestar],
    engine: Engine,
    world: dict[str, Any],
    folders: tuple[Path, Path],
    case: tuple[str, str, dict[str, Any], int, int | None, str | S | None],
) -> None:
    method, path, kwargs, status, dd_code, field = case
    says = field if isinstance(field, S) else S(field)
    says = replace(says, field=_filled(says.field, world), starts=_filled(says.starts, world))
    before = _state(engine, folders)
    response = client.request(method, _fill(path, world), **_fill(kwargs, world))
    after = _state(engine, folders)
    assert response.status_code == status, response.text
    if path.startswith("/api/"):
        _check_native(response, status, says)
    else:
        _check_deepdetect(response, status, dd_code, says)
    changed = [part for part in before if before[part] != after[part]]
    assert not changed, f"a refused request wrote something: {', '.join(changed)} changed"
    if says.unknown_after:  # nor does the face hold on to the refused service
        unknown = client.get(_fill(path, world)).json()["status"]
        assert (unknown["code"], unknown.get("dd_code")) == (404, 1002), unknown
        assert unknown["dd_msg"].startswith("Service Not Found: "), unknown


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "dd_code", "field"), DD_CASES + NATIVE_CASES)
def test_bad_input(
    client: TestClient[Litestar],
    engine: Engine,
    world: dict[str, Any],
    api_home: Path,
    api_data: Path,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    dd_code: int | None,
    field: str | S | None,
) -> None:
    _run_case(client, engine, world, (api_home, api_data), (method, path, kwargs, status, dd_code, field))


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "dd_code", "field"), URL_CASES)
def test_bad_url(
    url_client: TestClient[Litestar],
    engine: Engine,
    world: dict[str, Any],
    api_home: Path,
    api_data: Path,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    dd_code: int | None,
    field: str | S | None,
) -> None:
    _run_case(url_client, engine, world, (api_home, api_data), (method, path, kwargs, status, dd_code, field))


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "dd_code", "field"), LIMIT_CASES)
def test_over_limit(
    limits_client: TestClient[Litestar],
    engine: Engine,
    world: dict[str, Any],
    api_home: Path,
    api_data: Path,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    dd_code: int | None,
    field: str | S | None,
) -> None:
    _run_case(limits_client, engine, world, (api_home, api_data), (method, path, kwargs, status, dd_code, field))


def test_cases_are_many_and_cover_both_faces() -> None:
    cases = DD_CASES + NATIVE_CASES + URL_CASES + LIMIT_CASES
    assert len(cases) >= 40
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids))
    assert sum(c.values[1].startswith("/api/") for c in cases) >= 20
    assert sum(not c.values[1].startswith("/api/") for c in cases) >= 20


def test_services_still_answer_after_the_bad_inputs(client: TestClient[Litestar], world: dict[str, Any]) -> None:
    """Nothing above broke the services: each still finds its own stored images."""
    response = client.post("/predict", json=predict(data=[world["good0"]], search=True, search_nn=3))
    assert response.status_code == 200, response.text
    nns = response.json()["body"]["predictions"][0]["nns"]
    assert [n["uri"] for n in nns][:1] == [world["good0"]]
    assert len(nns) == 3
    response = client.post(f"/api/v1/services/{NAT_SVC}/search", json={"image_id": world["image_id"], "k": 5})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["image_id"] for r in results][:1] == [world["image_id"]]
    assert len(results) == 3


def test_a_refused_first_index_leaves_the_layer_and_a_good_one_records_it(
    client: TestClient[Litestar], world: dict[str, Any]
) -> None:
    """The layer of a service's first index call is recorded with its vectors, not before the data is read."""
    name = "bad_layer"
    assert client.put(f"/services/{name}", json=dd_service()).status_code == 201
    layer3 = {"mllib": {"extract_layer": "layer3"}, "output": {"index": True}}
    refused = client.post("/predict", json={"service": name, "data": [world["corrupt_b64"]], "parameters": layer3})
    assert refused.status_code == 400, refused.text
    assert client.get(f"/services/{name}").json()["body"]["index"]["dimension"] == 512
    indexed = client.post("/predict", json={"service": name, "data": [world["good_b64"]], "parameters": layer3})
    assert indexed.status_code == 200, indexed.text
    assert len(indexed.json()["body"]["predictions"][0]["vals"]) == 256
    info = client.get(f"/services/{name}").json()["body"]["index"]
    assert (info["dimension"], info["count"]) == (256, 1)
    again = client.post("/predict", json=predict(name, [world["good_b64_0"]]))  # the recorded layer is the default
    assert len(again.json()["body"]["predictions"][0]["vals"]) == 256
    avgpool = {"mllib": {"extract_layer": "avgpool"}, "output": {"index": True}}
    other = client.post("/predict", json={"service": name, "data": [world["good_b64_1"]], "parameters": avgpool})
    assert other.status_code == 400, other.text
    assert other.json()["status"]["dd_code"] == 1006
    assert client.delete(f"/services/{name}", params={"clear": "full"}).status_code == 200
