"""Ingest decodes the images of a batch in parallel, each preprocessed alone: the stored vectors are the
ones one thread, or the model on the whole batch at once, makes; skipped files and order are kept."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy import Engine, text
from tests.conftest import intake, make_folder, new_service

from simsearch import services
from simsearch.ingest import ingest
from simsearch.models import ModelCache


def _stored(engine: Engine, service_id: int) -> dict[str, np.ndarray]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT i.uri, e.vector FROM embedding e JOIN image i ON i.id = e.image_id WHERE e.service_id = :s"),
            {"s": service_id},
        )
        return {r.uri: r.vector.to_numpy().astype(np.float32) for r in rows}


@pytest.mark.parametrize("threads", [1, 4])
def test_parallel_decoding_stores_what_the_batch_forward_makes(
    engine: Engine, models: ModelCache, tmp_path: Path, threads: int
) -> None:
    paths = make_folder(tmp_path / "photos", 11, ext=".jpg")  # 3 batches of 4, the last short
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    service = new_service(engine, models)
    extractor = services.extractor_for(service, models)
    report = ingest(engine, service, extractor, [str(tmp_path / "photos")], intake(tmp_path), decode_threads=threads)
    assert (report.indexed, report.skipped) == (11, 1)
    assert report.skipped_uris == [str(tmp_path / "photos" / "notes.txt")]
    rgb = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths]
    whole = extractor.forward(extractor.preprocess(rgb))  # every image in one batch, preprocessed together
    stored = _stored(engine, service.id)
    assert sorted(stored) == sorted(str(p) for p in paths)
    for path, vector in zip(paths, whole, strict=True):
        np.testing.assert_allclose(stored[str(path)], vector, rtol=1e-4, atol=1e-5)
