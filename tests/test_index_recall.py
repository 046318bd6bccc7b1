"""Approximate indexes keep their promise on clustered data: recall@10 against brute force above a floor,
for each backend and setting the service exposes (no database needed: the index layer alone)."""

from __future__ import annotations

import numpy as np
import pytest

from simsearch.index import annoy_index, faiss_index

N, DIM, K = 6000, 64, 10


@pytest.fixture(scope="module")
def clustered() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A Gaussian mixture (as real embeddings cluster), queries drawn near the data, and the true kNN."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(40, DIM)).astype(np.float32) * 4
    data = centres[rng.integers(0, 40, N)] + rng.normal(size=(N, DIM)).astype(np.float32)
    queries = data[rng.choice(N, 200, replace=False)] + 0.3 * rng.normal(size=(200, DIM)).astype(np.float32)
    _, truth = faiss_index.exact_search(data, queries, K, "l2")
    return data, queries.astype(np.float32), truth


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


@pytest.mark.parametrize(
    ("index_type", "knobs", "floor"),
    [
        ("Flat", {}, 1.0),
        ("IVF64,Flat", {"nprobe": 8}, 0.9),
        ("IVF64,SQ8", {"nprobe": 8}, 0.9),
        ("HNSW32", {"ef_search": 64}, 0.95),
        ("IVF64,SQ4", {"nprobe": 16}, 0.7),
        ("PCAR48,IVF64,Flat", {"nprobe": 16}, 0.5),  # nprobe reaches the IVF inside a pre-transform
    ],
)
def test_faiss_recall_at_10(
    clustered: tuple[np.ndarray, np.ndarray, np.ndarray], index_type: str, knobs: dict[str, int], floor: float
) -> None:
    data, queries, truth = clustered
    ids = np.arange(1000, 1000 + N, dtype=np.int64)  # embedding ids, not positions
    index = faiss_index.build(ids, data, metric="l2", index_type=index_type)
    _, found = faiss_index.search(index, queries, K, **knobs)
    assert _recall(found - 1000, truth) >= floor


def test_nprobe_buys_recall(clustered: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    data, queries, truth = clustered
    index = faiss_index.build(np.arange(N), data, metric="l2", index_type="IVF64,Flat")
    recalls = [_recall(faiss_index.search(index, queries, K, nprobe=n)[1], truth) for n in (1, 4, 64)]
    assert recalls[0] < recalls[1] < recalls[2]
    assert recalls[2] == pytest.approx(1.0)  # every list: exact


def test_train_samples_train_on_a_subset(clustered: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    data, queries, truth = clustered
    sample = data[np.random.default_rng(3).choice(N, 2000, replace=False)]
    index = faiss_index.build(np.arange(N), data, metric="l2", index_type="IVF64,Flat", train_sample=sample)
    assert index.ntotal == N
    assert _recall(faiss_index.search(index, queries, K, nprobe=8)[1], truth) >= 0.9


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_annoy_recall_at_10(clustered: tuple[np.ndarray, np.ndarray, np.ndarray], metric: str) -> None:
    data, queries, _ = clustered
    if metric == "cosine":  # cosine services store unit vectors
        data = data / np.linalg.norm(data, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    _, truth = faiss_index.exact_search(data, queries, K, metric)
    index = annoy_index.build(np.arange(N) + 5, data, metric=metric, n_trees=30)
    dist, found = annoy_index.search(index, queries, K, search_k=3000)
    assert _recall(found - 5, truth) >= 0.9
    # distances as every backend reports them
    raw, positions = faiss_index.exact_search(data, queries, 1, metric)
    expected = faiss_index.reported_distance(raw, metric, DIM)[:, 0]
    hit_first = found[:, 0] - 5 == positions[:, 0]
    assert dist[hit_first, 0] == pytest.approx(expected[hit_first], rel=1e-3, abs=1e-4)
