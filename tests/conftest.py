"""Fixtures: one real PostgreSQL (embedded, or DATABASE_URL) per session, a fresh database per module,
migrated with Alembic; real models with seeded random weights, loaded once per session; a core for the
core-level tests; the environment of a simsearch subprocess; images drawn in the test."""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import psycopg
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from tests.ddwire import check_every_response

from simsearch import services, store
from simsearch.core import Core
from simsearch.index import IndexCache
from simsearch.input import Intake
from simsearch.models import ModelCache
from simsearch.settings import Settings
from simsearch.store import ServiceRecord

MAX_PIXELS = 10_000_000  # the core tests' pixel limit (the drawn images are 96 x 128)


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """Admin URL of the Postgres server the tests use."""
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="simsearch-test-pg-") as tmp:
        os.chmod(tmp, 0o755)  # the embedded server runs as user `pgserver` when we are root
        yield store.embedded_postgres(Path(tmp) / "pgdata", database="postgres")


def _fresh_database(server_url: str, name: str) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    parsed = make_url(store.db.sqlalchemy_url(server_url)).set(database=name)
    return parsed.render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def database_url(server_url: str, request: pytest.FixtureRequest) -> str:
    """A new, empty database for this test module (not migrated)."""
    name = "t_" + re.sub(r"\W", "_", request.module.__name__.rsplit(".", 1)[-1])[:40] + "_" + uuid.uuid4().hex[:6]
    return _fresh_database(server_url, name)


@pytest.fixture(scope="module")
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on this module's database, migrated to head with Alembic."""
    eng = store.make_engine(database_url)
    store.upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    return folder


def subprocess_env(home: Path, *, database_url: str | None, data: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a `simsearch` subprocess: this process's, with its own SIMSEARCH_HOME, database
    (None: no DATABASE_URL at all, so the CLI starts its embedded server under `home`) and data root (None:
    none), Python's warnings off and a wide terminal (tables and help are not wrapped); `extra` adds or
    replaces variables."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env |= {"SIMSEARCH_HOME": str(home), "PYTHONWARNINGS": "ignore", "COLUMNS": "200"}
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    if data is not None:
        env["SIMSEARCH_DATA_ROOTS"] = str(data)
    return env | extra


@pytest.fixture
def env(server_url: str, tmp_path: Path, data_dir: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment of one test's `simsearch` subprocesses: a fresh (unmigrated) database, its own home,
    data_dir as the one data root."""
    home = tmp_path / "home"
    home.mkdir()
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    database_url = _fresh_database(server_url, f"{module}_{tmp_path.name[-20:]}".lower())
    return subprocess_env(home, database_url=database_url, data=data_dir)


def draw_image(seed: int, size: tuple[int, int] = (96, 128)) -> np.ndarray:
    """A distinct RGB picture per seed: coloured rectangles and circles on a gradient."""
    rng = np.random.default_rng(seed)
    h, w = size
    image = np.zeros((h, w, 3), np.uint8)
    image[:] = np.linspace(0, 255, w, dtype=np.uint8)[None, :, None] * rng.random(3)[None, None, :]
    for _ in range(6):
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        if rng.random() < 0.5:
            cv2.rectangle(image, (x, y), (x + int(rng.integers(8, 40)), y + int(rng.integers(8, 40))), color, -1)
        else:
            cv2.circle(image, (x, y), int(rng.integers(5, 25)), color, -1)
    return image


def write_image(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def make_folder(folder: Path, count: int, *, start: int = 0, ext: str = ".png") -> list[Path]:
    return [write_image(folder / f"img{start + i:03d}{ext}", draw_image(start + i)) for i in range(count)]


@pytest.fixture(scope="session")
def models() -> Iterator[ModelCache]:
    """The session's loaded models: each test model is loaded once, whichever test needs it first."""
    cache = ModelCache()
    yield cache
    cache.unload()


def intake(*roots: Path, max_pixels: int = MAX_PIXELS, batch_size: int = 4, max_items: int | None = None) -> Intake:
    """The input limits of a core test: files under `roots`, small batches (several per call), no URLs."""
    return Intake(roots=tuple(roots), max_pixels=max_pixels, batch_size=batch_size, max_items=max_items)


@pytest.fixture
def core(engine: Engine, models: ModelCache, data_dir: Path, tmp_path: Path) -> Core:
    """The core of one test, on this module's database: data_dir is its one data root, index files go
    under tmp_path."""
    return Core(
        engine=engine,
        intake=intake(data_dir),
        models=models,
        indexes=IndexCache(engine),  # not listening: each lookup asks Postgres, no thread to stop
        index_dir=tmp_path / "indexes",
        home=tmp_path / "home",
    )


def new_service(
    engine: Engine,
    models: ModelCache,
    *,
    model: str = "resnet18",
    metric: str = "l2",
    size: int = 64,
    index_type: str = "Flat",
) -> ServiceRecord:
    """A service with seeded random weights (offline); small input size keeps tests fast."""
    return services.create_service(
        engine,
        models,
        f"svc_{uuid.uuid4().hex[:8]}",
        model=model,
        weights="none",
        size=size,
        metric=metric,
        index_type=index_type,
    )


@pytest.fixture(scope="module")
def api_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SIMSEARCH_HOME of this module's app: index files go under it."""
    return tmp_path_factory.mktemp("api-home")


@pytest.fixture(scope="module")
def api_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one data root this module's app may read files from."""
    return tmp_path_factory.mktemp("api-data")


def api_settings(home: Path, data: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {"home": home, "data_roots": [data], "batch_size": 8} | overrides
    return Settings.model_validate(values)


@pytest.fixture(scope="module")
def client(engine: Engine, api_home: Path, api_data: Path) -> Iterator[TestClient[Litestar]]:
    """Litestar's test client over the real app, on this module's migrated database. Every DeepDetect-face
    response it receives is checked against the contract's envelope rules (tests/ddwire.py)."""
    from simsearch.api import create_app  # here: the core tests run without importing the HTTP faces

    app = create_app(api_settings(api_home, api_data), engine=engine)
    with TestClient(app) as test_client:
        yield check_every_response(test_client)


def table_counts(engine: Engine) -> dict[str, int]:
    """Rows per table: a bad request must leave these unchanged."""
    with engine.connect() as conn:
        return {
            table: int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
            for table in ("service", "image", "embedding", "roi", "index_build")
        }
