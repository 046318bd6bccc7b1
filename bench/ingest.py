"""Ingest: images/s of the whole pipeline (walk, decode, preprocess, forward, write to Postgres) against
the model's own forward pass on the same batches."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from bench import Row, paired_median_seconds
from bench.data import Database
from simsearch import services
from simsearch.ingest import DECODE_THREADS, ingest
from simsearch.input import Intake
from simsearch.models import ModelCache
from simsearch.samples import PHOTOS, load_photo

BATCH = 32
MAX_PIXELS = 50_000_000


def write_photos(folder: Path, count: int, *, seed: int) -> list[Path]:
    """`count` distinct JPEGs: random crops of scikit-image's bundled photos, rescaled by 0.5-1.25."""
    rng = np.random.default_rng(seed)
    photos = [load_photo(name) for name in PHOTOS]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        ch, cw = int(rng.integers(h // 2, h + 1)), int(rng.integers(w // 2, w + 1))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        scale = rng.uniform(0.5, 1.25)
        size = (max(32, round(cw * scale)), max(32, round(ch * scale)))
        image = cv2.resize(photo[y : y + ch, x : x + cw], size, interpolation=cv2.INTER_AREA)
        path = folder / f"photo-{i:05d}.jpg"
        if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90]):
            raise OSError(f"could not write {path}")
        paths.append(path)
    return paths


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"could not read {path}")
    return np.asarray(image)


def bench_ingest(
    db: Database,
    folder: Path,
    count: int,
    *,
    model: str,
    runs: int,
    seed: int,
    decode_threads: int = DECODE_THREADS,
) -> list[Row]:
    """Rows for `simsearch.ingest.ingest` over a folder of JPEGs against `extractor.forward` alone on the
    same batches (decoded and preprocessed beforehand, untimed). `decode_threads`: ingest's own."""
    paths = write_photos(folder, count, seed=seed)
    # A fresh service per call, so every call stores every vector (the image rows are upserted by uri).
    models = ModelCache()
    records = [
        services.create_service(db.engine, models, f"bench-ingest-{i}", model=model, weights="none")
        for i in range(runs + 1)
    ]  # the warm-up and the timed runs
    fresh = iter(records)
    extractor = services.extractor_for(records[0], models)
    intake = Intake(roots=(folder,), max_pixels=MAX_PIXELS, batch_size=BATCH)

    def pipeline() -> None:
        report = ingest(db.engine, next(fresh), extractor, [str(folder)], intake, decode_threads=decode_threads)
        assert report.indexed == count, report

    rgb = [cv2.cvtColor(_read(p), cv2.COLOR_BGR2RGB) for p in paths]
    batches = [extractor.preprocess(rgb[i : i + BATCH]) for i in range(0, count, BATCH)]

    def forward() -> None:
        for batch in batches:
            extractor.forward(batch)

    ours, reference = paired_median_seconds(pipeline, forward, runs=runs)
    return [
        Row(
            f"ingest {count} JPEGs, {model} batch {BATCH}, {decode_threads} decode threads: pipeline vs model forward",
            count / ours,
            count / reference,
            "img/s",
            ">= 0.9",
            "ingest_vs_forward",
        ),
    ]
