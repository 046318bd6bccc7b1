from __future__ import annotations

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from simsearch import store
from simsearch.errors import Conflict, DatabaseUnavailable, NotFound
from simsearch.store import NewImage
from simsearch.store.tables import Base


def _service(engine: Engine, name: str, dim: int = 8) -> store.ServiceRecord:
    with engine.begin() as conn:
        return store.create_service(
            conn, name=name, model="resnet18", weights="none", layer="flatten", input_size=64, metric="l2", dim=dim
        )


def test_models_match_the_migrated_schema(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_migrations_round_trip(database_url: str) -> None:
    eng = store.make_engine(database_url)
    store.upgrade(eng)
    assert store.db.current_revision(eng) == "0006"
    with eng.connect() as conn:  # 0006: metadata filters have a GIN index
        assert conn.execute(text("SELECT to_regclass('ix_image_metadata')")).scalar() is not None
    store.db.downgrade(eng, "0005")
    with eng.connect() as conn:
        assert conn.execute(text("SELECT to_regclass('ix_image_metadata')")).scalar() is None
    store.db.downgrade(eng, "0004")
    with eng.connect() as conn:  # 0005 recorded each generation's artefacts (store key, size, checksums)
        assert "artefact_key" not in {c["name"] for c in inspect(conn).get_columns("index_build")}
    store.db.downgrade(eng, "0003")
    with eng.connect() as conn:  # 0004 added the input height of non-square services
        assert "input_height" not in {c["name"] for c in inspect(conn).get_columns("service")}
    store.db.downgrade(eng, "0002")
    with eng.connect() as conn:
        signature = "simsearch_join_hits(integer, integer[], bigint[], real[], jsonb)"
        assert conn.execute(text(f"SELECT to_regprocedure('{signature}')")).scalar() is not None
        assert conn.execute(text("SELECT to_regclass('objects')")).scalar() is None
    store.db.downgrade(eng, "0001")
    with eng.connect() as conn:
        signature = "simsearch_join_hits(integer, integer[], bigint[], real[])"
        assert conn.execute(text(f"SELECT to_regprocedure('{signature}')")).scalar() is not None
    store.db.downgrade(eng, "base")
    with eng.connect() as conn:
        assert conn.execute(text("SELECT to_regclass('embedding')")).scalar() is None
        assert conn.execute(text("SELECT to_regclass('image_objects')")).scalar() is None
    store.upgrade(eng)
    with eng.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM image_objects")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM objects")).scalar() == 0
        signature = "simsearch_join_hits(integer, integer[], bigint[], real[], jsonb, text[], boolean)"
        assert conn.execute(text(f"SELECT to_regprocedure('{signature}')")).scalar() is not None
    eng.dispose()


def test_binary_copy_round_trips_vectors_exactly(engine: Engine) -> None:
    svc = _service(engine, "copy", dim=33)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((300, 33)).astype(np.float32)
    with engine.begin() as conn:
        ids = store.upsert_images(conn, [NewImage(f"copy-{i}", "0" * 64, 1, 1) for i in range(300)])
        store.replace_image_vectors(conn, svc.id, [ids[f"copy-{i}"] for i in range(300)], vectors)
    with engine.connect() as conn:
        got = store.read_service_vectors(conn, svc.id, 33)
        tail = store.read_service_vectors(conn, svc.id, 33, after_id=int(got.ids[99]))
    assert len(got) == 300
    assert np.all(np.diff(got.ids) > 0)
    np.testing.assert_array_equal(got.vectors, vectors)
    np.testing.assert_array_equal(tail.vectors, vectors[100:])


def test_one_whole_image_vector_per_service_and_image(engine: Engine) -> None:
    svc = _service(engine, "uniq")
    with engine.begin() as conn:
        ids = store.upsert_images(conn, [NewImage("uniq-0", "0" * 64, 1, 1)])
        store.replace_image_vectors(conn, svc.id, [ids["uniq-0"]], np.ones((1, 8), np.float32))
    # NULLS NOT DISTINCT: a second whole-image row (roi_id null) for the same pair is refused.
    with pytest.raises(IntegrityError, match="uq_embedding"), engine.begin() as conn:
        conn.execute(
            text("INSERT INTO embedding (service_id, image_id, vector) VALUES (:s, :i, '[1,2,3]')"),
            {"s": svc.id, "i": ids["uniq-0"]},
        )


def test_deleting_an_image_cascades_to_its_vectors(engine: Engine) -> None:
    svc = _service(engine, "cascade")
    with engine.begin() as conn:
        ids = store.upsert_images(conn, [NewImage(f"cas-{i}", "0" * 64, 1, 1) for i in range(2)])
        store.replace_image_vectors(conn, svc.id, list(ids.values()), np.ones((2, 8), np.float32))
        assert store.delete_images(conn, [ids["cas-0"]]) == 1
        assert store.count_vectors(conn, svc.id) == 1


def test_service_names_are_unique_and_lookups_say_what_to_do(engine: Engine) -> None:
    _service(engine, "dupe")
    with pytest.raises(Conflict, match="already exists"), engine.begin() as conn:
        store.create_service(conn, name="dupe", model="m", weights="none", layer="x", input_size=1, metric="l2", dim=1)
    with pytest.raises(NotFound, match="simsearch service create"), engine.connect() as conn:
        store.get_service(conn, "nope")


def test_metadata_is_merged_on_reindex(engine: Engine) -> None:
    with engine.begin() as conn:
        first = store.upsert_images(conn, [NewImage("meta-0", "a" * 64, 1, 1, {"label": "cat", "n": 1})])
        second = store.upsert_images(conn, [NewImage("meta-0", "b" * 64, 2, 3, {"n": 2})])
        row = conn.execute(
            text("SELECT sha256, width, height, metadata FROM image WHERE id = :i"), {"i": first["meta-0"]}
        ).one()
    assert first == second
    assert tuple(row) == ("b" * 64, 2, 3, {"label": "cat", "n": 2})


SHORT = store.Timeouts(connect_s=3, statement_s=0.5, lock_s=0.2, pool_s=0.2)


def test_timeouts_reach_the_server_and_waits_that_must_last_lift_them(engine: Engine, database_url: str) -> None:
    timed = store.make_engine(database_url, timeouts=SHORT)
    try:
        with timed.connect() as conn:
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "500ms"
            assert conn.execute(text("SHOW lock_timeout")).scalar() == "200ms"
            store.lock_builds(conn, 987654)  # waiting for another build: as long as it takes
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "0"
            assert conn.execute(text("SHOW lock_timeout")).scalar() == "0"
            store.unlock_builds(conn, 987654)
        with timed.connect() as conn:  # for that transaction only
            assert conn.execute(text("SHOW lock_timeout")).scalar() == "200ms"
    finally:
        timed.dispose()


def test_a_statement_or_lock_timeout_is_database_unavailable(engine: Engine, database_url: str) -> None:
    timed = store.make_engine(database_url, timeouts=SHORT)
    try:
        with timed.connect() as conn, pytest.raises(DatabaseUnavailable) as slow:
            conn.execute(text("SELECT pg_sleep(30)"))
        assert "statement timeout" in slow.value.detail
        with engine.connect() as holder:
            holder.execute(text("LOCK TABLE service IN ACCESS EXCLUSIVE MODE"))  # held until rollback
            with timed.connect() as conn, pytest.raises(DatabaseUnavailable) as blocked:
                conn.execute(text("SELECT count(*) FROM service"))
            holder.rollback()
        assert "lock another transaction holds" in blocked.value.detail
        with timed.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1  # the engine goes on
    finally:
        timed.dispose()


def test_a_pool_that_stays_busy_is_database_unavailable(database_url: str) -> None:
    timed = store.make_engine(database_url, timeouts=SHORT, pool_size=1, max_overflow=0)
    try:
        with timed.connect(), pytest.raises(Exception) as raised:  # noqa: PT011 - the pool's own error, mapped next
            timed.connect()
        unavailable = store.database_unavailable(raised.value)
        assert unavailable is not None
        assert "no free database connection" in unavailable.detail
    finally:
        timed.dispose()
