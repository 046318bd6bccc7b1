"""Generations: build a new index beside the old one, record it in Postgres, load the current one."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
from sqlalchemy import Engine

from simsearch import store
from simsearch.errors import BadInput, SimsearchError
from simsearch.index import faiss_index
from simsearch.store import BuildRecord, ServiceRecord

INDEX_FILE = "index.faiss"


@dataclass(frozen=True, slots=True)
class LoadedIndex:
    build: BuildRecord
    index: faiss.Index


def generation_dir(index_dir: Path, service: ServiceRecord, build_id: int) -> Path:
    return index_dir / service.name / f"gen-{build_id:08d}"


def build_generation(
    engine: Engine, service: ServiceRecord, index_dir: Path, *, index_type: str | None = None
) -> BuildRecord:
    """Rebuild the service's index from Postgres as a new generation and make it current."""
    index_type = index_type or str(service.index_settings.get("index_type", "Flat"))
    faiss_index.new_index(service.dim, service.metric, index_type)  # refuse a bad string before any write
    with engine.begin() as conn:
        build_id = store.start_build(conn, service.id, "faiss", index_type, {"metric": service.metric})
    try:
        timings: dict[str, float] = {}
        started = time.perf_counter()
        # One snapshot: the watermark and the vectors read agree.
        with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
            watermark = store.max_embedding_id(conn, service.id)
            vectors = store.read_service_vectors(conn, service.id, service.dim, upto_id=watermark)
        timings["read_s"] = time.perf_counter() - started
        if len(vectors) == 0:
            raise BadInput("service", f"{service.name} has no stored vectors yet; index some images first")
        started = time.perf_counter()
        index = faiss_index.build(vectors.ids, vectors.vectors, metric=service.metric, index_type=index_type)
        timings["train_add_s"] = time.perf_counter() - started
        folder = generation_dir(index_dir, service, build_id)
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        faiss_index.save(index, folder / INDEX_FILE)
        timings["write_s"] = time.perf_counter() - started
        with engine.begin() as conn:
            store.finish_build(
                conn, build_id, vector_count=len(vectors), watermark=watermark, path=str(folder), timings=timings
            )
            build = store.current_build(conn, service.id)
    except (SimsearchError, RuntimeError, OSError) as exc:
        with engine.begin() as conn:
            store.fail_build(conn, build_id, str(exc))
        raise
    if build is None:  # finish_build just made it ready in the same transaction
        raise RuntimeError(f"generation {build_id} of {service.name} vanished after it was recorded")
    _remove_retired(index_dir, service, keep=build.id)
    return build


def _remove_retired(index_dir: Path, service: ServiceRecord, *, keep: int) -> None:
    """Drop generation folders older than the current one (a reader that already loaded one keeps its
    in-memory copy; FAISS does not read the file after load)."""
    root = index_dir / service.name
    for folder in root.glob("gen-*"):
        if folder.name < f"gen-{keep:08d}":
            shutil.rmtree(folder, ignore_errors=True)


def load_current(engine: Engine, service: ServiceRecord) -> LoadedIndex | None:
    """The newest ready generation of the service, or None when it was never built."""
    with engine.connect() as conn:
        build = store.current_build(conn, service.id)
    if build is None or build.path is None:
        return None
    return LoadedIndex(build=build, index=faiss_index.load(Path(build.path) / INDEX_FILE))
