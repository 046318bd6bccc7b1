"""Typed wrapper over FAISS: build from (ids, vectors), save, load, search; distances as reported."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

import faiss
import numpy as np

from simsearch.errors import BadInput

log = logging.getLogger("simsearch.index")


def faiss_metric(metric: str) -> int:
    # cosine: vectors are stored L2-normalised, so inner product is the cosine
    return int(faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2)


def reported_distance(raw: np.ndarray, metric: str, dim: int) -> np.ndarray:
    """FAISS's raw scores -> the distance we report, whichever index answered:
    l2: Σ(q−x)²/D (DeepDetect's FAISS convention); cosine: sqrt(2 − 2·cos) (its Annoy convention)."""
    raw = raw.astype(np.float32, copy=False)
    if metric == "cosine":
        return np.sqrt(np.maximum(0.0, 2.0 - 2.0 * raw)).astype(np.float32)
    return np.maximum(0.0, raw / np.float32(dim)).astype(np.float32)


_MAX_FACTORY_NUMBER = 1 << 22  # lists, codes, links: beyond this a string is a typo or an attack on memory


def new_index(dim: int, metric: str, index_type: str) -> faiss.Index:
    numbers = [int(n) for n in re.findall(r"\d+", index_type)]
    if any(n < 1 or n > _MAX_FACTORY_NUMBER for n in numbers):
        raise BadInput("index_type", f"{index_type!r}: each number must be between 1 and {_MAX_FACTORY_NUMBER}")
    try:
        index = faiss.index_factory(dim, index_type, faiss_metric(metric))
    except RuntimeError as exc:
        raise BadInput(
            "index_type",
            f"{index_type!r} is not a FAISS index_factory string "
            f"(e.g. Flat, IVF256,Flat, IVF1024,SQ8, HNSW32): {str(exc).splitlines()[-1][:200]}",
        ) from exc
    try:
        faiss.extract_index_ivf(index)  # IVF indexes store ids themselves
    except RuntimeError:
        index = faiss.IndexIDMap2(index)
    return index


def min_training_vectors(index: faiss.Index) -> int:
    """FAISS refuses to train with fewer vectors than IVF lists, or than a PQ/SQ codebook's centroids."""
    inner: faiss.Index
    try:
        ivf = faiss.extract_index_ivf(index)
        inner, need = ivf, int(ivf.nlist)
    except RuntimeError:
        inner = faiss.downcast_index(index.index if isinstance(index, faiss.IndexIDMap2) else index)
        need = 1
    pq = getattr(faiss.downcast_index(inner), "pq", None)
    if pq is not None:
        need = max(need, int(pq.ksub))
    return need


def train(index: faiss.Index, sample: np.ndarray, index_type: str) -> None:
    """Train an index that needs it (IVF lists, PQ/SQ codebooks) on `sample`."""
    need = min_training_vectors(index)
    if len(sample) < need:
        raise BadInput(
            "index_type",
            f"{index_type} needs at least {need} vectors to train, the service has {len(sample)}: index more "
            "images, or use an index with fewer lists (e.g. Flat, or IVF<n> with n at most the vector count)",
        )
    try:
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
    except RuntimeError as exc:
        raise BadInput(
            "index_type", f"cannot train {index_type} on {len(sample)} vectors: {str(exc).splitlines()[-1][:200]}"
        ) from exc


def reserve(index: faiss.Index, count: int) -> None:
    """Size the index's vector storage (flat codes, HNSW's storage) and id map for `count` vectors at once,
    so adding chunk by chunk never grows them: each growth holds the old and the new buffer together
    (peak RSS 2.7x the raw vectors for Flat, bench/). Resizing down keeps a std::vector's capacity."""
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    if isinstance(index, faiss.IndexIDMap2):
        index.id_map.resize(count)
        index.id_map.resize(0)
    storage = faiss.downcast_index(inner.storage) if isinstance(inner, faiss.IndexHNSW) else inner
    if isinstance(storage, faiss.IndexFlatCodes) and storage.ntotal == 0:
        storage.codes.resize(count * storage.code_size)
        storage.codes.resize(0)


def add(index: faiss.Index, ids: np.ndarray, vectors: np.ndarray) -> None:
    index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))


def build(
    ids: np.ndarray,
    vectors: np.ndarray,
    *,
    metric: str,
    index_type: str,
    train_sample: np.ndarray | None = None,
    gpuid: int | None = None,
) -> faiss.Index:
    """A trained index holding `vectors` under `ids` (the embedding ids)."""
    index = new_index(vectors.shape[1], metric, index_type)
    if gpuid is not None:  # train and add on the GPU, keep a CPU copy to write
        index = to_gpu(index, gpuid, index_type)
    if not index.is_trained:
        train(index, train_sample if train_sample is not None else vectors, index_type)
    if gpuid is None:
        reserve(index, len(ids))
    add(index, ids, vectors)
    return to_cpu(index) if gpuid is not None else index


def streams_flat(index_type: str, *, ondisk: bool, gpu: bool) -> bool:
    """Whether a build of `index_type` can be written straight to its file as COPY chunks arrive
    (`FlatFile`): a plain Flat index on the CPU, and this faiss writes the layout FlatFile writes."""
    return index_type.replace(" ", "") == "Flat" and not ondisk and not gpu and _flat_layout_holds()


def _flat_template(dim: int, metric: str, count: int) -> bytes:
    """faiss's own file of an IndexIDMap2(IndexFlat) of `count` vectors, up to where the vectors go: the
    headers say ntotal = count; the codes' and ids' lengths (u64 each) follow, then their bytes."""
    index: Any = new_index(dim, metric, "Flat")
    index.ntotal = count
    index.index.ntotal = count
    template = bytes(faiss.serialize_index(index))
    if not template.endswith(bytes(16)):  # the empty codes and id map: two zero lengths
        raise RuntimeError("unexpected faiss IndexIDMap2(IndexFlat) layout")
    return template[:-16]


@lru_cache(maxsize=1)
def _flat_layout_holds() -> bool:
    """FlatFile writes faiss's layout by hand: check it once against faiss's own writer (a tiny index)."""
    rng = np.random.default_rng(0)
    ids, vectors = np.array([7, 3], np.int64), rng.standard_normal((2, 4)).astype(np.float32)
    index = new_index(4, "l2", "Flat")
    index.add_with_ids(vectors, ids)
    try:
        ours = _flat_template(4, "l2", 2) + _flat_body(ids, vectors)
    except RuntimeError:
        ours = b""
    if ours != bytes(faiss.serialize_index(index)):
        log.warning("this faiss writes Flat indexes in a layout simsearch does not know: builds add, then write")
        return False
    return True


def _flat_body(ids: np.ndarray, vectors: np.ndarray) -> bytes:
    """The codes and ids of a small index, as FlatFile writes them (for the layout check)."""
    return (
        np.uint64(vectors.size).tobytes()
        + vectors.astype("<f4").tobytes()
        + np.uint64(len(ids)).tobytes()
        + ids.astype("<i8").tobytes()
    )


class FlatFile:
    """An IndexIDMap2(IndexFlat) index file written while its vectors arrive, in faiss's layout (checked
    by `streams_flat`): the header, the vectors chunk by chunk, the ids last. A thread writes, hashes
    and syncs each chunk while the caller reads the next, so the file is done when the read is.
    Written under a temporary name and renamed when complete, as `save` does."""

    _SYNC_EVERY = 64 << 20  # bytes written between fdatasyncs: little is left for the last fsync

    def __init__(self, path: Path, *, dim: int, metric: str, count: int) -> None:
        self.path, self.dim, self.count = path, dim, count
        self.tmp = path.with_suffix(path.suffix + ".tmp")
        self.file = self.tmp.open("wb")
        self.digest = hashlib.sha256()
        self.unsynced = 0
        self.added = 0
        self.ids: list[np.ndarray] = []
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="index-file")
        self.pending: list[Future[None]] = []
        self._write(_flat_template(dim, metric, count) + np.uint64(count * dim).tobytes())

    def _write(self, data: bytes | memoryview) -> None:
        self.file.write(data)
        self.digest.update(data)
        self.unsynced += len(data)
        if self.unsynced >= self._SYNC_EVERY:
            os.fdatasync(self.file.fileno())
            self.unsynced = 0

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Queue a chunk (the caller hands it over); at most two wait, so memory stays a few chunks."""
        if self.added + len(ids) > self.count:
            raise RuntimeError(f"more vectors arrived than the {self.count} counted")
        self.added += len(ids)
        self.ids.append(np.ascontiguousarray(ids, dtype="<i8"))
        data = np.ascontiguousarray(vectors, dtype="<f4").data.cast("B")
        while len(self.pending) >= 2:
            self.pending.pop(0).result()
        self.pending.append(self.writer.submit(self._write, data))

    def finish(self) -> tuple[int, str]:
        """Write the ids, sync, rename into place; returns the file's (size, sha256)."""
        for future in self.pending:
            future.result()
        self.writer.shutdown()
        if self.added != self.count:
            raise RuntimeError(f"{self.added} vectors arrived, {self.count} were counted")
        ids = np.concatenate(self.ids) if self.ids else np.empty(0, "<i8")
        self._write(np.uint64(len(ids)).tobytes())
        self._write(ids.data.cast("B"))
        size = self.file.tell()
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        self.tmp.replace(self.path)
        return size, self.digest.hexdigest()

    def abort(self) -> None:
        self.writer.shutdown(cancel_futures=True)
        self.file.close()
        self.tmp.unlink(missing_ok=True)


_GPU_RESOURCES: dict[int, Any] = {}  # one StandardGpuResources per device, shared by every index on it


def gpu_count() -> int:
    """CUDA devices faiss can use: 0 with faiss-cpu (no GPU support compiled in) or without a GPU."""
    count = getattr(faiss, "get_num_gpus", None)
    return int(count()) if count is not None else 0


def check_gpu(gpuid: int) -> None:
    """Refuse `index_gpu` where faiss cannot use the GPU, saying what to install."""
    count = gpu_count()
    if count == 0:
        raise BadInput(
            "index_gpu",
            "faiss sees no CUDA GPU here (faiss-cpu, or no device): install the GPU build in its own environment "
            "(pip install 'simsearch[gpu]', see README, GPU) on a machine with an NVIDIA GPU, or leave index_gpu false",
        )
    if gpuid >= count:
        raise BadInput("index_gpuid", f"{gpuid}: this machine has {count} GPU(s), numbered from 0")


def to_gpu(index: faiss.Index, gpuid: int, index_type: str) -> faiss.Index:
    """A GPU copy of a CPU index (cuVS kernels where faiss has them)."""
    resources = _GPU_RESOURCES.get(gpuid)
    if resources is None:
        resources = _GPU_RESOURCES.setdefault(gpuid, faiss.StandardGpuResources())
    options = faiss.GpuClonerOptions()
    error = RuntimeError("no GPU cloner")
    for cuvs in (True, False) if hasattr(options, "use_cuvs") else (False,):
        if hasattr(options, "use_cuvs"):
            options.use_cuvs = cuvs  # cuVS kernels first; faiss's own where cuVS lacks the index type
        try:
            return faiss.index_cpu_to_gpu(resources, gpuid, index, options)
        except RuntimeError as exc:
            error = exc
    raise BadInput(
        "index_gpu", f"{index_type} has no GPU version in faiss (Flat and IVF ones do): {str(error).splitlines()[-1]}"
    )


def to_cpu(index: faiss.Index) -> faiss.Index:
    return faiss.index_gpu_to_cpu(index)


def check_ondisk(index: faiss.Index, index_type: str) -> None:
    try:
        faiss.extract_index_ivf(index)
    except RuntimeError as exc:
        raise BadInput(
            "ondisk", f"only IVF indexes keep their lists on disk; {index_type} is not one (e.g. IVF1024,SQ8 is)"
        ) from exc


def move_lists_to_disk(index: faiss.Index, ivfdata: Path) -> None:
    """Move an IVF index's inverted lists into `ivfdata` (faiss contrib/ondisk.py's merge): the index file
    then holds only the quantizer, and searches read the lists through a memory map."""
    ivf = faiss.extract_index_ivf(index)
    lists = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(ivfdata))
    sources = faiss.InvertedListsPtrVector()  # type: ignore[attr-defined]  # missing from faiss's stubs
    sources.push_back(ivf.invlists)
    lists.merge_from_multiple(sources.data(), sources.size(), False)
    ivf.replace_invlists(lists, True)
    lists.this.disown()  # type: ignore[attr-defined]  # the index owns (and frees) them now
    with ivfdata.open("rb") as fh:
        os.fsync(fh.fileno())


def save(index: faiss.Index, path: Path) -> None:
    """Write atomically: a reader never sees a half-written file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    faiss.write_index(index, str(tmp))
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    tmp.replace(path)


def load(path: Path) -> faiss.Index:
    # on-disk lists are found beside the index file, so a generation folder can be moved or restored
    return faiss.read_index(str(path), faiss.IO_FLAG_ONDISK_SAME_DIR)


def search_parameters(
    index: faiss.Index, *, nprobe: int | None = None, ef_search: int | None = None
) -> faiss.SearchParameters | None:
    """Per-call search parameters (thread-safe: nothing is set on the shared index). IVF: `nprobe`,
    default lists / 20 (at least 1), also inside pre-transforms (OPQ, PCA); HNSW: `efSearch`."""
    # faiss's bundled stubs lack some of these classes and keywords: set attributes instead
    inner = faiss.downcast_index(index)
    params: Any = None
    if isinstance(inner, faiss.IndexPreTransform):
        nested = search_parameters(inner.index, nprobe=nprobe, ef_search=ef_search)
        if nested is not None:
            params = faiss.SearchParametersPreTransform()
            params.index_params = nested
    elif isinstance(inner, faiss.IndexIDMap2 | faiss.IndexIDMap):
        params = search_parameters(inner.index, nprobe=nprobe, ef_search=ef_search)
    elif isinstance(inner, faiss.IndexIVF):
        params = faiss.SearchParametersIVF()
        params.nprobe = min(nprobe or max(1, inner.nlist // 20), inner.nlist)
    elif isinstance(inner, faiss.IndexHNSW) and ef_search is not None:
        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
        params.efSearch = ef_search
    return cast("faiss.SearchParameters | None", params)


# Searches of at most this many queries run on the calling thread alone. A one-query search is
# far too small to share out: OpenMP's fork/join, and waiting for cores other work holds, cost more
# than the search (bench: 11x slower under load on 2 cores). Larger batches, and builds, use every core.
# Brute force that small stays below faiss's BLAS threshold (distance_compute_blas_threshold), so
# OpenBLAS's own threads are not involved either.
# 0 restores the shipped behaviour (every search on all threads), for comparison.
ONE_THREAD_MAX_QUERIES = 16


@contextmanager
def threads_for(n_queries: int) -> Iterator[None]:
    """FAISS on one OpenMP thread inside the block when `n_queries` is small. OpenMP's thread count
    is the calling thread's own setting: other threads' searches and builds keep theirs."""
    before = faiss.omp_get_max_threads()
    if n_queries > ONE_THREAD_MAX_QUERIES or before == 1:
        yield
        return
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def search(
    index: faiss.Index, queries: np.ndarray, k: int, *, nprobe: int | None = None, ef_search: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Raw (distances, ids), each (nq, k); ids are -1 where the index has fewer than k vectors."""
    k = max(1, min(k, int(index.ntotal))) if index.ntotal else 1
    params = search_parameters(index, nprobe=nprobe, ef_search=ef_search)
    with threads_for(len(queries)):
        distances, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), k, params=params)
    return distances, ids


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Brute force over a (small) set of vectors: returns raw (distances, positions)."""
    if len(vectors) == 0:
        return np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64)
    k = min(k, len(vectors))
    with threads_for(len(queries)):
        distances, positions = faiss.knn(
            np.ascontiguousarray(queries, dtype=np.float32),
            np.ascontiguousarray(vectors),
            k,
            metric=faiss_metric(metric),
        )
    return distances, positions
