"""Artefact stores (a directory, a real SeaweedFS S3 server) and the index cache over them, in one process:
what a build publishes is fetched into another cache and checked; a corrupt or missing object is refused
and the cache keeps what it holds (or none: exact search), retries with backoff, and says why."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import obstore
import pytest
from sqlalchemy import Engine
from tests.conftest import make_folder, new_service
from tests.servers import S3Server, object_store, seaweed_s3, wait_until

from simsearch import services, store
from simsearch.core import Core
from simsearch.index import ArtefactError, ArtefactStore, DirectoryStore, IndexCache, artefact_key, build_generation
from simsearch.index.artefacts import publish
from simsearch.ingest import ingest
from simsearch.search import search_vectors
from simsearch.store import ServiceRecord


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with seaweed_s3(tmp_path_factory.mktemp("weed")) as server:
        yield server


def _service(core: Core, engine: Engine, data_dir: Path, count: int = 8) -> ServiceRecord:
    svc = new_service(engine, core.models)
    make_folder(data_dir, count)
    extractor = services.extractor_for(svc, core.models)
    assert ingest(engine, svc, extractor, [str(data_dir)], core.intake).indexed == count
    return svc


def _vector(engine: Engine, svc: ServiceRecord, position: int) -> tuple[int, np.ndarray]:
    with engine.connect() as conn:
        vectors = store.read_service_vectors(conn, svc.id, svc.dim)
    return int(vectors.ids[position]), vectors.vectors[position : position + 1]


@pytest.mark.parametrize("kind", ["directory", "s3"])
def test_a_store_puts_gets_checks_and_deletes(kind: str, s3: S3Server, tmp_path: Path) -> None:
    chosen: ArtefactStore = DirectoryStore(tmp_path / "store") if kind == "directory" else object_store(s3, "roundtrip")
    source = tmp_path / "file.bin"
    source.write_bytes(b"x" * 100_000)
    chosen.put("svc/gen-00000001/file.bin", source)
    assert chosen.exists("svc/gen-00000001/file.bin")
    assert not chosen.exists("svc/gen-00000001/other.bin")
    chosen.get_to_file("svc/gen-00000001/file.bin", tmp_path / "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == source.read_bytes()
    with pytest.raises(ArtefactError) as missing:
        chosen.get_to_file("svc/gen-00000001/other.bin", tmp_path / "other.bin")
    assert missing.value.reason == "missing file"
    chosen.delete(["svc/gen-00000001/file.bin", "svc/gen-00000001/never-was.bin"])
    assert not chosen.exists("svc/gen-00000001/file.bin")


def test_a_generation_on_s3_loads_in_another_cache_and_a_corrupt_one_is_refused(
    core: Core, engine: Engine, data_dir: Path, tmp_path: Path, s3: S3Server, caplog: pytest.LogCaptureFixture
) -> None:
    svc = _service(core, engine, data_dir)
    bucket = object_store(s3, "corrupt")
    build = build_generation(engine, svc, tmp_path / "builder", artefacts=bucket)
    assert build.artefact_key == artefact_key(svc, build.id)
    assert build.artefact_size == sum(f["size"] for f in (build.artefact_files or {}).values())
    assert build.artefact_sha256
    assert build.artefact_files
    assert "index.faiss" in build.artefact_files
    shutil.rmtree(tmp_path / "builder")  # another host: the builder's folder is not there
    replica = IndexCache(engine, source=bucket, cache_dir=tmp_path / "b-cache")
    loaded = replica.current(svc)
    assert loaded is not None
    assert loaded.build.id == build.id
    assert (tmp_path / "b-cache" / svc.name / f"gen-{build.id:08d}" / "index.faiss").is_file()

    # the object changes after the build recorded its checksum: a fresh replica refuses it, searches exactly
    obstore.put(bucket._store, f"{build.artefact_key}/index.faiss", b"not the index that was built")
    fresh = IndexCache(engine, source=bucket, cache_dir=tmp_path / "c-cache")
    with caplog.at_level(logging.WARNING, logger="simsearch.index"):
        assert [fresh.current(svc) for _ in range(5)] == [None] * 5
    [state] = fresh.states().values()
    assert (state.current, state.loaded, state.degraded) == (build.id, None, "checksum mismatch")
    assert len([r for r in caplog.records if "cannot be loaded" in r.getMessage()]) == 1
    assert not any(r.exc_info for r in caplog.records)
    assert not (tmp_path / "c-cache" / svc.name / f"gen-{build.id:08d}" / "index.faiss").exists()
    embedding_id, query = _vector(engine, svc, 3)
    [hits] = search_vectors(engine, svc, None, query, 2)  # what a degraded replica answers with: exact
    assert hits[0].embedding_id == embedding_id


def test_a_held_generation_stays_until_the_next_can_be_fetched_then_is_swapped(
    core: Core, engine: Engine, data_dir: Path, tmp_path: Path, s3: S3Server
) -> None:
    svc = _service(core, engine, data_dir)
    bucket = object_store(s3, "held")
    first = build_generation(engine, svc, tmp_path / "builder", artefacts=bucket)
    replica = IndexCache(engine, source=bucket, cache_dir=tmp_path / "b-cache", retry_s=0.2)
    held = replica.current(svc)
    assert held is not None
    assert held.build.id == first.id
    # the next generation is published somewhere this replica does not read (its files are not in S3 yet)
    second = build_generation(engine, svc, tmp_path / "builder", artefacts=DirectoryStore(tmp_path / "elsewhere"))
    for _ in range(3):
        kept = replica.current(svc)
        assert kept is not None
        assert kept.build.id == first.id  # never dropped for one it cannot read
    [state] = replica.states().values()
    assert (state.current, state.loaded, state.degraded, state.attempts) == (second.id, first.id, "missing file", 1)
    assert state.lag_s >= 0
    publish(bucket, artefact_key(svc, second.id), tmp_path / "builder" / svc.name / f"gen-{second.id:08d}")
    time.sleep(0.25)  # past the first backoff
    swapped = replica.current(svc)
    assert swapped is not None
    assert swapped.build.id == second.id
    assert replica.states()[svc.id].degraded is None
    assert not (tmp_path / "b-cache" / svc.name / f"gen-{first.id:08d}").exists()  # the older copy is dropped


def test_a_poll_finds_new_generations_where_no_announcement_arrives(
    core: Core, engine: Engine, data_dir: Path, tmp_path: Path
) -> None:
    svc = _service(core, engine, data_dir)
    shared = DirectoryStore(tmp_path / "shared")
    first = build_generation(engine, svc, tmp_path / "builder", artefacts=shared)
    # a replica reading from a standby: LISTEN cannot run there, only the poll tells it
    replica = IndexCache(engine, source=shared, cache_dir=tmp_path / "cache", poll_s=0.3, announcements=False)
    replica.listen()
    try:
        assert replica.wait_warm(30)
        assert replica.loaded() == {svc.id: first.id}  # loaded at start, before any search
        second = build_generation(engine, svc, tmp_path / "builder", artefacts=shared)
        took = wait_until(lambda: replica.loaded() == {svc.id: second.id}, 10, "the poll never found the build")
        assert took < 3
    finally:
        replica.close()
