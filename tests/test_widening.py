"""Widening is per query and bounded (issue 14): when the join leaves one query of a batch short of k, only
that query is searched again (deeper each round, at most a few rounds, the last exhaustive); the others
keep their first answers, identical to searching them alone."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine

from simsearch import search, store
from simsearch.index import LoadedIndex, build_generation, faiss_index, load_current
from simsearch.search import SearchOptions, search_vectors
from simsearch.store import NewImage, ServiceRecord

DIM, K = 16, 10
CATS, DOGS, STRAYS = 60, 300, 15  # cluster A: cats only; cluster B: dogs only; strays: cats between them
CAT = SearchOptions(where={"label": "cat"})


def _data() -> tuple[np.ndarray, list[str], np.ndarray]:
    """Vectors, their labels, and 5 queries: the first in the dog cluster, the others among the cats."""
    rng = np.random.default_rng(1414)
    a, b = np.zeros(DIM, np.float32), np.full(DIM, 6.0, np.float32)
    cats = a + rng.normal(size=(CATS, DIM)).astype(np.float32)
    dogs = b + rng.normal(size=(DOGS, DIM)).astype(np.float32)
    strays = (a + b) / 2 + rng.normal(size=(STRAYS, DIM)).astype(np.float32)
    vectors = np.concatenate([cats, dogs, strays])
    labels = ["cat"] * CATS + ["dog"] * DOGS + ["cat"] * STRAYS
    queries = np.concatenate([b[None] + 0.2, a + 0.3 * rng.normal(size=(4, DIM)).astype(np.float32)])
    return vectors, labels, queries.astype(np.float32)


def _service(engine: Engine, vectors: np.ndarray, labels: list[str]) -> tuple[ServiceRecord, np.ndarray]:
    """A raw service holding `vectors`, one image each, labelled; returns it and the embedding ids in order."""
    name = f"wide_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        service = store.create_service(
            conn, name=name, model="synthetic", weights="none", layer="-", input_size=0, metric="l2", dim=DIM
        )
        uris = [f"{name}-{i}" for i in range(len(vectors))]
        images = [
            NewImage(uri=u, sha256="0" * 64, width=1, height=1, metadata={"label": label})
            for u, label in zip(uris, labels, strict=True)
        ]
        ids = store.upsert_images(conn, images)
        store.replace_image_vectors(conn, service.id, [ids[u] for u in uris], vectors)
    with engine.connect() as conn:
        stored = store.read_service_vectors(conn, service.id, DIM)
    return service, stored.ids


@pytest.fixture(scope="module")
def collection(engine: Engine) -> tuple[ServiceRecord, np.ndarray, np.ndarray, np.ndarray]:
    vectors, labels, queries = _data()
    service, ids = _service(engine, vectors, labels)
    is_cat = np.array([label == "cat" for label in labels])
    # the true filtered answer of the first query: its K nearest cats
    order = np.argsort(((vectors[is_cat] - queries[0]) ** 2).sum(axis=1), kind="stable")
    return service, ids, queries, ids[is_cat][order[:K]]


@pytest.fixture(autouse=True)
def widening_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each search as if its filter were new: no pass rate is remembered between searches (a remembered one
    makes the next search deeper at once, or exact in Postgres), so that rounds can be counted."""
    monkeypatch.setattr(search, "_PASS_RATES_MAX", 0)


def _loaded(engine: Engine, service: ServiceRecord, index_type: str, folder: Path) -> LoadedIndex | None:
    if index_type == "none":  # no build: the exact search over vectors newer than any index
        return None
    build_generation(engine, service, folder, index_type=index_type)
    return load_current(engine, service)


def _counting(monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], list[int]]:
    """Real calls, counted: the queries of each FAISS search (index or exact), and each SQL join's queries."""
    searched: list[int] = []
    joined: list[int] = []

    def counted(real: Callable[..., Any], log: list[int], queries_at: int) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            log.append(len(args[queries_at]))
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(faiss_index, "search", counted(faiss_index.search, searched, 1))
    monkeypatch.setattr(faiss_index, "exact_search", counted(faiss_index.exact_search, searched, 1))
    monkeypatch.setattr(store, "search_rows", counted(store.search_rows, joined, 2))  # (conn, sid, ids, ...)
    return searched, joined


@pytest.mark.parametrize("index_type", ["Flat", "IVF4,Flat", "HNSW16", "none"])
def test_only_the_short_query_is_searched_again(
    engine: Engine,
    collection: tuple[ServiceRecord, np.ndarray, np.ndarray, np.ndarray],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    index_type: str,
) -> None:
    service, _, queries, truth = collection
    index = _loaded(engine, service, index_type, tmp_path / "ix")
    options = CAT if index_type != "IVF4,Flat" else SearchOptions(where={"label": "cat"}, nprobe=1)
    alone = [search_vectors(engine, service, index, q[None], K, options)[0] for q in queries[1:]]
    searched, joined = _counting(monkeypatch)
    batch = search_vectors(engine, service, index, queries, K, options)

    assert batch[1:] == alone  # ids, distances, rows: as if searched alone
    assert all(len(hits) == K for hits in batch)
    assert all(hit.metadata["label"] == "cat" for hits in batch for hit in hits)
    if index_type != "HNSW16":  # an exhaustive round of an HNSW graph may still miss an unreached node
        assert [hit.embedding_id for hit in batch[0]] == truth.tolist()
    if index_type == "none":  # no index, 5 queries: the rows, filtered in SQL, in one statement, ranked exactly
        assert searched == joined == [len(queries)]
        return
    assert searched[0] == len(queries)  # the first round asks for the whole batch
    assert len(searched) > 1
    assert all(n == 1 for n in searched[1:])  # then only the short one, again
    assert joined == searched  # each round: one search and one join, of the same queries
    assert len(joined) <= 5  # bounded: a few rounds, never one per growth step up to every row


def test_a_batch_that_needs_no_widening_is_searched_and_joined_once(
    engine: Engine,
    collection: tuple[ServiceRecord, np.ndarray, np.ndarray, np.ndarray],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service, _, queries, _ = collection
    index = _loaded(engine, service, "HNSW16", tmp_path / "ix")
    searched, joined = _counting(monkeypatch)
    hits = search_vectors(engine, service, index, queries[1:], K, CAT)
    assert [len(h) for h in hits] == [K] * 4
    assert (searched, len(joined)) == ([4], 1)


@pytest.mark.parametrize("index_type", ["Flat", "HNSW16", "none"])
def test_a_filter_nothing_passes_ends_after_a_bounded_number_of_rounds(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, index_type: str
) -> None:
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(6000, DIM)).astype(np.float32)  # enough rows for many 4x growth steps
    service, _ = _service(engine, vectors, ["dog"] * len(vectors))
    index = _loaded(engine, service, index_type, tmp_path / "ix")
    _, joined = _counting(monkeypatch)
    queries = vectors[:3] + 0.1
    assert search_vectors(engine, service, index, queries, K, SearchOptions(where={"label": "bird"})) == [[]] * 3
    if index_type == "none":  # Postgres answers exactly, in one statement: no FAISS search or join
        assert joined == []
    else:
        assert 1 < len(joined) <= 5


@pytest.mark.parametrize("index_type", ["Flat", "IVF16,Flat", "HNSW16"])
def test_rows_the_index_does_not_reach_are_ranked_in_postgres_not_by_a_whole_index_search(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, index_type: str
) -> None:
    """A filter only a few far-away rows pass: once widening would search the whole index (an HNSW graph
    with ef = every row costs seconds at 100k), the short queries are ranked exactly in Postgres over the
    rows that pass, and the answer is exact."""
    rng = np.random.default_rng(8)
    dogs = rng.normal(size=(3000, DIM)).astype(np.float32)
    cats = 40.0 + rng.normal(size=(5, DIM)).astype(np.float32)  # far from every query
    service, ids = _service(engine, np.concatenate([dogs, cats]), ["dog"] * len(dogs) + ["cat"] * len(cats))
    index = _loaded(engine, service, index_type, tmp_path / "ix")
    asked: list[int] = []
    real = faiss_index.search
    monkeypatch.setattr(faiss_index, "search", lambda *a, **kw: asked.append(a[2]) or real(*a, **kw))
    queries = dogs[:2] + 0.1
    hits = search_vectors(engine, service, index, queries, K, CAT)
    assert [{h.embedding_id for h in per_query} for per_query in hits] == [set(ids[-5:].tolist())] * 2
    assert max(asked) < len(dogs)  # no round asked the index for every row
