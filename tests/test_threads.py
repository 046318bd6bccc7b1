"""FAISS threading that fits the work (issue 14): small searches run on the calling thread's own single
OpenMP thread, large batches on every thread; either way the answers are the same, ids and distances."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import faiss
import numpy as np
import pytest

from simsearch.index import faiss_index

N, DIM, K = 3000, 32, 10
MANY = 4  # threads for the "N threads" runs: more than one even on a one-core machine


@pytest.fixture
def many_threads() -> Iterator[None]:
    """This thread's FAISS on MANY OpenMP threads for the test, restored after."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(MANY)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(14)
    centres = rng.normal(size=(20, DIM)).astype(np.float32) * 4
    vectors = centres[rng.integers(0, 20, N)] + rng.normal(size=(N, DIM)).astype(np.float32)
    queries = vectors[rng.choice(N, 64, replace=False)] + 0.3 * rng.normal(size=(64, DIM)).astype(np.float32)
    return vectors, queries.astype(np.float32)


def _on_threads(threads: int, fn: Callable[[], tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """fn() with every search on exactly `threads` OpenMP threads (threads_for's choice switched off)."""
    before = faiss.omp_get_max_threads()
    keep = faiss_index.ONE_THREAD_MAX_QUERIES
    faiss_index.ONE_THREAD_MAX_QUERIES = 0
    faiss.omp_set_num_threads(threads)
    try:
        return fn()
    finally:
        faiss.omp_set_num_threads(before)
        faiss_index.ONE_THREAD_MAX_QUERIES = keep


KNOBS: dict[str, dict[str, int]] = {"Flat": {}, "IVF32,Flat": {"nprobe": 4}, "HNSW16": {"ef_search": 32}}


@pytest.mark.parametrize("index_type", list(KNOBS))
@pytest.mark.parametrize("nq", [1, 5, 64], ids=["one", "small-batch", "batch"])
def test_one_thread_and_many_give_the_same_answers(
    data: tuple[np.ndarray, np.ndarray], index_type: str, nq: int
) -> None:
    vectors, queries = data
    index = faiss_index.build(np.arange(N, dtype=np.int64) + 7, vectors, metric="l2", index_type=index_type)

    def run() -> tuple[np.ndarray, np.ndarray]:
        return faiss_index.search(index, queries[:nq], K, **KNOBS[index_type])

    one_dist, one_ids = _on_threads(1, run)
    many_dist, many_ids = _on_threads(MANY, run)
    shipped_dist, shipped_ids = run()  # threads_for's own choice
    assert (one_ids >= 0).all()
    np.testing.assert_array_equal(one_ids, many_ids)
    np.testing.assert_array_equal(one_dist, many_dist)
    np.testing.assert_array_equal(one_ids, shipped_ids)
    np.testing.assert_array_equal(one_dist, shipped_dist)


@pytest.mark.parametrize("nq", [1, 64])
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_exact_search_on_one_thread_and_many(data: tuple[np.ndarray, np.ndarray], nq: int, metric: str) -> None:
    vectors, queries = data
    if metric == "cosine":
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def run() -> tuple[np.ndarray, np.ndarray]:
        return faiss_index.exact_search(vectors, queries[:nq], K, metric)

    one, many = _on_threads(1, run), _on_threads(MANY, run)
    np.testing.assert_array_equal(one[1], many[1])
    np.testing.assert_array_equal(one[0], many[0])


def _threads_seen(
    monkeypatch: pytest.MonkeyPatch,
    index: Any,  # a faiss index: its search method is replaced on the instance
    vectors: np.ndarray,
    queries: np.ndarray,
) -> list[int]:
    """The OpenMP thread count each real FAISS call (index.search, faiss.knn) ran with."""
    seen: list[int] = []
    search, knn = index.search, faiss.knn

    def observed(real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            seen.append(faiss.omp_get_max_threads())
            return real(*args, **kwargs)

        return call

    index.search = observed(search)  # the SWIG proxy takes an instance attribute
    monkeypatch.setattr(faiss, "knn", observed(knn))
    faiss_index.search(index, queries, K)
    faiss_index.exact_search(vectors, queries, K, "l2")
    return seen


@pytest.mark.usefixtures("many_threads")
def test_small_searches_run_on_one_thread_and_large_batches_on_all(
    data: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    vectors, queries = data
    index = faiss_index.build(np.arange(N, dtype=np.int64), vectors, metric="l2", index_type="Flat")
    small = faiss_index.ONE_THREAD_MAX_QUERIES
    assert _threads_seen(monkeypatch, index, vectors, queries[:1]) == [1, 1]
    assert _threads_seen(monkeypatch, index, vectors, queries[:small]) == [1, 1]
    assert _threads_seen(monkeypatch, index, vectors, queries[: small + 1]) == [MANY, MANY]
    assert faiss.omp_get_max_threads() == MANY  # restored after each small search


@pytest.mark.usefixtures("many_threads")
def test_one_thread_is_the_calling_threads_own_setting() -> None:
    """A request thread inside a small search leaves every other thread (a build, a batch) its cores."""
    inside, release = threading.Event(), threading.Event()
    seen: dict[str, int] = {}

    def request() -> None:
        with faiss_index.threads_for(1):
            seen["request"] = faiss.omp_get_max_threads()
            inside.set()
            release.wait(10)

    worker = threading.Thread(target=request)
    worker.start()
    try:
        assert inside.wait(10)
        seen["main"] = faiss.omp_get_max_threads()
    finally:
        release.set()
        worker.join()
    assert seen == {"request": 1, "main": MANY}
