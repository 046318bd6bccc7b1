"""The core's own rules, tested at the core (no HTTP): the calls of simsearch.predict (a DeepDetect predict
and chain as the faces hand them over) and the query side of simsearch.queries, on the real test Postgres
with real models (random resnet18 weights, OpenCV's packaged face cascade, a random Faster R-CNN).

Every face reaches these rules through the same functions, so the HTTP suites only check the wire."""

from __future__ import annotations

import random
import string
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from sqlalchemy import Engine
from tests.conftest import MAX_PIXELS, intake, make_folder, table_counts, write_image

from simsearch import services, store
from simsearch.core import Core
from simsearch.errors import BadInput
from simsearch.index import IndexSettings
from simsearch.ingest import embed
from simsearch.input import Crop, decode_image
from simsearch.predict import ChainCall, ServiceCall, run_chain, run_image_call, run_object_call
from simsearch.queries import ObjectQuery, image_vector, object_plan, query_objects, search_image, similar_images
from simsearch.store import ServiceRecord

HAAR = "opencv:haarcascade_frontalface_default"
FACES = Crop(padding_ratio=0.1)


def _service(core: Core, model: str = "resnet18", **options: object) -> ServiceRecord:
    """A new service: by default an extractor with random weights at 64 pixels (fast, offline)."""
    defaults: dict[str, object] = {"weights": "none", "size": 64} if model == "resnet18" else {"weights": "DEFAULT"}
    name = f"core_{uuid.uuid4().hex[:8]}"
    return services.create_service(core.engine, core.models, name, model=model, **(defaults | options))  # type: ignore[arg-type]


def _stored(engine: Engine, service: ServiceRecord) -> ServiceRecord:
    """The service as Postgres holds it now."""
    with engine.connect() as conn:
        return store.get_service(conn, service.name)


def _settings(service: ServiceRecord, index_type: str) -> dict[str, object]:
    """New index settings for a call (as the DeepDetect face makes them from a request's index keys)."""
    return service.index_settings | IndexSettings(index_type=index_type).to_dict()


def _truncated(folder: Path, like: Path) -> Path:
    """A PNG whose header is valid and whose body is cut: it fails only when decoded, after the header checks."""
    cut = folder / "cut.png"
    cut.write_bytes(like.read_bytes()[:60])
    return cut


@pytest.fixture
def people(data_dir: Path) -> dict[str, Path]:
    """Photos with faces (the astronaut once, and twice side by side) and one without."""
    astronaut = skimage.data.astronaut()
    return {
        "astronaut": write_image(data_dir / "people" / "astronaut.png", astronaut),
        "collage": write_image(data_dir / "people" / "collage.png", np.hstack([astronaut, astronaut])),
        "coffee": write_image(data_dir / "people" / "coffee.png", skimage.data.coffee()),
    }


# ---- index settings are stored only once the call's index and build steps have succeeded ------------


def test_an_image_call_whose_build_fails_keeps_the_index_settings(core: Core, data_dir: Path) -> None:
    service = _service(core)
    paths = tuple(str(p) for p in make_folder(data_dir, 3))
    ivf = _settings(service, "IVF64,Flat")  # a valid string that cannot train on 3 vectors
    with pytest.raises(BadInput, match="IVF64,Flat needs at least 64 vectors"):
        run_image_call(core, ServiceCall(service, paths, index=True, build=True, index_values=ivf))
    assert _stored(core.engine, service).index_settings == service.index_settings
    # the same call with a build that succeeds stores its settings
    flat = _settings(service, "HNSW8")
    run_image_call(core, ServiceCall(service, (), build=True, index_values=flat))
    assert _stored(core.engine, service).index_settings == flat


def test_an_image_call_with_a_bad_item_writes_nothing_and_keeps_the_settings(core: Core, data_dir: Path) -> None:
    service = _service(core)
    good = make_folder(data_dir, 8)  # batches of 4: the cut file is the third, after a batch's write has begun
    data = (*map(str, good), str(_truncated(data_dir, good[0])))
    before = table_counts(core.engine)
    call = ServiceCall(service, data, index=True, build=True, index_values=_settings(service, "HNSW8"))
    with pytest.raises(BadInput, match=r"cut\.png") as info:
        run_image_call(core, call)
    assert info.value.field == "data[8]"
    assert table_counts(core.engine) == before  # one transaction: the first batch's images are gone too
    assert _stored(core.engine, service).index_settings == service.index_settings


def test_a_refused_first_index_call_leaves_the_service_layer(core: Core, data_dir: Path) -> None:
    service = _service(core)
    [good] = make_folder(data_dir, 1)
    call = ServiceCall(service, (str(_truncated(data_dir, good)),), layer="layer3", index=True)
    with pytest.raises(BadInput, match=r"cut\.png"):
        run_image_call(core, call)
    assert (_stored(core.engine, service).layer, _stored(core.engine, service).dim) == ("flatten", 512)
    run_image_call(core, replace(call, data=(str(good),)))
    assert (_stored(core.engine, service).layer, _stored(core.engine, service).dim) == ("layer3", 256)


def test_a_chain_whose_build_fails_keeps_the_extractor_s_settings(core: Core, people: dict[str, Path]) -> None:
    detector, extractor = _service(core, HAAR), _service(core)
    child = ServiceCall(extractor, (), index=True, build=True, index_values=_settings(extractor, "IVF64,Flat"))
    chain = ChainCall(ServiceCall(detector, (str(people["collage"]),)), crop=FACES, child=child)
    with pytest.raises(BadInput, match="IVF64,Flat needs at least 64 vectors"):
        run_chain(core, chain)
    assert _stored(core.engine, extractor).index_settings == extractor.index_settings


def test_a_chain_with_a_bad_item_writes_nothing(core: Core, data_dir: Path, people: dict[str, Path]) -> None:
    detector, extractor = _service(core, HAAR), _service(core)
    copies = [write_image(data_dir / f"copy{i}.png", skimage.data.astronaut()) for i in range(4)]
    data = (*map(str, copies), str(_truncated(data_dir, people["astronaut"])))  # the cut file: the second batch
    child = ServiceCall(extractor, (), index=True, build=True, index_values=_settings(extractor, "HNSW8"))
    before = table_counts(core.engine)
    with pytest.raises(BadInput, match=r"cut\.png") as info:
        run_chain(core, ChainCall(ServiceCall(detector, data), crop=FACES, child=child))
    assert info.value.field == "data[4]"
    assert table_counts(core.engine) == before
    assert _stored(core.engine, extractor).index_settings == extractor.index_settings


def test_an_object_call_whose_build_fails_keeps_the_settings(core: Core, people: dict[str, Path]) -> None:
    boxes = _service(core, "fasterrcnn_resnet50_fpn", weights="none", size=256)  # box vectors of its own
    call = ServiceCall(
        boxes,
        (str(people["coffee"]),),
        index=True,
        build=True,
        rois=True,
        index_values=_settings(boxes, "IVF4096,Flat"),
    )
    with pytest.raises(BadInput, match="IVF4096,Flat needs at least 4096 vectors"):
        run_object_call(core, call)
    assert _stored(core.engine, boxes).index_settings == boxes.index_settings


# ---- a call's own inputs are checked before anything is read ----------------------------------------


def test_too_many_items_are_refused_before_any_is_read(core: Core, data_dir: Path) -> None:
    """Three names of files that do not exist: reading the first would fail on data[0]."""
    small = replace(core, intake=intake(data_dir, max_items=2))
    service, detector = _service(core), _service(core, HAAR)
    missing = tuple(str(data_dir / f"missing{i}.png") for i in range(3))
    calls = {
        "image call": lambda: run_image_call(small, ServiceCall(service, missing, index=True)),
        "embed": lambda: embed(services.extractor_for(service, core.models), missing, small.intake),
        "object call": lambda: run_object_call(small, ServiceCall(detector, missing, index=True)),
        "chain": lambda: run_chain(
            small, ChainCall(ServiceCall(detector, missing), child=ServiceCall(service, (), index=True))
        ),
    }
    before = table_counts(core.engine)
    for what, call in calls.items():
        with pytest.raises(BadInput, match="3 items; at most 2 per call") as info:
            call()
        assert info.value.field == "data", what
    assert table_counts(core.engine) == before


# ---- without a database write: embed, and a call that does not index ---------------------------------


def test_embed_reads_a_folder_in_order_and_skips_what_is_not_an_image(core: Core, data_dir: Path) -> None:
    service = _service(core)
    paths = make_folder(data_dir / "photos", 3)
    (data_dir / "photos" / "notes.txt").write_text("not an image")
    extractor = services.extractor_for(service, core.models)
    before = table_counts(core.engine)
    predictions, skipped = embed(extractor, [str(data_dir / "photos")], core.intake)
    assert [p.source_uri for p in predictions] == [str(p) for p in paths]
    assert [Path(s).name for s in skipped] == ["notes.txt"]
    expected = extractor.embed([decode_image(p.read_bytes(), max_pixels=MAX_PIXELS).rgb for p in paths])
    np.testing.assert_allclose(np.stack([p.vector for p in predictions]), expected, rtol=1e-5, atol=1e-6)
    assert table_counts(core.engine) == before


def test_an_image_call_that_does_not_index_writes_nothing(core: Core, data_dir: Path) -> None:
    service = _service(core)
    paths = make_folder(data_dir, 5)  # two batches
    before = table_counts(core.engine)
    outcome = run_image_call(core, ServiceCall(service, tuple(map(str, paths))))
    assert (outcome.indexed, [p.position for p in outcome.predictions]) == (False, [0, 1, 2, 3, 4])
    assert table_counts(core.engine) == before


# ---- the query side -----------------------------------------------------------------------------------


def test_a_query_image_finds_itself_in_the_current_generation(core: Core, data_dir: Path) -> None:
    service = _service(core)
    paths = make_folder(data_dir, 4)
    run_image_call(core, ServiceCall(service, tuple(map(str, paths)), index=True))
    query = image_vector(core, service, str(paths[2]))
    assert query.shape == (1, 512)
    exact = search_image(core, service, query, 2)
    assert (exact.generation, exact.hits[0].uri) == (None, str(paths[2]))  # no build yet: exact search
    run_image_call(core, ServiceCall(service, (), build=True))
    with core.engine.connect() as conn:
        current = store.current_build(conn, service.id)
    assert current is not None
    built = search_image(core, service, query, 2)
    assert (built.generation, built.hits[0].uri) == (current.id, str(paths[2]))
    assert built.hits[0].dist == pytest.approx(0.0, abs=1e-4)


def test_a_directory_is_no_query_image(core: Core, data_dir: Path) -> None:
    """A folder of one image would otherwise embed to exactly one vector: the refusal is its own."""
    service, detector = _service(core), _service(core, HAAR)
    make_folder(data_dir / "one", 1)
    with pytest.raises(BadInput, match="is a directory") as info:
        image_vector(core, service, str(data_dir / "one"))
    assert info.value.field == "image"
    with pytest.raises(BadInput, match="is a directory") as info:
        query_objects(core, service, str(data_dir / "one"), ObjectQuery(detector=detector.name))
    assert info.value.field == "image"


def test_a_query_image_names_its_field_image(core: Core, data_dir: Path, tmp_path: Path) -> None:
    service = _service(core)
    outside = write_image(tmp_path / "outside.png", np.zeros((32, 32, 3), np.uint8))
    (data_dir / "notes.txt").write_text("not an image")
    for image, reason in (
        (str(outside), "outside the allowed data roots"),
        (str(data_dir / "notes.txt"), "not an image"),
    ):
        with pytest.raises(BadInput, match=reason) as info:
            image_vector(core, service, image)
        assert info.value.field == "image", info.value


@pytest.mark.parametrize(
    ("query", "field"),
    [
        (ObjectQuery(crop=FACES), "crop"),
        (ObjectQuery(confidence_threshold=0.5), "confidence_threshold"),
        (ObjectQuery(query_categories=("face",)), "categories"),
    ],
)
def test_object_options_without_a_detector_are_refused_not_ignored(core: Core, query: ObjectQuery, field: str) -> None:
    service = _service(core)
    assert object_plan(core, service, ObjectQuery(), search=False) is None  # whole images: no object pipeline
    with pytest.raises(BadInput, match="applies to objects only") as info:
        object_plan(core, service, query, search=False)
    assert info.value.field == field


def test_object_queries_need_object_vectors(core: Core, people: dict[str, Path]) -> None:
    service, detector = _service(core), _service(core, HAAR)
    for searched, query in ((service, ObjectQuery()), (detector, ObjectQuery())):  # no detector; no box vectors
        with pytest.raises(BadInput) as info:
            query_objects(core, searched, str(people["astronaut"]), query)
        assert info.value.field == "detector"


def test_similar_images_rank_the_stored_images_by_their_objects(core: Core, people: dict[str, Path]) -> None:
    detector, extractor = _service(core, HAAR), _service(core)
    data = tuple(str(people[k]) for k in ("astronaut", "collage", "coffee"))
    stored = run_chain(
        core, ChainCall(ServiceCall(detector, data), crop=FACES, child=ServiceCall(extractor, (), index=True))
    )
    assert [len(i.objects) for i in stored.images] == [1, 2, 0]
    query = ObjectQuery(detector=detector.name, crop=FACES, k=3, score="sum_similarity")
    found = query_objects(core, extractor, str(people["astronaut"]), query)
    assert (found.service.id, len(found.query.objects), found.generation) == (extractor.id, 1, None)
    assert found.hits[0][0].dist == pytest.approx(0.0, abs=1e-4)
    ranked = similar_images(core, extractor, str(people["astronaut"]), query)
    # every stored face is a hit (k=3 of 3): the collage's two similar faces outweigh the astronaut's one
    ranked_by = [(Path(r.uri).name, r.query_count, r.hit_count) for r in ranked.images]
    assert ranked_by == [("collage.png", 1, 2), ("astronaut.png", 1, 1)]


def test_a_chain_indexing_the_same_file_twice_stores_it_once(core: Core, people: dict[str, Path]) -> None:
    """The same uri twice in one batch: the last one wins, as for whole images (was a UniqueViolation, a 500)."""
    detector, extractor = _service(core, HAAR), _service(core)
    collage = str(people["collage"])
    child = ServiceCall(extractor, (), index=True)
    found = run_chain(core, ChainCall(ServiceCall(detector, (collage, collage)), crop=FACES, child=child))
    assert found.stored == {collage}
    assert found.images[0].objects
    twice = table_counts(core.engine)
    run_chain(core, ChainCall(ServiceCall(detector, (collage,)), crop=FACES, child=child))
    assert table_counts(core.engine) == twice  # the rows of one copy of the file


def test_a_uri_too_long_to_index_is_refused_and_nothing_is_written(core: Core, data_dir: Path) -> None:
    """An incompressible uri over about 2,700 bytes cannot be a key of image.uri's btree: Postgres failed
    mid-call with ProgramLimitExceeded, which the faces answered as a 503 "database unavailable"."""
    service = _service(core)
    [good, other] = make_folder(data_dir, 2)
    before = table_counts(core.engine)
    noise = random.Random(7).choices(string.ascii_letters + string.digits, k=6000)  # incompressible
    for uri, field in (("".join(noise), "index_uris[1]"), ("".join(noise[:3500]), "uri")):
        call = ServiceCall(service, (str(good), str(other)), index_uris=(None, uri), index=True)
        with pytest.raises(BadInput, match=r"at most 4096|too long for Postgres to index") as info:
            run_image_call(core, call)
        assert info.value.field == field
        assert table_counts(core.engine) == before
