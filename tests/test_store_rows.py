"""`store.upsert_images` (one statement over arrays) against a reference written here: one plain SQL
upsert per image, in order. Same rows, same id per uri, whatever the batch holds."""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import count
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, text

from simsearch import store
from simsearch.store import NewImage

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
