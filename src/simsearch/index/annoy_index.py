"""Typed wrapper over Annoy: build from (ids, vectors), save, memory-map, search; distances as reported.

Annoy numbers items 0..n-1, so the embedding ids are kept beside the tree file (`ids.npy`, memory-mapped
too) and looked up after a search.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from annoy import AnnoyIndex

TREES_FILE = "index.annoy"
IDS_FILE = "ids.npy"
DEFAULT_TREES = 50


def annoy_metric(metric: str) -> Literal["angular", "euclidean"]:
    # cosine services store L2-normalised vectors; Annoy's "angular" distance is sqrt(2 - 2cos) on them
    return "angular" if metric == "cosine" else "euclidean"


@dataclass(frozen=True, slots=True)
class AnnoyFiles:
    """A loaded (memory-mapped) Annoy index with the embedding id of each item."""

    trees: AnnoyIndex
    ids: np.ndarray
    metric: str

    @property
    def ntotal(self) -> int:
        return len(self.ids)


def build(ids: np.ndarray, vectors: np.ndarray, *, metric: str, n_trees: int | None) -> AnnoyFiles:
    return build_from_chunks([(ids, vectors)], vectors.shape[1], metric=metric, n_trees=n_trees)


def build_from_chunks(
    chunks: Iterable[tuple[np.ndarray, np.ndarray]], dim: int, *, metric: str, n_trees: int | None
) -> AnnoyFiles:
    """The trees over (ids, vectors) chunks, each added as it comes (Annoy keeps its own copy of the
    vectors, so none needs to stay in memory beside it)."""
    trees = AnnoyIndex(dim, annoy_metric(metric))
    trees.set_seed(1234)  # the same data builds the same trees
    all_ids: list[np.ndarray] = []
    position = 0
    for ids, vectors in chunks:
        for vector in vectors:
            trees.add_item(position, vector)
            position += 1
        all_ids.append(np.asarray(ids, dtype=np.int64))
    trees.build(n_trees or DEFAULT_TREES, n_jobs=-1)
    ids = np.concatenate(all_ids) if all_ids else np.empty(0, np.int64)
    return AnnoyFiles(trees=trees, ids=ids, metric=metric)


def save(index: AnnoyFiles, folder: Path) -> None:
    """Write the trees and the ids; each through a temporary name, synced, then renamed."""
    ids_tmp = folder / (IDS_FILE + ".tmp")
    with ids_tmp.open("wb") as fh:
        np.save(fh, index.ids)
        fh.flush()
        os.fsync(fh.fileno())
    ids_tmp.replace(folder / IDS_FILE)
    trees_tmp = folder / (TREES_FILE + ".tmp")
    index.trees.save(str(trees_tmp))
    with trees_tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    trees_tmp.replace(folder / TREES_FILE)


def load(folder: Path, *, dim: int, metric: str) -> AnnoyFiles:
    trees = AnnoyIndex(dim, annoy_metric(metric))
    if not trees.load(str(folder / TREES_FILE)):  # memory-mapped: many processes share the pages
        raise OSError(f"cannot load {folder / TREES_FILE}")
    ids = np.load(folder / IDS_FILE, mmap_mode="r")
    return AnnoyFiles(trees=trees, ids=ids, metric=metric)


def search(index: AnnoyFiles, queries: np.ndarray, k: int, *, search_k: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(reported distances, embedding ids), each (nq, k), -1 ids where fewer were found.

    Annoy's angular distance already is sqrt(2 - 2cos); its euclidean one is the root of what l2
    services report (Σ(q−x)²/D)."""
    k = max(1, min(k, index.ntotal))
    dist = np.full((len(queries), k), np.inf, np.float32)
    ids = np.full((len(queries), k), -1, np.int64)
    for row, query in enumerate(queries):
        found, found_dist = index.trees.get_nns_by_vector(query, k, search_k=search_k or -1, include_distances=True)
        ids[row, : len(found)] = index.ids[np.asarray(found, dtype=np.int64)]
        dist[row, : len(found)] = found_dist
    if index.metric != "cosine":
        dist = np.where(np.isfinite(dist), dist * dist / np.float32(queries.shape[1]), dist)
    return dist, ids
