"""Generations: build a new index beside the old one, publish its files to the artefact store, record it
in Postgres; load a recorded generation (fetched into a replica's own cache and checked first).

`IndexCache` (cache.py) holds each service's loaded generation in a process and swaps in new ones.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import faiss
import numpy as np
from sqlalchemy import Connection, Engine

from simsearch import store
from simsearch.errors import BadInput, SimsearchError
from simsearch.index import annoy_index, faiss_index
from simsearch.index.annoy_index import AnnoyFiles
from simsearch.index.artefacts import ArtefactError, ArtefactStore, DirectoryStore, Manifest, fetch, publish
from simsearch.index.settings import IndexSettings, stored_settings
from simsearch.store import BuildRecord, ServiceRecord
from simsearch.store.read import count_service_vectors, iter_service_vectors, read_vectors_by_id, service_vector_ids

INDEX_FILE = "index.faiss"
LISTS_FILE = "index.ivfdata"  # an `ondisk` IVF index's inverted lists, memory-mapped at search
_SAMPLE_SEED = 1234  # training samples are random but repeatable
log = logging.getLogger("simsearch.index")


@dataclass(frozen=True, slots=True)
class LoadedIndex:
    build: BuildRecord
    index: faiss.Index | AnnoyFiles  # by build.backend


def service_index_dir(index_dir: Path, service: ServiceRecord) -> Path:
    """The service's own folder (its `repository`), or one named after it under `index_dir`."""
    repository = service.index_settings.get("repository")
    return Path(repository) if repository else index_dir / service.name


def generation_dir(index_dir: Path, service: ServiceRecord, build_id: int) -> Path:
    return service_index_dir(index_dir, service) / f"gen-{build_id:08d}"


def artefact_key(service: ServiceRecord, build_id: int) -> str:
    """Where a generation's files live in the artefact store: the same on every host (the default
    directory store at `index_dir` is then the very folder the build wrote)."""
    return f"{service.name}/gen-{build_id:08d}"


def build_generation(
    engine: Engine,
    service: ServiceRecord,
    index_dir: Path,
    *,
    index_type: str | None = None,
    artefacts: ArtefactStore | None = None,
) -> BuildRecord:
    """Rebuild the service's index from Postgres as a new generation, publish its files and make it current.

    Builds of one service are serialised by an advisory lock: a second caller waits, then builds
    again from the newer snapshot. Searches never wait: they keep using the previous generation.
    `artefacts` (None: a directory store at `index_dir`)
    receives the files before the generation is recorded, so every replica that hears of it can fetch it.
    """
    target = artefacts if artefacts is not None else DirectoryStore(index_dir)
    settings = stored_settings(service.index_settings)
    if index_type is not None:
        settings = replace(settings, index_type=index_type)
    check_settings(settings, service.dim, service.metric)  # refuse a bad string before any write
    with engine.connect() as conn:
        if store.count_vectors(conn, service.id) == 0:  # refused before a build row is written
            raise _nothing_to_build(service)
    with engine.connect() as lock:
        store.lock_builds(lock, service.id)
        try:
            return _build_locked(engine, service, index_dir, settings, target)
        finally:
            store.unlock_builds(lock, service.id)


def _nothing_to_build(service: ServiceRecord) -> BadInput:
    return BadInput("service", f"{service.name} has no stored vectors yet; index some images first, then build")


def _build_locked(
    engine: Engine, service: ServiceRecord, index_dir: Path, settings: IndexSettings, target: ArtefactStore
) -> BuildRecord:
    annoy = settings.backend == "annoy"
    label = f"annoy({settings.n_trees or annoy_index.DEFAULT_TREES} trees)" if annoy else settings.index_type
    with engine.begin() as conn:
        store.fail_interrupted_builds(conn, service.id)  # we hold the lock: any `building` row is orphaned
        build_id = store.start_build(
            conn, service.id, settings.backend, label, {"metric": service.metric, "ondisk": settings.ondisk}
        )
    try:
        timings: dict[str, float] = {"read_s": 0.0}
        started = time.perf_counter()
        with _snapshot(engine, service) as snapshot:
            if snapshot.count == 0:  # deleted since the check above
                raise _nothing_to_build(service)
            folder = generation_dir(index_dir, service, build_id)
            folder.mkdir(parents=True, exist_ok=True)
            written = _build_files(snapshot, service.metric, settings, folder, timings)
        timings["total_s"] = time.perf_counter() - started
        started = time.perf_counter()
        manifest = _publish(target, artefact_key(service, build_id), folder, written)
        timings["publish_s"] = time.perf_counter() - started
        with engine.begin() as conn:
            store.finish_build(
                conn,
                build_id,
                vector_count=snapshot.count,
                watermark=snapshot.watermark,
                path=str(folder),
                timings=timings,
                artefact=_artefact_columns(manifest),
            )
            build = store.current_build(conn, service.id)
    except (SimsearchError, RuntimeError, OSError, MemoryError) as exc:
        with engine.begin() as conn:
            store.fail_build(conn, build_id, str(exc))
        raise
    if build is None:  # finish_build just made it ready in the same transaction
        raise RuntimeError(f"generation {build_id} of {service.name} vanished after it was recorded")
    _remove_retired(index_dir, service, keep=build.id)
    _drop_retired_artefacts(engine, target, service, keep=build.id)
    return build


def _artefact_columns(manifest: Manifest) -> dict[str, object]:
    return {
        "artefact_key": manifest.key,
        "artefact_size": manifest.size,
        "artefact_sha256": manifest.sha256,
        "artefact_files": manifest.to_json(),
    }


def manifest_of(build: BuildRecord) -> Manifest | None:
    """What the build published (None: a generation from before the artefact store, at `build.path`)."""
    if build.artefact_key is None or build.artefact_files is None:
        return None
    return Manifest.from_row(build.artefact_key, build.artefact_files)


def _drop_retired_artefacts(engine: Engine, target: ArtefactStore, service: ServiceRecord, *, keep: int) -> None:
    """Delete the store's copies of generations older than `keep` (a replica that loaded one keeps its own
    cached files). The build is committed already: a store that refuses is logged, not a failed build."""
    with engine.connect() as conn:
        old = [b for b in store.list_builds(conn, service.id) if b.id < keep and b.status != "ready"]
    keys = [f"{m.key}/{name}" for b in old if (m := manifest_of(b)) is not None for name in m.files]
    try:
        if keys:
            target.delete(keys)
    except ArtefactError as exc:
        log.warning("could not delete retired generations of %s from the artefact store (%s)", service.name, exc)


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """A service's vectors up to `watermark` (`count` of them), read in one repeatable-read snapshot."""

    conn: Connection
    service_id: int
    dim: int
    watermark: int
    count: int

    def chunks(self, timings: dict[str, float]) -> Iterator[store.VectorSet]:
        """The vectors in id order, chunk by chunk as COPY delivers them; the time spent waiting for
        them is added to timings["read_s"] (the rest of the caller's loop is its own work)."""
        chunks = iter_service_vectors(self.conn, self.service_id, self.dim, upto_id=self.watermark)
        while True:
            started = time.perf_counter()
            chunk = next(chunks, None)
            timings["read_s"] += time.perf_counter() - started
            if chunk is None:
                return
            yield chunk

    def everything(self, timings: dict[str, float]) -> store.VectorSet:
        started = time.perf_counter()
        vectors = store.read_service_vectors(self.conn, self.service_id, self.dim, upto_id=self.watermark)
        timings["read_s"] += time.perf_counter() - started
        return vectors

    def sample(self, size: int, timings: dict[str, float]) -> np.ndarray:
        """`size` vectors drawn at random (repeatably), without reading the others: their ids first."""
        started = time.perf_counter()
        ids = service_vector_ids(self.conn, self.service_id, upto_id=self.watermark)
        rows = np.random.default_rng(_SAMPLE_SEED).choice(len(ids), size, replace=False)
        sample = read_vectors_by_id(self.conn, self.service_id, self.dim, ids[np.sort(rows)]).vectors
        timings["read_s"] += time.perf_counter() - started
        return sample


@contextmanager
def _snapshot(engine: Engine, service: ServiceRecord) -> Iterator[_Snapshot]:
    """The service's vectors as of one snapshot, taken while no write of the service is open; read them
    inside the block (the snapshot's transaction ends with it).

    Ids are drawn when rows are written, not when they commit: a snapshot taken while a writer is open
    could see a higher id committed by another writer and miss the open one's lower ids, which would
    then be in neither the index nor the exact tail (ids above the watermark). The fence waits for
    open writers to commit and holds new ones back until the snapshot is taken (one query), so every
    row committed after it has an id above the watermark. Deletes need no fence: the join drops them.
    """
    with ExitStack() as stack:
        # Both connections first: writers queued behind the fence hold pooled connections, and the
        # snapshot must not wait for one. A checked-out connection is idle (no transaction, no snapshot)
        # until its first query, which runs after the fence is held.
        fence = stack.enter_context(engine.connect())
        conn = stack.enter_context(engine.connect().execution_options(isolation_level="REPEATABLE READ"))
        fenced = fence.begin()
        store.fence_writers(fence, service.id)
        stack.enter_context(conn.begin())
        watermark = store.max_embedding_id(conn, service.id)  # the first query: the snapshot is taken here
        fenced.commit()  # writers go on; what they write from now on is drawn above the watermark
        store.unbounded(conn)  # reading every vector may rightly take longer than a request's statement
        count = count_service_vectors(conn, service.id, upto_id=watermark)
        yield _Snapshot(conn=conn, service_id=service.id, dim=service.dim, watermark=watermark, count=count)


_Written = dict[str, tuple[int, str]]  # the files a build hashed as it wrote them: name -> (size, sha256)


def _build_files(
    snapshot: _Snapshot, metric: str, settings: IndexSettings, folder: Path, timings: dict[str, float]
) -> _Written:
    """Write the generation's files from the snapshot: vectors are added as COPY delivers them, and no
    second copy of them is held (a Flat index goes straight to its file)."""
    started = time.perf_counter()
    if settings.backend == "annoy":
        chunks = ((c.ids, c.vectors) for c in snapshot.chunks(timings))
        trees = annoy_index.build_from_chunks(chunks, snapshot.dim, metric=metric, n_trees=settings.n_trees)
        timings["train_add_s"] = time.perf_counter() - started - timings["read_s"]
        started = time.perf_counter()
        annoy_index.save(trees, folder)
        timings["write_s"] = time.perf_counter() - started
        return {}
    gpu = _use_gpu(settings)
    if faiss_index.streams_flat(settings.index_type, ondisk=settings.ondisk, gpu=gpu):
        return _stream_flat(snapshot, metric, folder, timings)
    index = _faiss_from_snapshot(snapshot, metric, settings, gpu, timings)
    timings["train_add_s"] = time.perf_counter() - started - timings["read_s"]
    started = time.perf_counter()
    if gpu:
        index = faiss_index.to_cpu(index)
    if settings.ondisk:
        faiss_index.move_lists_to_disk(index, folder / LISTS_FILE)
    faiss_index.save(index, folder / INDEX_FILE)
    timings["write_s"] = time.perf_counter() - started
    return {}


def _stream_flat(snapshot: _Snapshot, metric: str, folder: Path, timings: dict[str, float]) -> _Written:
    """A Flat index written to its file while COPY delivers the vectors (FlatFile), hashed on the way."""
    started = time.perf_counter()
    file = faiss_index.FlatFile(folder / INDEX_FILE, dim=snapshot.dim, metric=metric, count=snapshot.count)
    try:
        for chunk in snapshot.chunks(timings):
            file.add(chunk.ids, chunk.vectors)
        timings["train_add_s"] = time.perf_counter() - started - timings["read_s"]
        started = time.perf_counter()
        size, digest = file.finish()
    except BaseException:
        file.abort()
        raise
    timings["write_s"] = time.perf_counter() - started
    return {INDEX_FILE: (size, digest)}


def _faiss_from_snapshot(
    snapshot: _Snapshot, metric: str, settings: IndexSettings, gpu: bool, timings: dict[str, float]
) -> faiss.Index:
    """A trained FAISS index holding the snapshot's vectors. Training on a sample reads the sample first;
    training on every vector holds them once and adds from them; otherwise chunks are added as they come
    into storage sized for all of them."""
    index = faiss_index.new_index(snapshot.dim, metric, settings.index_type)
    if gpu:  # train and add on the GPU; the caller writes a CPU copy
        index = faiss_index.to_gpu(index, settings.gpuid, settings.index_type)
    if not index.is_trained:
        if settings.train_samples is None or settings.train_samples >= snapshot.count:
            everything = snapshot.everything(timings)
            faiss_index.train(index, everything.vectors, settings.index_type)
            faiss_index.add(index, everything.ids, everything.vectors)
            return index
        faiss_index.train(index, snapshot.sample(settings.train_samples, timings), settings.index_type)
    if not gpu:
        faiss_index.reserve(index, snapshot.count)
    for chunk in snapshot.chunks(timings):
        faiss_index.add(index, chunk.ids, chunk.vectors)
    return index


def _publish(target: ArtefactStore, key: str, folder: Path, written: _Written) -> Manifest:
    """`publish`, without reading back the files the build hashed as it wrote them (when those are all)."""
    names = {p.name for p in folder.iterdir() if p.is_file() and not p.name.endswith((".tmp", ".part"))}
    if not written or names != set(written):
        return publish(target, key, folder)
    for name in sorted(written):
        target.put(f"{key}/{name}", folder / name)
    return Manifest(key=key, files=dict(written))


def _use_gpu(settings: IndexSettings) -> bool:
    # DeepDetect's face accepts index_gpu without a GPU (it warns the client); the native face refuses it
    return settings.gpu and settings.backend == "faiss" and faiss_index.gpu_count() > settings.gpuid


def check_settings(settings: IndexSettings, dim: int, metric: str) -> None:
    """Refuse settings that cannot build (a bad index_factory string, ondisk without IVF) before any write."""
    if settings.backend == "faiss":
        empty = faiss_index.new_index(dim, metric, settings.index_type)
        if settings.ondisk:
            faiss_index.check_ondisk(empty, settings.index_type)


def _remove_retired(index_dir: Path, service: ServiceRecord, *, keep: int) -> None:
    """Drop generation folders older than the current one (a reader that already loaded one keeps its
    in-memory copy; FAISS does not read the file after load)."""
    for folder in service_index_dir(index_dir, service).glob("gen-*"):
        if folder.name < f"gen-{keep:08d}":
            shutil.rmtree(folder, ignore_errors=True)


def remove_index_files(index_dir: Path, service: ServiceRecord) -> None:
    """Delete every generation folder of the service (after the service itself is deleted)."""
    for folder in service_index_dir(index_dir, service).glob("gen-*"):
        shutil.rmtree(folder, ignore_errors=True)


def load_current(engine: Engine, service: ServiceRecord) -> LoadedIndex | None:
    """The newest ready generation of the service, or None when it was never built (read in place from
    the folder that built it: for a single process; replicas load through IndexCache)."""
    with engine.connect() as conn:
        build = store.current_build(conn, service.id)
    if build is None or build.path is None:
        return None
    return LoadedIndex(build=build, index=_load_file(service, build, Path(build.path)))


def load_build(
    service: ServiceRecord, build: BuildRecord, *, source: ArtefactStore | None, cache_dir: Path | None
) -> LoadedIndex:
    """Load a recorded generation: fetched from `source` into `cache_dir` and checked, or (no store, or a
    generation from before the artefact store) from the folder the build recorded. Unavailable if it
    cannot be read; ArtefactError says why (missing file, checksum mismatch, store unreachable)."""
    manifest = manifest_of(build)
    if manifest is not None and source is not None and cache_dir is not None:
        folder = fetch(source, manifest, cache_dir.joinpath(*manifest.key.split("/")))
    elif build.path is not None:
        folder = Path(build.path)
    else:
        raise ArtefactError("missing file", f"generation {build.id} of {service.name} recorded no files")
    return LoadedIndex(build=build, index=_load_file(service, build, folder))


def _load_file(service: ServiceRecord, build: BuildRecord, folder: Path) -> faiss.Index | AnnoyFiles:
    try:
        if build.backend == "annoy":
            return annoy_index.load(folder, dim=service.dim, metric=service.metric)
        index = faiss_index.load(folder / INDEX_FILE)
        settings = stored_settings(service.index_settings)
        if _use_gpu(settings) and not build.params.get("ondisk"):
            index = faiss_index.to_gpu(index, settings.gpuid, build.index_type)
        return index
    except (RuntimeError, OSError, ValueError, BadInput) as exc:  # a missing/damaged file: Postgres has every vector
        raise ArtefactError(
            "unreadable index",
            f"generation {build.id} of {service.name} cannot be read from {folder} "
            f"({str(exc).splitlines()[-1][:200]}); build the index again (build_index / POST .../builds) "
            "to restore fast search",
        ) from exc


def search_loaded(
    loaded: LoadedIndex,
    queries: np.ndarray,
    k: int,
    metric: str,
    *,
    nprobe: int | None,
    ef_search: int | None,
    search_k: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(reported distances, embedding ids) from a loaded generation, whichever backend built it."""
    if isinstance(loaded.index, AnnoyFiles):
        return annoy_index.search(loaded.index, queries, k, search_k=search_k)
    raw, ids = faiss_index.search(loaded.index, queries, k, nprobe=nprobe, ef_search=ef_search)
    return faiss_index.reported_distance(raw, metric, queries.shape[1]), ids
