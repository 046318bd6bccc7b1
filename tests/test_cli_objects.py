"""Objects from the `simsearch` console script, run as a user would (a real process per command): detector
and extractor services, indexing the faces of a folder, and ranking the stored images by their faces."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import matplotlib.cbook
import numpy as np
import skimage.data
from tests.conftest import write_image
from tests.test_cli import run

FACES = ("--detector", "faces", "--padding-ratio", "0.1", "--confidence-threshold", "0.6")


def photos(folder: Path) -> dict[str, Path]:
    astronaut = skimage.data.astronaut()
    grace = cv2.imread(str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    made = {
        "astronaut": write_image(folder / "astronaut.png", astronaut),
        "collage": write_image(folder / "collage.png", np.hstack([astronaut, astronaut])),
        "grace": write_image(folder / "grace.png", cv2.cvtColor(grace, cv2.COLOR_BGR2RGB)),
        "coffee": write_image(folder / "coffee.png", skimage.data.coffee()),
    }
    (folder / "notes.txt").write_text("not an image")
    return made


def test_index_faces_and_rank_images_by_their_faces(env: dict[str, str], data_dir: Path) -> None:
    paths = photos(data_dir / "people")
    created = run(env, "service", "create", "faces", "--model", "dlib:frontal_face")
    assert "created service faces: dlib:frontal_face (detector)" in created.stderr
    assert "dim=0" in created.stderr
    created = run(env, "service", "create", "face-vectors", "--model", "dlib:face_descriptor")
    assert "created service face-vectors: dlib:face_descriptor (extractor)" in created.stderr
    assert "dim=128" in created.stderr
    listed = run(env, "service", "list").stdout
    assert "detector" in listed
    assert "extractor" in listed

    indexed = run(env, "index", str(data_dir / "people"), "--service", "face-vectors", *FACES, "--category", "face")
    summary = " ".join(indexed.stderr.split())
    assert "stored 4 objects of 3 images into face-vectors; 1 images without objects; skipped 1" in summary

    table = run(env, "search", str(paths["astronaut"]), "--service", "face-vectors", "--objects", *FACES).stdout
    assert "objects of" in table
    assert "images ranked by mean" in table
    ranked = [line for line in table.splitlines() if ".png" in line and "│" in line]
    assert "astronaut.png" in ranked[0]  # the same face, distance 0, and nothing else in the image
    assert len(ranked) == 3  # every image with a face (coffee stored nothing)

    found = json.loads(
        run(
            env,
            *("search", str(paths["collage"]), "--service", "face-vectors", "--objects", *FACES),
            *("--score", "count", "-k", "2", "--per-object", "--json"),
        ).stdout
    )
    [query] = found
    assert query["uri"] == str(paths["collage"])
    assert [o["category"] for o in query["query_objects"]] == ["face", "face"]
    assert all(o["nns"][0]["dist"] < 1e-4 for o in query["query_objects"])
    first = query["images"][0]
    assert (first["uri"], first["query_count"], first["score"]) == (str(paths["collage"]), 2, 2.0)

    limited = json.loads(
        run(
            env, "search", str(paths["grace"]), "-s", "face-vectors", "--objects", *FACES, "--limit", "1", "--json"
        ).stdout
    )
    assert [i["uri"] for i in limited[0]["images"]] == [str(paths["grace"])]

    refused = run(env, "search", str(paths["grace"]), "--service", "faces", "--objects", ok=False)
    assert refused.returncode == 2
    assert "makes no vectors" in refused.stderr
    unknown = run(env, "index", str(paths["grace"]), "--service", "face-vectors", "--detector", "nope", ok=False)
    assert unknown.returncode == 2
    assert "no service 'nope'" in unknown.stderr
    flag = run(env, "index", str(paths["grace"]), "--service", "face-vectors", "--category", "face", ok=False)
    assert flag.returncode == 2
    assert "--category" in flag.stderr


def test_a_detector_with_box_vectors_indexes_its_own_boxes(env: dict[str, str], data_dir: Path) -> None:
    paths = photos(data_dir / "things")
    created = run(
        env,
        *("service", "create", "boxes", "--model", "fasterrcnn_mobilenet_v3_large_320_fpn"),
        *("--weights", "none", "--size", "320"),
    )
    assert "(detector)" in created.stderr
    assert "dim=1024" in created.stderr
    indexed = run(env, "index", str(paths["coffee"]), str(paths["grace"]), "--service", "boxes")
    assert "of 2 images into boxes" in " ".join(indexed.stderr.split())
    # a random network's box vectors are all about the same: any stored box is a nearest one
    found = json.loads(run(env, "search", str(paths["coffee"]), "-s", "boxes", "--objects", "-k", "1", "--json").stdout)
    assert found[0]["query_objects"]
    assert {i["uri"] for i in found[0]["images"]} <= {str(paths["coffee"]), str(paths["grace"])}
    assert found[0]["images"][0]["min_dist"] < 1e-3
