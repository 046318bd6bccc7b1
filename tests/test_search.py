"""Index real images, build FAISS generations, search: the whole-image flow end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, text
from tests.conftest import MAX_PIXELS, draw_image, make_folder, new_service, write_image

from simsearch import services, store
from simsearch.core import Core
from simsearch.errors import BadInput
from simsearch.index import build_generation, load_current
from simsearch.ingest import IngestReport, ingest
from simsearch.input import decode_image
from simsearch.models import ModelCache
from simsearch.search import search_vectors
from simsearch.store import ServiceRecord


def _ingest(core: Core, svc: ServiceRecord, items: list[str], *, atomic: bool = False) -> IngestReport:
    """Index `items` under the core's one data root (the test's data_dir), 4 images per batch."""
    return ingest(core.engine, svc, services.extractor_for(svc, core.models), items, core.intake, atomic=atomic)


def _query(models: ModelCache, svc: ServiceRecord, paths: list[Path]) -> np.ndarray:
    pixels = [decode_image(p.read_bytes(), max_pixels=MAX_PIXELS).rgb for p in paths]
    return services.extractor_for(svc, models).embed(pixels)


def _count(engine: Engine, svc: ServiceRecord) -> int:
    with engine.connect() as conn:
        return store.count_vectors(conn, svc.id)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_each_indexed_image_finds_itself_first(
    core: Core, engine: Engine, data_dir: Path, tmp_path: Path, metric: str
) -> None:
    svc = new_service(engine, core.models, metric=metric)
    paths = make_folder(data_dir, 10)
    report = _ingest(core, svc, [str(data_dir)])
    assert report.indexed == 10
    assert report.skipped == 0
    build = build_generation(engine, svc, tmp_path / "indexes")
    assert (build.status, build.vector_count, build.index_type) == ("ready", 10, "Flat")
    assert (Path(build.path or "") / "index.faiss").is_file()
    results = search_vectors(engine, svc, load_current(engine, svc), _query(core.models, svc, paths), 3)
    for path, hits in zip(paths, results, strict=True):
        assert hits[0].uri == str(path)
        # sqrt(2 - 2cos) turns float32 rounding of cos (~1e-7) into ~3e-4
        assert hits[0].dist == pytest.approx(0.0, abs=1e-4 if metric == "l2" else 1e-3)
        assert [h.dist for h in hits] == sorted(h.dist for h in hits)
        assert (hits[0].width, hits[0].height) == (128, 96)
        assert len(hits[0].sha256) == 64


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_reported_distances_follow_the_contract(
    core: Core, engine: Engine, data_dir: Path, tmp_path: Path, metric: str
) -> None:
    svc = new_service(engine, core.models, metric=metric)
    paths = make_folder(data_dir, 6)
    _ingest(core, svc, [str(data_dir)])
    stored = _query(core.models, svc, paths)
    query = _query(core.models, svc, [write_image(tmp_path / "q.png", draw_image(99))])
    if metric == "l2":
        expected = ((stored - query) ** 2).sum(axis=1) / stored.shape[1]
    else:
        expected = np.sqrt(np.maximum(0, 2 - 2 * (stored @ query[0])))
    # before a build (exact tail) and after (index): the same numbers
    for index in (None, load_current(engine, build_generation(engine, svc, tmp_path / "ix") and svc)):
        [hits] = search_vectors(engine, svc, index, query, 6)
        got = {h.uri: h.dist for h in hits}
        for path, dist in zip(paths, expected, strict=True):
            assert got[str(path)] == pytest.approx(float(dist), rel=1e-3, abs=1e-5)


def test_search_before_any_build_finds_new_items(core: Core, engine: Engine, data_dir: Path) -> None:
    svc = new_service(engine, core.models)
    paths = make_folder(data_dir, 5)
    _ingest(core, svc, [str(p) for p in paths])
    assert load_current(engine, svc) is None
    results = search_vectors(engine, svc, None, _query(core.models, svc, paths), 1)
    assert [hits[0].uri for hits in results] == [str(p) for p in paths]


def test_items_added_after_a_build_are_merged_with_the_index(
    core: Core, engine: Engine, data_dir: Path, tmp_path: Path
) -> None:
    svc = new_service(engine, core.models)
    old = make_folder(data_dir / "old", 6)
    _ingest(core, svc, [str(data_dir / "old")])
    build_generation(engine, svc, tmp_path / "ix")
    new = make_folder(data_dir / "new", 3, start=50)
    _ingest(core, svc, [str(data_dir / "new")])
    index = load_current(engine, svc)
    assert index is not None
    assert index.index.ntotal == 6
    results = search_vectors(engine, svc, index, _query(core.models, svc, old + new), 9)
    assert [hits[0].uri for hits in results] == [str(p) for p in old + new]
    assert all(len(hits) == 9 for hits in results)
    assert all(len({h.image_id for h in hits}) == 9 for hits in results)


def test_reindexing_a_uri_replaces_its_vector(core: Core, engine: Engine, data_dir: Path, tmp_path: Path) -> None:
    svc = new_service(engine, core.models)
    paths = make_folder(data_dir, 4)
    _ingest(core, svc, [str(data_dir)])
    build_generation(engine, svc, tmp_path / "ix")
    write_image(paths[0], draw_image(1234))  # new content under the same uri
    _ingest(core, svc, [str(paths[0])])
    assert _count(engine, svc) == 4
    with engine.connect() as conn:
        sha = conn.execute(text("SELECT sha256 FROM image WHERE uri = :u"), {"u": str(paths[0])}).scalar()
    [hits] = search_vectors(engine, svc, load_current(engine, svc), _query(core.models, svc, [paths[0]]), 4)
    assert hits[0].uri == str(paths[0])
    assert hits[0].dist == pytest.approx(0.0, abs=1e-4)
    assert hits[0].sha256 == sha
    assert len(hits) == 4
    assert len({h.uri for h in hits}) == 4


def test_deleted_images_never_come_back_and_k_is_still_filled(
    core: Core, engine: Engine, data_dir: Path, tmp_path: Path
) -> None:
    svc = new_service(engine, core.models)
    paths = make_folder(data_dir, 8)
    report = _ingest(core, svc, [str(data_dir)])
    build_generation(engine, svc, tmp_path / "ix")
    gone = [report.image_ids[str(p)] for p in paths[:3]]
    with engine.begin() as conn:
        store.delete_images(conn, gone)
    results = search_vectors(engine, svc, load_current(engine, svc), _query(core.models, svc, paths), 5)
    for hits in results:
        assert len(hits) == 5
        assert not {h.image_id for h in hits} & set(gone)
    assert [hits[0].uri for hits in results[3:]] == [str(p) for p in paths[3:]]


def test_non_images_in_directories_are_skipped_and_counted(core: Core, engine: Engine, data_dir: Path) -> None:
    svc = new_service(engine, core.models)
    make_folder(data_dir, 3)
    (data_dir / "notes.txt").write_text("not an image")
    (data_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    report = _ingest(core, svc, [str(data_dir)])
    assert (report.indexed, report.skipped) == (3, 2)
    assert sorted(Path(u).name for u in report.skipped_uris) == ["broken.jpg", "notes.txt"]


@pytest.mark.parametrize("atomic", [False, True])
def test_an_unreadable_explicit_file_writes_nothing(core: Core, engine: Engine, data_dir: Path, atomic: bool) -> None:
    svc = new_service(engine, core.models)
    good = make_folder(data_dir, 6)
    bad = data_dir / "bad.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(BadInput, match=r"bad.jpg: not an image file") as info:
        _ingest(core, svc, [str(p) for p in good] + [str(bad)], atomic=atomic)
    assert info.value.field == "data[6]"
    assert _count(engine, svc) == 0
    with engine.connect() as conn:
        assert (
            conn.execute(text("SELECT count(*) FROM image WHERE uri = ANY(:u)"), {"u": [str(p) for p in good]}).scalar()
            == 0
        )


def test_atomic_ingest_rolls_back_a_late_decode_failure(core: Core, engine: Engine, data_dir: Path) -> None:
    svc = new_service(engine, core.models)
    good = make_folder(data_dir, 6)
    bad = data_dir / "cut.png"
    bad.write_bytes(good[0].read_bytes()[:60])  # a valid PNG header, truncated body: fails only at decode
    with pytest.raises(BadInput, match=r"cut\.png"):
        _ingest(core, svc, [str(p) for p in good] + [str(bad)], atomic=True)
    assert _count(engine, svc) == 0


def test_files_outside_the_data_roots_are_refused(core: Core, engine: Engine, data_dir: Path, tmp_path: Path) -> None:
    svc = new_service(engine, core.models)
    outside = write_image(tmp_path / "outside" / "x.png", draw_image(3))
    with pytest.raises(BadInput, match="outside the allowed data roots"):
        _ingest(core, svc, [str(outside)])
    assert _count(engine, svc) == 0


def test_a_bad_index_type_is_refused_and_the_previous_generation_keeps_serving(
    core: Core, engine: Engine, data_dir: Path, tmp_path: Path
) -> None:
    svc = new_service(engine, core.models)
    make_folder(data_dir, 4)
    _ingest(core, svc, [str(data_dir)])
    first = build_generation(engine, svc, tmp_path / "ix")
    with pytest.raises(BadInput, match="not a FAISS index_factory string"):
        build_generation(engine, svc, tmp_path / "ix", index_type="Bogus99")
    with pytest.raises(BadInput, match="IVF64,Flat needs at least 64 vectors to train, the service has 4"):
        build_generation(engine, svc, tmp_path / "ix", index_type="IVF64,Flat")
    current = load_current(engine, svc)
    assert current is not None
    assert current.build.id == first.id
    with engine.connect() as conn:
        statuses = [b.status for b in store.list_builds(conn, svc.id)]
    assert statuses == ["failed", "ready"]


def test_a_new_generation_retires_the_old_one(core: Core, engine: Engine, data_dir: Path, tmp_path: Path) -> None:
    svc = new_service(engine, core.models)
    make_folder(data_dir, 4)
    _ingest(core, svc, [str(data_dir)])
    first = build_generation(engine, svc, tmp_path / "ix")
    second = build_generation(engine, svc, tmp_path / "ix")
    assert second.id > first.id
    with engine.connect() as conn:
        assert [(b.id, b.status) for b in store.list_builds(conn, svc.id)] == [
            (second.id, "ready"),
            (first.id, "retired"),
        ]
    assert not Path(first.path or "").exists()
    assert Path(second.path or "").exists()


def test_wrong_query_dimension_and_k(engine: Engine, models: ModelCache) -> None:
    svc = new_service(engine, models)
    with pytest.raises(BadInput, match="dimension 512"):
        search_vectors(engine, svc, None, np.zeros((1, 3), np.float32), 1)
    with pytest.raises(BadInput, match="at least 1"):
        search_vectors(engine, svc, None, np.zeros((1, 512), np.float32), 0)


def test_empty_service_returns_no_hits_and_cannot_build(engine: Engine, models: ModelCache, tmp_path: Path) -> None:
    svc = new_service(engine, models)
    assert search_vectors(engine, svc, None, np.zeros((2, 512), np.float32), 3) == [[], []]
    with pytest.raises(BadInput, match="no stored vectors"):
        build_generation(engine, svc, tmp_path / "ix")
