"""Ingest ("index" in DeepDetect's words): sources -> decode -> extract -> one transaction per batch.

Decoding and preprocessing of the next batch, and the database write of the previous one, run in
threads beside the model's forward pass (OpenCV, torch and psycopg release the GIL), so the
pipeline runs at close to the model's own speed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from typing import Any

import numpy as np
import torch
from sqlalchemy import Connection, Engine

from simsearch import metrics, store
from simsearch.errors import BadInput
from simsearch.input import Intake, Source, decode_image, iter_sources, probe_image
from simsearch.models import Extractor
from simsearch.store import NewImage, ServiceRecord
from simsearch.store.write import store_image_vectors

# Images of a batch decoded at once (OpenCV's decode and resize release the GIL): one thread cannot feed
# a model faster than itself (a GPU's is many times faster). One core is left to the forward pass: on a
# CPU-only host the model uses every core, and decode threads beside it only take turns with it.
DECODE_THREADS = max(1, min(8, (os.cpu_count() or 2) - 1))


@dataclass(frozen=True, slots=True)
class Prediction:
    """One image of the call, in `data` order, with the vector the model made for it."""

    position: int  # which `data` entry it came from
    source_uri: str  # the path as given (or found in a directory), the URL, or sha256:<hex> for bytes
    stored_uri: str  # the uri stored (differs when the caller names it, e.g. DeepDetect's index_uris)
    from_bytes: bool  # base64 or upload content rather than a file or URL
    vector: np.ndarray


@dataclass(slots=True)
class IngestReport:
    indexed: int = 0
    skipped: int = 0
    skipped_uris: list[str] = field(default_factory=list)
    image_ids: dict[str, int] = field(default_factory=dict)  # stored uri -> image id
    predictions: list[Prediction] = field(default_factory=list)  # only with keep_vectors=True


@dataclass(slots=True)
class _Batch:
    sources: list[Source]
    images: list[NewImage]
    pixels: torch.Tensor | None
    skipped: list[str]


def check_source(source: Source, *, max_pixels: int) -> None:
    """An explicit item's header: readable, an image, within the pixel limit (before anything is written)."""
    field_name = f"data[{source.position}]"
    try:
        probe_image(source.head(), max_pixels=max_pixels, field=field_name)
    except OSError as exc:
        raise BadInput(field_name, f"could not read {source.uri}: {exc}") from exc
    except BadInput as exc:
        raise BadInput(field_name, f"{source.uri}: {exc.reason}") from exc


def stored_uri(source: Source, uris: Sequence[str | None] | None) -> str:
    if uris is not None and source.explicit and uris[source.position] is not None:
        return str(uris[source.position])
    return source.uri


def read_image(
    source: Source,
    *,
    max_pixels: int,
    uris: Sequence[str | None] | None,
    metadata: Sequence[dict[str, Any]] | None,
) -> tuple[np.ndarray, NewImage] | None:
    """A source's RGB pixels and the image row to store; None for a file found in a directory that does
    not decode (skipped), while an explicit item that does not is an error naming it."""
    try:
        decoded = decode_image(source.read(), max_pixels=max_pixels, field=f"data[{source.position}]")
    except BadInput as exc:
        if source.explicit:
            raise BadInput(exc.field, f"{source.uri}: {exc.reason}") from exc
        return None
    uri = stored_uri(source, uris)
    store.check_uri(uri, f"data[{source.position}]")  # a path or URL too long to be stored
    image = NewImage(
        uri=uri,
        sha256=decoded.sha256,
        width=decoded.width,
        height=decoded.height,
        metadata=metadata[source.position] if metadata is not None else {},
    )
    return decoded.rgb, image


def _prepare(
    sources: Sequence[Source],
    extractor: Extractor,
    max_pixels: int,
    metadata: Sequence[dict[str, Any]] | None,
    uris: Sequence[str | None] | None,
    images: ThreadPoolExecutor | None = None,
) -> _Batch:
    """Read, decode and preprocess a batch; with `images`, its images in parallel there (OpenCV and the
    tensor arithmetic release the GIL), each preprocessed alone and joined in order."""
    read = partial(_read_one, extractor=extractor, max_pixels=max_pixels, metadata=metadata, uris=uris)
    done = list(images.map(read, sources)) if images is not None and len(sources) > 1 else [read(s) for s in sources]
    kept = [(s, r) for s, r in zip(sources, done, strict=True) if r is not None]
    skipped = [s.uri for s, r in zip(sources, done, strict=True) if r is None]  # files that are not images
    pixels = _join([r[1] for _, r in kept]) if kept else None
    return _Batch(sources=[s for s, _ in kept], images=[r[0] for _, r in kept], pixels=pixels, skipped=skipped)


def _read_one(
    source: Source,
    *,
    extractor: Extractor,
    max_pixels: int,
    metadata: Sequence[dict[str, Any]] | None,
    uris: Sequence[str | None] | None,
) -> tuple[NewImage, Any] | None:
    read = read_image(source, max_pixels=max_pixels, uris=uris, metadata=metadata)
    return None if read is None else (read[1], extractor.preprocess([read[0]]))


def _join(parts: list[Any]) -> Any:  # noqa: ANN401 - each model's own batch type
    """One batch from images preprocessed one by one: a tensor's rows (elementwise preprocessing, so the
    same values as preprocessing them together), or a list's items."""
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts) if len(parts) > 1 else parts[0]
    return [item for part in parts for item in part]


def binarize(vectors: np.ndarray, metric: str) -> np.ndarray:
    """DeepDetect's `binarized`: each value becomes 1 when positive, else 0 (rows re-normalised for cosine)."""
    out = (vectors > 0).astype(np.float32)
    if metric == "cosine":
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out = np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)
    return out


def _batches(sources: Iterator[Source], size: int) -> Iterator[list[Source]]:
    while batch := list(islice(sources, size)):
        yield batch


def _write(conn: Connection, service: ServiceRecord, images: list[NewImage], vectors: np.ndarray) -> dict[str, int]:
    store.join_writers(conn, service.id)  # before any row lock: a build's snapshot then waits for it alone
    store.record_layer(conn, service.id, service.layer, service.dim)  # a first call with another layer
    return store_image_vectors(conn, service.id, images, vectors)  # the same uri twice: the last one wins


def check_items(
    intake: Intake, data: Sequence[object], uris: Sequence[str | None] | None, metadata: Sequence[Any] | None
) -> None:
    """A call's own inputs, before anything is read: its size, one uri per item, uris and metadata that
    Postgres can store."""
    intake.check_count(data)
    if uris is not None and len(uris) != len(data):
        raise BadInput("index_uris", f"must have one entry per data item ({len(data)}), got {len(uris)}")
    if metadata is not None and len(metadata) != len(data):
        raise ValueError("metadata needs one entry per data item")
    for i, uri in enumerate(uris or []):
        if uri is not None:
            store.check_uri(uri, f"index_uris[{i}]")
    for i, entry in enumerate(metadata or []):
        store.check_storable(entry, f"metadata[{i}]")


def _sources(data: Sequence[str | bytes], intake: Intake) -> Iterator[Source]:
    check = partial(check_source, max_pixels=intake.max_pixels)
    return iter_sources(data, roots=intake.roots, check=check, urls=intake.urls)


def embed(
    extractor: Extractor,
    data: Sequence[str | bytes],
    intake: Intake,
    *,
    uris: Sequence[str | None] | None = None,
    binarized_metric: str | None = None,
) -> tuple[list[Prediction], list[str]]:
    """The vector of each image `data` names, in order, and the directory files skipped: no database, no
    threads (a query, or a DeepDetect predict that stores nothing)."""
    check_items(intake, data, uris, None)
    predictions: list[Prediction] = []
    skipped: list[str] = []
    batches = _batches(_sources(data, intake), intake.batch_size)
    for batch, vectors in _embedded(batches, extractor, intake, None, uris, binarized_metric):
        skipped.extend(batch.skipped)
        if vectors is not None:
            predictions.extend(_predictions(batch, vectors))
    return predictions, skipped


def _predictions(batch: _Batch, vectors: np.ndarray) -> Iterator[Prediction]:
    return (
        Prediction(s.position, s.uri, img.uri, s.content is not None, v)
        for s, img, v in zip(batch.sources, batch.images, vectors, strict=True)
    )


def _embedded(
    batches: Iterator[list[Source]],
    extractor: Extractor,
    intake: Intake,
    metadata: Sequence[dict[str, Any]] | None,
    uris: Sequence[str | None] | None,
    binarized_metric: str | None,
    decoder: ThreadPoolExecutor | None = None,
    images: ThreadPoolExecutor | None = None,
) -> Iterator[tuple[_Batch, np.ndarray | None]]:
    """Each batch decoded and embedded (None: no image in it); with `decoder`, the next batch is decoded
    there during the forward pass."""
    prepare = partial(
        _prepare, extractor=extractor, max_pixels=intake.max_pixels, metadata=metadata, uris=uris, images=images
    )
    prepared = map(prepare, batches) if decoder is None else _ahead(decoder, prepare, batches)
    for batch in prepared:
        vectors = extractor.forward(batch.pixels) if batch.pixels is not None else None
        if vectors is not None and binarized_metric is not None:
            vectors = binarize(vectors, binarized_metric)
        yield batch, vectors


def _ahead(
    pool: ThreadPoolExecutor, work: Callable[[list[Source]], _Batch], items: Iterator[list[Source]]
) -> Iterator[_Batch]:
    """work(item) for each item, the next one running in `pool` while the caller uses this one."""
    upcoming = [pool.submit(work, item) for item in islice(items, 1)]
    while upcoming:
        done = upcoming.pop().result()
        upcoming = [pool.submit(work, item) for item in islice(items, 1)]
        yield done


def ingest(
    engine: Engine,
    service: ServiceRecord,
    extractor: Extractor,
    data: Sequence[str | bytes],
    intake: Intake,
    *,
    atomic: bool = False,
    metadata: Sequence[dict[str, Any]] | None = None,
    on_batch: Callable[[int], None] | None = None,
    uris: Sequence[str | None] | None = None,
    keep_vectors: bool = False,
    binarized: bool = False,
    decode_threads: int = DECODE_THREADS,
) -> IngestReport:
    """Index images named by `data` (files, directories, base64, URLs when the intake allows) into `service`.

    Every explicit item is checked before anything is written. `atomic=True` writes the whole call in
    one transaction (an API request); otherwise each batch commits on its own (a large folder).
    `on_batch(n)` is called after each batch with the number of sources it consumed. `uris[i]`, when
    given, is the uri stored for `data[i]`; `metadata[i]` is merged into the stored metadata of every
    image `data[i]` yields. `keep_vectors` returns each image's vector in `predictions`. `decode_threads`
    decode the images of a batch together, beside the model's forward pass of the one before.
    """
    check_items(intake, data, uris, metadata)
    if extractor.dim != service.dim:
        raise BadInput("service", f"the model makes {extractor.dim}-d vectors, {service.name} stores {service.dim}-d")

    batches = _batches(_sources(data, intake), intake.batch_size)
    metric = service.metric if binarized else None
    report = IngestReport()
    with (
        ThreadPoolExecutor(1, thread_name_prefix="decode") as decoder,
        ThreadPoolExecutor(max(1, decode_threads), thread_name_prefix="decode-image") as images,
        ThreadPoolExecutor(1, thread_name_prefix="write") as writer,
        engine.connect() as conn,
    ):
        transaction = conn.begin()
        pending_write: Future[dict[str, int]] | None = None
        try:
            for batch, vectors in _embedded(batches, extractor, intake, metadata, uris, metric, decoder, images):
                if vectors is not None and keep_vectors:
                    report.predictions.extend(_predictions(batch, vectors))
                if pending_write is not None:  # the previous batch's write ran during this forward pass
                    report.image_ids.update(pending_write.result())
                    pending_write = None
                    if not atomic:
                        transaction.commit()
                        transaction = conn.begin()
                if vectors is not None:
                    pending_write = writer.submit(_write, conn, service, batch.images, vectors)
                report.indexed += len(batch.images)
                report.skipped += len(batch.skipped)
                report.skipped_uris.extend(batch.skipped)
                if on_batch is not None:
                    on_batch(len(batch.images) + len(batch.skipped))
            if pending_write is not None:
                report.image_ids.update(pending_write.result())
            transaction.commit()
            metrics.IMAGES_INGESTED.labels(service.name).inc(report.indexed)
        except BaseException:
            if pending_write is not None:  # the writer thread must be off the connection before it rolls back
                wait([pending_write])
            transaction.rollback()
            raise
    return report
