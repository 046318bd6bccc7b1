"""The object pipeline on real photos with real detectors: detect -> crop -> extract -> store -> build ->
search per object -> rank images, through the core functions the API and the CLI call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.data
from sqlalchemy import Engine, text
from tests.conftest import intake, table_counts, write_image

from simsearch import objects, services, store
from simsearch.errors import BadInput
from simsearch.index import build_generation, load_current
from simsearch.input import Crop, Intake
from simsearch.models import ModelCache
from simsearch.objects import Detection

MAX_PIXELS = 50_000_000


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    astronaut = skimage.data.astronaut()
    write_image(folder / "astronaut.png", astronaut)
    write_image(folder / "collage.png", np.hstack([astronaut, astronaut]))
    write_image(folder / "coffee.png", skimage.data.coffee())  # no face: indexes nothing
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def limits(photos: Path) -> Intake:
    """The photos folder is the one data root; eight images per batch."""
    return intake(photos, max_pixels=MAX_PIXELS, batch_size=8)


@pytest.fixture(scope="module")
def faces(engine: Engine, models: ModelCache) -> tuple[store.ServiceRecord, store.ServiceRecord, Detection]:
    detector = services.create_service(engine, models, "faces", model="dlib:frontal_face", weights="DEFAULT")
    descriptor = services.create_service(
        engine, models, "face-vectors", model="dlib:face_descriptor", weights="DEFAULT"
    )
    how = Detection(
        detector=services.detector_for(detector, models),
        extractor=services.extractor_for(descriptor, models),
        crop=Crop(padding_ratio=0.1),
        confidence_threshold=0.6,
    )
    return detector, descriptor, how


def _uris(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return {Path(u).name for u in conn.execute(text("SELECT uri FROM image")).scalars()}


def test_a_folder_indexes_its_faces_and_skips_what_has_none(
    engine: Engine, photos: Path, limits: Intake, faces: tuple
) -> None:
    detector, descriptor, how = faces
    report = objects.index_objects(engine, detector, descriptor, [str(photos)], how, limits)
    assert [Path(u).name for u in report.skipped] == ["notes.txt"]
    found = {Path(i.stored_uri).name: len(i.objects) for i in report.images}
    assert found["coffee.png"] == 0
    assert found["collage.png"] == 2 * found["astronaut.png"] >= 2
    assert _uris(engine) == {"astronaut.png", "collage.png"}  # coffee: nothing stored
    assert report.objects_stored == sum(found.values())
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT count(*) FROM roi r JOIN embedding e ON e.roi_id = r.id WHERE e.service_id = :s"),
            {"s": descriptor.id},
        ).scalar_one()
    assert rows == report.objects_stored


def test_the_same_face_is_found_first_at_distance_zero_and_the_collage_wins_count(
    engine: Engine, photos: Path, limits: Intake, faces: tuple
) -> None:
    _, descriptor, how = faces
    (query,), _ = next(objects.find_objects([str(photos / "astronaut.png")], how, limits))
    best = max(query.objects, key=lambda o: o.prob)
    hits = objects.search_objects(engine, descriptor, None, [query], 3)[0]
    nearest = hits[query.objects.index(best)][0]
    assert Path(nearest.uri).name in {"astronaut.png", "collage.png"}
    assert nearest.dist == pytest.approx(0.0, abs=1e-6)
    assert nearest.bbox == pytest.approx(best.bbox)
    assert nearest.category == "face"
    ranked = objects.rank_images(engine, descriptor, hits, score="count")
    assert Path(ranked[0].uri).name in {"astronaut.png", "collage.png"}
    assert {Path(r.uri).name for r in ranked} == {"astronaut.png", "collage.png"}


def test_a_built_index_serves_object_vectors_and_deleted_images_vanish(
    engine: Engine, photos: Path, limits: Intake, faces: tuple, tmp_path: Path
) -> None:
    _, descriptor, how = faces
    build_generation(engine, descriptor, tmp_path)
    loaded = load_current(engine, descriptor)
    assert loaded is not None
    assert loaded.index.ntotal >= 3
    (query,), _ = next(objects.find_objects([str(photos / "collage.png")], how, limits))
    hits = objects.search_objects(engine, descriptor, loaded, [query], 2)[0]
    assert all(h and h[0].dist == pytest.approx(0.0, abs=1e-6) for h in hits)
    with engine.begin() as conn:
        collage = conn.execute(text("SELECT id FROM image WHERE uri LIKE '%collage.png'")).scalar_one()
        store.delete_images(conn, [collage])
    after = objects.search_objects(engine, descriptor, loaded, [query], 5)[0]
    assert all("collage" not in h.uri for found in after for h in found)


def test_a_bad_item_writes_nothing(engine: Engine, photos: Path, limits: Intake, faces: tuple) -> None:
    detector, descriptor, how = faces
    before = table_counts(engine)
    with pytest.raises(BadInput, match=r"data\[1\]"):
        objects.index_objects(
            engine,
            detector,
            descriptor,
            [str(photos / "astronaut.png"), str(photos / "notes.txt")],
            how,
            limits,
            atomic=True,
        )
    assert table_counts(engine) == before


def test_box_vectors_of_a_faster_rcnn_detector_are_stored_per_box(
    engine: Engine, models: ModelCache, photos: Path, limits: Intake
) -> None:
    detector = services.create_service(
        engine, models, "frcnn", model="fasterrcnn_resnet50_fpn", weights="none", size=256
    )
    assert (detector.kind, detector.dim) == ("detector", 1024)
    how = Detection(detector=services.detector_for(detector, models), box_vectors=True, confidence_threshold=0.0)
    report = objects.index_objects(engine, detector, detector, [str(photos / "coffee.png")], how, limits)
    assert report.objects_stored == len(report.images[0].objects) > 0
    with engine.connect() as conn:
        stored = conn.execute(
            text("SELECT count(*) FROM embedding WHERE service_id = :s AND roi_id IS NOT NULL"), {"s": detector.id}
        ).scalar_one()
    assert stored == report.objects_stored
    hits = objects.search_objects(engine, detector, None, report.images, 1)[0]
    assert all(h[0].dist == pytest.approx(0.0, abs=1e-5) for h in hits)
