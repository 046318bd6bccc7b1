"""The objects found, stored: each box as its detector's ROI, each vector in the service that embeds it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Engine

from simsearch import store
from simsearch.input import Intake
from simsearch.objects.find import find_objects
from simsearch.objects.types import Detection, ObjectImage, ObjectReport
from simsearch.store import NewObject, ServiceRecord


def _write(
    conn: Connection, detector: ServiceRecord, service: ServiceRecord | None, images: list[ObjectImage]
) -> tuple[dict[str, int], int]:
    images = list({i.stored_uri: i for i in images}.values())  # the same uri twice: the last one wins (as ingest)
    with_objects = [i for i in images if i.objects]
    if service is not None:
        store.join_writers(conn, service.id)  # before any row lock: a build's snapshot then waits for it alone
    if service is not None and any(o.vector is not None for i in with_objects for o in i.objects):
        store.record_layer(conn, service.id, service.layer, service.dim)
    ids = store.upsert_images(conn, [i.image for i in with_objects])
    # an image found empty now loses the boxes and vectors an earlier run stored for it
    gone = store.image_ids(conn, [i.stored_uri for i in images if not i.objects])
    rows = [
        NewObject(ids[i.stored_uri], o.bbox, o.prob, o.category, o.vector if service is not None else None)
        for i in with_objects
        for o in i.objects
    ]
    store.replace_objects(
        conn,
        detector_id=detector.id,
        service_id=service.id if service is not None else None,
        image_ids=[*ids.values(), *gone],
        objects=rows,
    )
    return ids, len(rows)


def index_objects(
    engine: Engine,
    detector: ServiceRecord,
    service: ServiceRecord | None,
    data: Sequence[str | bytes],
    how: Detection,
    intake: Intake,
    *,
    atomic: bool = False,
    uris: Sequence[str | None] | None = None,
    metadata: Sequence[dict[str, Any]] | None = None,
    keep_images: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> ObjectReport:
    """Detect the objects in `data` and store them: the boxes as `detector`'s ROIs and, when `service`
    is given, each box's vector in `service` (the detector's own for rois, an extractor's for a chain).

    An image and its boxes and vectors commit together; `atomic=True` writes the whole call in one
    transaction (an API request), otherwise each batch commits (a large folder). An image in which
    nothing is found stores nothing (and loses what an earlier run stored). `keep_images=False` returns
    counts only (a large folder: memory stays bounded).
    """
    report = ObjectReport()
    batches = find_objects(data, how, intake, uris=uris, metadata=metadata)
    with engine.connect() as conn:
        transaction = conn.begin()
        try:
            for images, skipped in batches:
                ids, count = _write(conn, detector, service, images)
                report.image_ids.update(ids)
                report.objects_stored += count
                if not atomic:
                    transaction.commit()
                    transaction = conn.begin()
                if keep_images:
                    report.images.extend(images)
                found = sum(1 for i in images if i.objects)
                report.with_objects += found
                report.without_objects += len(images) - found
                report.skipped.extend(skipped)
                if on_batch is not None:
                    on_batch(len(images) + len(skipped))
            transaction.commit()
        except BaseException:
            transaction.rollback()
            raise
    return report
