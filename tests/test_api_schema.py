"""Schemathesis against the OpenAPI schema of /api/v1: requests generated from the schema (valid ones and
invalid ones) over the real app, real Postgres and a real model. None may get a 5xx, and every answer
must match what the schema documents."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from litestar import Litestar
from litestar.testing import TestClient
from schemathesis import checks
from schemathesis.python import asgi
from sqlalchemy import Engine
from tests.conftest import api_settings, draw_image, write_image

from simsearch.api import create_app
from simsearch.settings import Settings

SERVICE = "fuzzed"
ADMIN_TOKEN = "admin-secret"  # noqa: S105 - test tokens
READ_TOKEN = "read-secret"  # noqa: S105


@pytest.fixture(scope="module")
def world(client: TestClient[Litestar], api_data: Path) -> dict[str, Any]:
    """One service with a few indexed images and a built index, so generated calls reach real code."""
    created = client.post(
        "/api/v1/services", json={"name": SERVICE, "model": "resnet18", "weights": "none", "size": 64}
    )
    assert created.status_code == 201, created.text
    paths = [write_image(api_data / "fuzz" / f"img{i}.png", draw_image(900 + i)) for i in range(5)]
    items = [{"data": str(p), "metadata": {"label": "cat" if i % 2 else "dog"}} for i, p in enumerate(paths)]
    indexed = client.post(f"/api/v1/services/{SERVICE}/images", json={"items": items})
    assert indexed.status_code == 201, indexed.text
    assert client.post(f"/api/v1/services/{SERVICE}/builds", json={}).status_code == 201
    return {"image_ids": [i["id"] for i in indexed.json()["images"]]}


# The document is built without a database (the app's lifespan never runs for it); the calls go to an
# app on this module's database. `test_the_served_schema_is_the_tested_one` checks the two agree.
DOCUMENT = create_app(Settings(home=Path(tempfile.gettempdir()), data_roots=[])).openapi_schema.to_schema()
schema = schemathesis.openapi.from_dict(DOCUMENT).include(path_regex=r"^/api/v1/")


@pytest.fixture(scope="module")
def app(engine: Engine, api_home: Path, api_data: Path, world: dict[str, Any]) -> Iterator[Litestar]:
    settings = api_settings(api_home, api_data, api_token=ADMIN_TOKEN, read_token=READ_TOKEN)
    application = create_app(settings, engine=engine)
    yield application
    asgi.shutdown_lifespans()  # schemathesis started the app's lifespan on its own event loop


def test_the_served_schema_is_the_tested_one(client: TestClient[Litestar]) -> None:
    served = client.get("/schema/openapi.json")
    assert served.status_code == 200
    assert served.json() == json.loads(json.dumps(DOCUMENT))
    operations = [op for path, item in DOCUMENT["paths"].items() if path.startswith("/api/v1/") for op in item]
    assert len(operations) == 23  # issue 13: /api/v1/ready and /api/v1/live; issue 15: thumbnails


EXCLUDED = [
    # The schema cannot say which model names, files or index strings exist: such requests are valid
    # by the schema and still answered 400 with the field named.
    checks.positive_data_acceptance,
    # Litestar 2 answers OPTIONS with the methods of the first handler of a path only
    # (litestar-org/litestar#4169, fixed in Litestar 3).
    checks.allow_header_conformance,
]


def _stored(value: Any, ids: list[int]) -> Any:
    """A generated positive id mapped onto a stored image, so GET and PATCH reach a real row."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return value
    return ids[number % len(ids)] if number >= 1 else value


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)
@schema.parametrize()
def test_no_server_errors(case: schemathesis.Case, app: Litestar, world: dict[str, Any]) -> None:
    # Valid cases reach the real code past the lookups; deletes stay random, so the fixture mostly survives.
    params = case.path_parameters
    negative = case.meta is not None and case.meta.generation.mode.is_negative
    if params is not None and case.method != "DELETE" and not negative:
        if "name" in params:
            params["name"] = SERVICE
        if "image_id" in params:
            params["image_id"] = _stored(params["image_id"], world["image_ids"])
    # The operation was made at collection, from the document: point it (and the probes that the
    # checks send without a token, or with a wrong one) at this module's app.
    case.operation.app = case.operation.schema.app = app
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    response = case.call(headers=headers)
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text[:2000]}"
    case.validate_response(response, headers=headers, excluded_checks=EXCLUDED, transport_kwargs={"headers": headers})
