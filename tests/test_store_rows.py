"""`store.upsert_images` (one statement over arrays) against a reference written here: one plain SQL
upsert per image, in order. Same rows, same id per uri, whatever the batch holds. `store_image_vectors`
(images and vectors in one statement) against that upsert and a DELETE + INSERT of each vector."""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import count
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, text

from simsearch import store
from simsearch.store import NewImage
from simsearch.store.write import store_image_vectors

_prefixes = count()
# Text Postgres can store (no NUL, no lone surrogates): quotes, backslashes, unicode, and now and then long.
_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=20)
_long = st.text(st.sampled_from("'\"\\{}[],ü漢🙂 \n"), min_size=500, max_size=600)  # uri and sha256 are
# btree-indexed (at most 2704 bytes a row): long, not unbounded; metadata values are longer still
_longer = st.text(st.sampled_from("'\"\\{}[],ü漢🙂 \n"), min_size=3000, max_size=4000)
_values = st.one_of(
    st.integers(-(2**53), 2**53), st.booleans(), st.none(), _text, _longer, st.lists(st.integers(), max_size=3)
)
_metadata = st.dictionaries(st.one_of(st.sampled_from(["label", "n", "'", "ü"]), _text), _values, max_size=4)
_images = st.builds(
    lambda uri, sha, w, h, meta: (uri, sha, w, h, meta),
    st.one_of(st.sampled_from(["a", "b", "it's", 'q"uote', "ünï 漢", "back\\slash"]), _text, _long),
    st.one_of(st.sampled_from(["0" * 64, "f" * 64]), _text),
    st.integers(1, 2**31 - 1),
    st.integers(1, 2**31 - 1),
    _metadata,
)
_batches = st.lists(st.lists(_images, max_size=8), min_size=1, max_size=3)  # uris repeat within and across


def _reference(conn: Connection, images: Sequence[NewImage]) -> dict[str, int]:
    """One upsert per uri, the batch's last image of it (as ingest: the last wins whole); metadata merged
    with the stored row's (new keys win)."""
    ids = {}
    for i in {i.uri: i for i in images}.values():
        ids[i.uri] = conn.execute(
            text(
                "INSERT INTO image (uri, sha256, width, height, metadata) "
                "VALUES (:uri, :sha, :w, :h, CAST(:meta AS jsonb)) ON CONFLICT (uri) DO UPDATE SET "
                "sha256 = excluded.sha256, width = excluded.width, height = excluded.height, "
                "metadata = image.metadata || excluded.metadata RETURNING id"
            ),
            {"uri": i.uri, "sha": i.sha256, "w": i.width, "h": i.height, "meta": json.dumps(i.metadata)},
        ).scalar_one()
    return ids


def _rows(conn: Connection, prefix: str) -> dict[str, tuple[Any, ...]]:
    rows = conn.execute(
        text("SELECT uri, sha256, width, height, metadata FROM image WHERE starts_with(uri, :p)"), {"p": prefix}
    )
    return {r.uri[len(prefix) :]: (r.sha256, r.width, r.height, r.metadata) for r in rows}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=_batches)
def test_upsert_matches_one_statement_per_image(engine: Engine, batches: list[list[tuple[Any, ...]]]) -> None:
    n = next(_prefixes)
    ours_prefix, ref_prefix = f"rows-ours-{n}/", f"rows-ref-{n}/"
    with engine.connect() as conn, conn.begin() as transaction:
        ours_ids: list[dict[str, int]] = []
        ref_ids: list[dict[str, int]] = []
        for batch in batches:
            ours = [NewImage(ours_prefix + uri, sha, w, h, meta) for uri, sha, w, h, meta in batch]
            ref = [NewImage(ref_prefix + uri, sha, w, h, meta) for uri, sha, w, h, meta in batch]
            ours_ids.append({k[len(ours_prefix) :]: v for k, v in store.upsert_images(conn, ours).items()})
            ref_ids.append({k[len(ref_prefix) :]: v for k, v in _reference(conn, ref).items()})
        assert _rows(conn, ours_prefix) == _rows(conn, ref_prefix)
        for got, want in zip(ours_ids, ref_ids, strict=True):
            assert got.keys() == want.keys()  # every uri of the batch, once
        # the same uri keeps its id across batches, in both, and distinct uris get distinct ids
        for ids in (ours_ids, ref_ids):
            merged: dict[str, int] = {}
            for batch_ids in ids:
                assert all(merged.setdefault(uri, i) == i for uri, i in batch_ids.items())
            assert len(set(merged.values())) == len(merged)
        transaction.rollback()  # never commits: nothing of this outlives the test


def test_upsert_never_commits(engine: Engine) -> None:
    with engine.connect() as conn:
        with conn.begin() as transaction:
            assert set(store.upsert_images(conn, [NewImage("uncommitted", "0" * 64, 1, 1)])) == {"uncommitted"}
            transaction.rollback()
        assert conn.execute(text("SELECT count(*) FROM image WHERE uri = 'uncommitted'")).scalar_one() == 0


# store_image_vectors: images and vectors in one statement, against upsert + DELETE + INSERT per image.
_vector_images = st.builds(
    lambda uri, sha, meta, seed: (uri, sha, meta, seed),
    st.sampled_from(["a", "b", "it's", "ünï 漢", "c"]),
    st.sampled_from(["0" * 64, "f" * 64]),
    _metadata,
    st.integers(0, 2**16),
)
_vector_batches = st.lists(st.lists(_vector_images, min_size=1, max_size=6), min_size=1, max_size=4)
_DIM = 4


def _vector(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(_DIM).astype(np.float32)


def _services(conn: Connection, n: int) -> list[int]:
    return [
        store.create_service(
            conn,
            name=f"rows-vec-{n}-{i}",
            model="synthetic",
            weights="none",
            layer="-",
            input_size=0,
            metric="l2",
            dim=_DIM,
        ).id
        for i in range(2)
    ]


def _reference_vectors(conn: Connection, service_id: int, images: Sequence[NewImage], vectors: np.ndarray) -> None:
    """The plain-SQL way: the upsert above, then per uri (its last vector) DELETE the old row, INSERT anew."""
    ids = _reference(conn, images)
    last = {img.uri: v for img, v in zip(images, vectors, strict=True)}
    for uri, vector in last.items():
        conn.execute(
            text("DELETE FROM embedding WHERE service_id = :s AND image_id = :i AND roi_id IS NULL"),
            {"s": service_id, "i": ids[uri]},
        )
        conn.execute(
            text("INSERT INTO embedding (service_id, image_id, vector) VALUES (:s, :i, CAST(:v AS vector))"),
            {"s": service_id, "i": ids[uri], "v": "[" + ",".join(map(repr, vector.tolist())) + "]"},
        )


def _embeddings(conn: Connection, prefix: str) -> dict[tuple[str, int, bool], tuple[int, list[float]]]:
    """(uri, service_id, is an ROI's) -> (embedding id, vector) of the images under `prefix`."""
    rows = conn.execute(
        text(
            "SELECT i.uri, e.service_id, e.roi_id IS NOT NULL AS roi, e.id, e.vector::text AS v FROM embedding e "
            "JOIN image i ON i.id = e.image_id WHERE starts_with(i.uri, :p)"
        ),
        {"p": prefix},
    )
    return {(r.uri[len(prefix) :], r.service_id, r.roi): (r.id, r.v) for r in rows}


def _seed_neighbours(conn: Connection, prefix: str, other_service: int) -> None:
    """Rows a write of service 0 must leave alone: image 'a' with another service's vector and an ROI's."""
    image_id = store.upsert_images(conn, [NewImage(prefix + "a", "0" * 64, 1, 1)])[prefix + "a"]
    roi_id = conn.execute(
        text(
            "INSERT INTO roi (image_id, service_id, prob, bbox_xmin, bbox_ymin, bbox_xmax, bbox_ymax) "
            "VALUES (:i, :s, 1, 0, 0, 1, 1) RETURNING id"
        ),
        {"i": image_id, "s": other_service},
    ).scalar_one()
    conn.execute(
        text(
            "INSERT INTO embedding (service_id, image_id, roi_id, vector) VALUES (:s, :i, NULL, '[9,9,9,9]'), "
            "(:s, :i, :r, '[8,8,8,8]')"
        ),
        {"s": other_service, "i": image_id, "r": roi_id},
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=_vector_batches)
def test_store_image_vectors_matches_upsert_delete_insert(engine: Engine, batches: list[list[tuple[Any, ...]]]) -> None:
    n = next(_prefixes)
    ours_prefix, ref_prefix = f"rows-vec-ours-{n}/", f"rows-vec-ref-{n}/"
    with engine.connect() as conn, conn.begin() as transaction:
        service, other = _services(conn, n)
        for prefix in (ours_prefix, ref_prefix):
            _seed_neighbours(conn, prefix, other)
        for batch in batches:
            vectors = np.stack([_vector(seed) for *_, seed in batch])
            ours = [NewImage(ours_prefix + uri, sha, 7, 9, meta) for uri, sha, meta, _ in batch]
            ref = [NewImage(ref_prefix + uri, sha, 7, 9, meta) for uri, sha, meta, _ in batch]
            before = {k: v[0] for k, v in _embeddings(conn, ours_prefix).items()}
            top = conn.execute(text("SELECT coalesce(max(id), 0) FROM embedding")).scalar_one()
            ids = store_image_vectors(conn, service, ours, vectors)
            assert set(ids) == {i.uri for i in ours}
            _reference_vectors(conn, service, ref, vectors)
            after = _embeddings(conn, ours_prefix)
            for key, (embedding_id, _) in after.items():  # a stored vector is new (above the top) or untouched
                assert (
                    embedding_id > top
                    if key[0] in {u for u, *_ in batch} and key[1] == service and not key[2]
                    else embedding_id == before[key]
                )
        assert _rows(conn, ours_prefix) == _rows(conn, ref_prefix)
        ours_vectors = {k: v[1] for k, v in _embeddings(conn, ours_prefix).items()}
        assert ours_vectors == {k: v[1] for k, v in _embeddings(conn, ref_prefix).items()}
        transaction.rollback()  # never commits: nothing of this outlives the test
