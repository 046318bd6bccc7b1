"""Object storage (ROIs, categories, object vectors) and the SQL ranking of images by their objects,
checked against a plain-Python computation of each score on the same hits."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import numpy as np
import pytest
from sqlalchemy import Engine, text

from simsearch import store
from simsearch.store import Hit, NewImage, NewObject

DIM = 4


def _services(engine: Engine, tag: str) -> tuple[store.ServiceRecord, store.ServiceRecord]:
    with engine.begin() as conn:
        detector = store.create_service(
            conn, name=f"det-{tag}", kind="detector", model="opencv:x", weights="packaged", layer="",
            input_size=0, metric="l2", dim=0,
        )  # fmt: skip
        embedder = store.create_service(
            conn, name=f"emb-{tag}", model="resnet18", weights="none", layer="flatten", input_size=64,
            metric="l2", dim=DIM,
        )  # fmt: skip
    return detector, embedder


def _store(engine: Engine, detector: int, service: int | None, uri: str, boxes: list[tuple[str, float]]) -> list[int]:
    rng = np.random.default_rng(len(uri))
    with engine.begin() as conn:
        image_id = store.upsert_images(conn, [NewImage(uri, "0" * 64, 100, 100)])[uri]
        objects = [
            NewObject(image_id, (float(i), 1.0, 10.0 + i, 20.0), prob, category, rng.random(DIM).astype(np.float32))
            for i, (category, prob) in enumerate(boxes)
        ]
        return store.replace_objects(
            conn, detector_id=detector, service_id=service, image_ids=[image_id], objects=objects
        )


def _count(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar_one())


def test_an_image_its_boxes_and_their_vectors_are_stored_together(engine: Engine) -> None:
    detector, embedder = _services(engine, "store")
    roi_ids = _store(engine, detector.id, embedder.id, "a.jpg", [("face", 0.9), ("face", 0.8), ("cat", 0.5)])
    assert len(set(roi_ids)) == 3
    with engine.connect() as conn:
        image_id = conn.execute(text("SELECT id FROM image WHERE uri = 'a.jpg'")).scalar_one()
        objects = store.image_objects(conn, image_id)
    assert [(o.category, o.prob, o.detector, o.embedded_by) for o in objects] == [
        ("face", 0.9, detector.name, [embedder.name]),
        ("face", 0.8, detector.name, [embedder.name]),
        ("cat", 0.5, detector.name, [embedder.name]),
    ]
    assert objects[0].bbox == (0.0, 1.0, 10.0, 20.0)
    assert (
        _count(engine, f"SELECT count(*) FROM embedding WHERE service_id = {embedder.id} AND roi_id IS NOT NULL") == 3
    )
    assert _count(engine, "SELECT count(*) FROM category WHERE name IN ('face', 'cat')") == 2


def test_reindexing_replaces_the_boxes_and_a_second_service_shares_them(engine: Engine) -> None:
    detector, embedder = _services(engine, "replace")
    with engine.begin() as conn:
        other = store.create_service(
            conn, name="emb-replace-2", model="resnet18", weights="none", layer="flatten", input_size=64,
            metric="l2", dim=DIM,
        )  # fmt: skip
    first = _store(engine, detector.id, embedder.id, "b.jpg", [("face", 0.9), ("face", 0.8)])
    shared = _store(engine, detector.id, other.id, "b.jpg", [("face", 0.9), ("face", 0.8)])
    assert shared == first  # the same detections keep their rows: one box, two vectors
    again = _store(engine, detector.id, embedder.id, "b.jpg", [("face", 0.9)])
    assert again == first[:1]
    # the second box is still embedded by the other service, so it stays; both services see their own
    assert _count(engine, f"SELECT count(*) FROM roi WHERE service_id = {detector.id}") == 2
    assert _count(engine, f"SELECT count(*) FROM embedding WHERE service_id = {embedder.id}") == 1
    _store(engine, detector.id, other.id, "b.jpg", [])
    assert _count(engine, f"SELECT count(*) FROM roi WHERE service_id = {detector.id}") == 1
    with engine.begin() as conn:
        store.delete_images(conn, [conn.execute(text("SELECT id FROM image WHERE uri = 'b.jpg'")).scalar_one()])
    assert _count(engine, f"SELECT count(*) FROM roi WHERE service_id = {detector.id}") == 0


def test_the_views_answer_the_readme_questions(engine: Engine) -> None:
    detector, embedder = _services(engine, "views")
    _store(engine, detector.id, embedder.id, "two-faces.jpg", [("face", 0.9), ("face", 0.7)])
    _store(engine, detector.id, embedder.id, "one-face.jpg", [("face", 0.9), ("cup", 0.6)])
    with engine.connect() as conn:
        two = conn.execute(
            text(
                "SELECT uri FROM image_category_counts WHERE category = 'face' AND object_count >= 2"
                " AND uri IN ('two-faces.jpg', 'one-face.jpg')"
            )
        ).scalars()
        assert list(two) == ["two-faces.jpg"]
        per_day = conn.execute(
            text(
                "SELECT date_trunc('day', created_at), count(*) FROM objects"
                f" WHERE detector = '{detector.name}' GROUP BY 1"
            )
        ).all()
        assert [n for _, n in per_day] == [4]


def _python_ranking(hits: list[tuple[int, Hit]], score: str) -> list[tuple[int, float]]:
    """The documented formula of each score, in plain Python, over (query, hit) pairs."""
    by_image: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for q, hit in hits:
        by_image[hit.image_id].append((q, hit.dist))
    rows = []
    for image_id, found in by_image.items():
        dists = [d for _, d in found]
        mean = sum(dists) / len(dists)
        value = {
            "mean": mean,
            "min": min(dists),
            "count": float(len({q for q, _ in found})),
            "sum_similarity": sum(1.0 / (1.0 + d) for d in dists),
        }[score]
        key = -value if score in ("count", "sum_similarity") else value
        rows.append((key, mean, image_id, value))
    return [(image_id, value) for _, _, image_id, value in sorted(rows)]


@pytest.mark.parametrize("score", ["mean", "min", "count", "sum_similarity"])
def test_each_score_matches_its_formula_in_python(engine: Engine, score: str) -> None:
    detector, embedder = _services(engine, f"rank-{score}")
    for n in range(6):
        _store(engine, detector.id, embedder.id, f"rank-{score}-{n}.jpg", [("face", 0.9)] * (1 + n % 3))
    with engine.connect() as conn:
        ids = (
            conn.execute(text(f"SELECT id FROM embedding WHERE service_id = {embedder.id} ORDER BY id")).scalars().all()
        )
    rng = np.random.default_rng(7)
    query_no = [int(q) for q in rng.integers(0, 3, 30)]
    chosen = [int(i) for i in rng.choice(ids, 30)]
    dists = [float(np.float32(d)) for d in rng.random(30)]
    with engine.connect() as conn:
        ranked = store.rank_images(conn, embedder.id, query_no, chosen, dists, score=score, limit=100)
        joined = store.search_rows(
            conn, embedder.id, np.array([chosen]), np.array([dists], np.float32), dim=embedder.dim
        ).hits[0]
    by_id = {h.embedding_id: h for h in joined}
    best: dict[tuple[int, int], float] = {}
    for q, eid, d in zip(query_no, chosen, dists, strict=True):  # a repeated (query, embedding) counts once
        best[(q, eid)] = min(d, best.get((q, eid), np.inf))
    hits = [(q, replace(by_id[eid], dist=d)) for (q, eid), d in best.items()]
    expected = _python_ranking(hits, score)
    assert [r.image_id for r in ranked] == [image_id for image_id, _ in expected]
    np.testing.assert_allclose([r.score for r in ranked], [value for _, value in expected], rtol=1e-6)
    for r in ranked:
        assert r.hit_count == len(r.matches)
        assert all(m["bbox"] is not None and m["category"] == "face" for m in r.matches)


def test_ranking_filters_categories_and_metadata_and_refuses_unknown_scores(engine: Engine) -> None:
    detector, embedder = _services(engine, "filters")
    _store(engine, detector.id, embedder.id, "f-cat.jpg", [("cat", 0.9)])
    _store(engine, detector.id, embedder.id, "f-face.jpg", [("face", 0.9)])
    with engine.connect() as conn:
        ids = (
            conn.execute(text(f"SELECT id FROM embedding WHERE service_id = {embedder.id} ORDER BY id")).scalars().all()
        )
        ranked = store.rank_images(conn, embedder.id, [0, 0], ids, [0.1, 0.2], categories=["face"])
        assert [r.uri for r in ranked] == ["f-face.jpg"]
        assert store.rank_images(conn, embedder.id, [0, 0], ids, [0.1, 0.2], where={"k": 1}) == []
        with pytest.raises(Exception, match="unknown score"):
            conn.execute(text("SELECT * FROM simsearch_rank_images(1, '{}', '{}', '{}', 'median')")).all()
