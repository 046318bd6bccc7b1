"""Builds from chunks: COPY parsed chunk by chunk as it arrives, a Flat index file written while the
vectors arrive, other indexes added to chunk by chunk. Each must give what the whole matrix gives."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path

import faiss
import numpy as np
import pytest
from sqlalchemy import Engine

from simsearch import store
from simsearch.index import build_generation, faiss_index
from simsearch.index.artefacts import file_sha256
from simsearch.index.generations import INDEX_FILE
from simsearch.store import NewImage
from simsearch.store.read import copy_vectors, iter_copy, raw_connection

# More than one COPY chunk (8 MiB) of 512-d vectors, so a build really sees several.
N, DIM = 4500, 512


def _service(engine: Engine, vectors: np.ndarray, metric: str = "l2") -> store.ServiceRecord:
    name = f"stream-{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        service = store.create_service(
            conn,
            name=name,
            model="synthetic",
            weights="none",
            layer="-",
            input_size=0,
            metric=metric,
            dim=vectors.shape[1],
        )
        uris = [f"{name}/{i}" for i in range(len(vectors))]
        ids = store.upsert_images(conn, [NewImage(u, "0" * 64, 1, 1) for u in uris])
        store.replace_image_vectors(conn, service.id, [ids[u] for u in uris], vectors)
    return service


@pytest.fixture(scope="module")
def stored(engine: Engine) -> tuple[store.ServiceRecord, store.VectorSet]:
    vectors = np.random.default_rng(5).standard_normal((N, DIM)).astype(np.float32)
    service = _service(engine, vectors)
    with engine.connect() as conn:
        return service, store.read_service_vectors(conn, service.id, DIM)


def test_copy_chunks_join_up_to_the_whole(engine: Engine, stored: tuple[store.ServiceRecord, store.VectorSet]) -> None:
    service, whole = stored
    query = "SELECT id, vector FROM embedding WHERE service_id = %s ORDER BY id"
    with engine.connect() as conn:
        chunks = list(iter_copy(raw_connection(conn), query, (service.id,), dim=DIM, chunk_bytes=300_000))
        counted_short = copy_vectors(raw_connection(conn), query, (service.id,), dim=DIM, count=10)  # grows
    assert len(chunks) > 10
    np.testing.assert_array_equal(np.concatenate([c.ids for c in chunks]), whole.ids)
    np.testing.assert_array_equal(np.concatenate([c.vectors for c in chunks]), whole.vectors)
    np.testing.assert_array_equal(counted_short.vectors, whole.vectors)
    assert len(whole) == N


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_a_flat_file_written_chunk_by_chunk_is_faiss_own(tmp_path: Path, metric: str) -> None:
    rng = np.random.default_rng(3)
    vectors, ids = rng.standard_normal((1000, 24)).astype(np.float32), rng.permutation(5000)[:1000] + 1
    file = faiss_index.FlatFile(tmp_path / INDEX_FILE, dim=24, metric=metric, count=1000)
    for start in range(0, 1000, 333):
        file.add(ids[start : start + 333], vectors[start : start + 333])
    size, digest = file.finish()
    whole = faiss_index.build(ids, vectors, metric=metric, index_type="Flat")
    assert (tmp_path / INDEX_FILE).read_bytes() == bytes(faiss.serialize_index(whole))
    assert (size, digest) == ((tmp_path / INDEX_FILE).stat().st_size, file_sha256(tmp_path / INDEX_FILE))
    assert not list(tmp_path.glob("*.tmp"))


def test_a_flat_file_refuses_a_count_it_was_not_given(tmp_path: Path) -> None:
    file = faiss_index.FlatFile(tmp_path / INDEX_FILE, dim=4, metric="l2", count=3)
    file.add(np.arange(2), np.ones((2, 4), np.float32))
    with pytest.raises(RuntimeError, match="3 were counted"):
        file.finish()
    file.abort()
    assert not list(tmp_path.iterdir())  # nothing half-written is left


def test_a_flat_build_from_postgres_is_the_file_of_the_whole_matrix(
    engine: Engine, tmp_path: Path, stored: tuple[store.ServiceRecord, store.VectorSet]
) -> None:
    service, whole = stored
    build = build_generation(engine, service, tmp_path, index_type="Flat")
    path = Path(str(build.path)) / INDEX_FILE
    reference = faiss_index.build(whole.ids, whole.vectors, metric="l2", index_type="Flat")
    assert path.read_bytes() == bytes(faiss.serialize_index(reference))
    assert build.vector_count == N
    assert build.artefact_files == {INDEX_FILE: {"size": path.stat().st_size, "sha256": file_sha256(path)}}


@pytest.mark.parametrize(
    ("index_type", "train_samples"), [("IVF8,Flat", None), ("IVF8,Flat", 900), ("HNSW16", None), ("PCA64,Flat", 700)]
)
def test_chunked_builds_hold_every_vector_once(
    engine: Engine,
    tmp_path: Path,
    stored: tuple[store.ServiceRecord, store.VectorSet],
    index_type: str,
    train_samples: int | None,
) -> None:
    """Built chunk by chunk (after training on all, or on a sample read first): each vector under its id,
    once, so a search that visits every list finds exactly what brute force finds."""
    service, whole = stored
    service = replace(service, index_settings={**service.index_settings, "train_samples": train_samples})
    build = build_generation(engine, service, tmp_path, index_type=index_type)
    index = faiss_index.load(Path(str(build.path)) / INDEX_FILE)
    assert index.ntotal == N
    if index_type.startswith("IVF"):
        ivf = faiss.extract_index_ivf(index)
        listed = np.concatenate(
            [faiss.rev_swig_ptr(ivf.invlists.get_ids(i), ivf.invlists.list_size(i)) for i in range(ivf.nlist)]
        )
        assert sorted(listed.tolist()) == whole.ids.tolist()
        _, found = faiss_index.search(index, whole.vectors[:50], 5, nprobe=ivf.nlist)
        _, exact = faiss.knn(whole.vectors[:50], whole.vectors, 5)
        np.testing.assert_array_equal(found, whole.ids[exact])
        return
    mapped = faiss.vector_to_array(faiss.downcast_index(index).id_map)
    assert sorted(mapped.tolist()) == whole.ids.tolist()
    inner = faiss.downcast_index(faiss.downcast_index(index).index)
    if isinstance(inner, faiss.IndexPreTransform):  # a flat search in the projected space is exact there
        projected = faiss.downcast_VectorTransform(inner.chain.at(0)).apply(whole.vectors)
        _, found = faiss_index.search(index, whole.vectors[:50], 5)
        _, exact = faiss.knn(projected[:50], projected, 5)
        np.testing.assert_array_equal(found, whole.ids[exact])
    else:  # HNSW keeps each vector as it is
        np.testing.assert_array_equal(index.reconstruct_batch(whole.ids), whole.vectors)
