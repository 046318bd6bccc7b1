"""GET /api/v1/images/{id}/thumbnail over real HTTP, against a real `simsearch serve` with tokens set: a JPEG
of the stored source file at the asked size (of one box with `roi`), cached under SIMSEARCH_HOME with an ETag
(304 on If-None-Match); never a file outside the data roots, whatever the stored uri or a link now says; 404
when the source is gone or changed; the read token's authentication; a 400 naming `size` on a bad size."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from tests.conftest import draw_image, write_image
from tests.servers import Replica, start_replica

from simsearch.samples import load_photo

pytestmark = pytest.mark.slow

ADMIN, READ = "thumb-admin-secret", "thumb-read-secret"


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[dict[str, Any]]:
    """A server with tokens, one data root, and a few images indexed from it."""
    root = tmp_path_factory.mktemp("thumbs")
    data, outside = root / "data", root / "outside"
    server = start_replica(root / "home", database_url, data, SIMSEARCH_API_TOKEN=ADMIN, SIMSEARCH_READ_TOKEN=READ)
    server.client.headers["Authorization"] = f"Bearer {ADMIN}"
    try:
        ok(server.post("/api/v1/services", {"name": "pics", "model": "resnet18", "weights": "none", "size": 64}), 201)
        yield {"server": server, "data": data, "outside": outside, "home": root / "home"}
    finally:
        server.stop()


def index(server: Replica, *items: dict[str, Any]) -> list[int]:
    found = ok(server.post("/api/v1/services/pics/images", {"items": list(items)}), 201)
    return [i["id"] for i in found["images"]]


def thumbnail(server: Replica, image_id: int, token: str | None = READ, **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.get(f"{server.base}/api/v1/images/{image_id}/thumbnail", params=params, headers=headers)


def jpeg(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def detail(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    text: str = response.json()["detail"]
    return text


def test_a_thumbnail_is_the_source_at_the_asked_size_with_an_etag(world: dict[str, Any]) -> None:
    server: Replica = world["server"]
    source = load_photo("chelsea")  # 451 x 300
    [image_id] = index(server, {"data": str(write_image(world["data"] / "chelsea.png", source))})
    first = thumbnail(server, image_id, size=128)
    small = jpeg(first)
    assert small.shape[:2] == (85, 128)  # the longer side at 128, the aspect kept
    expected = cv2.resize(cv2.cvtColor(source, cv2.COLOR_RGB2BGR), (128, 85), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - expected).mean() < 4  # the photo itself (JPEG-close)
    etag = first.headers["etag"]
    assert etag.startswith('"')
    assert first.headers["cache-control"] == "private, no-cache"
    assert list((world["home"] / "thumbnails").rglob("*.jpg"))  # cached under SIMSEARCH_HOME
    again = thumbnail(server, image_id, size=128)
    assert (again.content, again.headers["etag"]) == (first.content, etag)  # from the cache, the same
    for given in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        headers = {"Authorization": f"Bearer {READ}", "If-None-Match": given}
        unchanged = httpx.get(f"{server.base}/api/v1/images/{image_id}/thumbnail?size=128", headers=headers)
        assert unchanged.status_code == 304, given
        assert unchanged.content == b""
        assert unchanged.headers["etag"] == etag
    other = thumbnail(server, image_id, size=64)
    assert jpeg(other).shape[:2] == (43, 64)
    assert other.headers["etag"] != etag
    assert jpeg(thumbnail(server, image_id)).shape[:2] == (170, 256)  # the default size
    assert jpeg(thumbnail(server, image_id, size=1024)).shape[:2] == (300, 451)  # never enlarged


def test_a_box_thumbnail_is_the_crop_of_that_object(world: dict[str, Any]) -> None:
    server: Replica = world["server"]
    ok(server.post("/api/v1/services", {"name": "faces", "model": "dlib:frontal_face"}), 201)
    path = write_image(world["data"] / "astronaut.png", load_photo("astronaut"))
    items = {"items": [{"data": str(path)}], "confidence_threshold": 0.6}  # her face, not the flag's stars
    found = ok(server.post("/api/v1/services/faces/images", items), 201)
    image_id = found["images"][0]["id"]
    [face] = ok(server.get(f"/api/v1/images/{image_id}/objects"))
    xmin, ymin, xmax, ymax = face["bbox"]
    crop = jpeg(thumbnail(server, image_id, roi=face["roi_id"], size=1024))
    assert abs(crop.shape[1] - (xmax - xmin)) <= 1
    assert abs(crop.shape[0] - (ymax - ymin)) <= 1
    whole = thumbnail(server, image_id, size=1024)
    assert jpeg(whole).shape[:2] == (512, 512)
    assert thumbnail(server, image_id, roi=face["roi_id"], size=1024).headers["etag"] != whole.headers["etag"]
    [other] = index(server, {"data": str(write_image(world["data"] / "other.png", draw_image(7)))})
    assert "no object" in detail(thumbnail(server, other, roi=face["roi_id"]), 404)  # another image's box


def test_no_file_outside_the_data_roots_is_ever_served(world: dict[str, Any]) -> None:
    server: Replica = world["server"]
    secret = write_image(world["outside"] / "secret.png", draw_image(11))
    inside = world["data"] / "inside.png"
    inside.write_bytes(secret.read_bytes())  # the same bytes: the roots refuse it, not the hash
    # a stored uri that names a file outside the roots (the bytes came from inside)
    [named] = index(server, {"data": str(inside), "uri": str(secret)})
    assert ok(server.get(f"/api/v1/images/{named}"))["uri"] == str(secret)
    assert "outside the data roots" in detail(thumbnail(server, named), 404)
    # a file inside the roots, swapped for a link to the one outside after indexing (and after a thumbnail)
    link = world["data"] / "link.png"
    link.write_bytes(secret.read_bytes())
    [linked] = index(server, {"data": str(link)})
    assert jpeg(thumbnail(server, linked, size=32)).shape[:2] == (24, 32)
    link.unlink()
    link.symlink_to(secret)
    for size in (32, 48):  # the cached one and a new one alike
        assert "outside the data roots" in detail(thumbnail(server, linked, size=size), 404)


def test_a_gone_or_changed_source_is_a_404(world: dict[str, Any]) -> None:
    server: Replica = world["server"]
    gone, changed = world["data"] / "gone.png", world["data"] / "changed.png"
    ids = index(
        server, {"data": str(write_image(gone, draw_image(21)))}, {"data": str(write_image(changed, draw_image(22)))}
    )
    assert jpeg(thumbnail(server, ids[0], size=40)).size
    gone.unlink()
    assert "gone" in detail(thumbnail(server, ids[0], size=40), 404)  # though a thumbnail was cached
    headers = {"Authorization": f"Bearer {READ}", "If-None-Match": "*"}
    assert httpx.get(f"{server.base}/api/v1/images/{ids[0]}/thumbnail?size=40", headers=headers).status_code == 404
    write_image(changed, draw_image(23))
    assert "changed since it was indexed" in detail(thumbnail(server, ids[1]), 404)
    uploaded = base64.b64encode(cv2.imencode(".png", draw_image(24))[1].tobytes()).decode()
    [from_bytes] = index(server, {"data": uploaded})
    assert "no source file" in detail(thumbnail(server, from_bytes), 404)
    assert "not found" in detail(thumbnail(server, 10**9), 404)


def test_thumbnails_need_the_read_token_and_a_size_in_range(world: dict[str, Any]) -> None:
    server: Replica = world["server"]
    [image_id] = index(server, {"data": str(write_image(world["data"] / "auth.png", draw_image(31)))})
    assert thumbnail(server, image_id, token=None).status_code == 401
    assert thumbnail(server, image_id, token="wrong").status_code == 401  # noqa: S106
    assert thumbnail(server, 10**9, token=None).status_code == 401  # nothing said about images without a token
    etag = thumbnail(server, image_id, token=ADMIN).headers["etag"]
    assert thumbnail(server, image_id, token=READ).headers["etag"] == etag
    no_token = httpx.get(f"{server.base}/api/v1/images/{image_id}/thumbnail", headers={"If-None-Match": etag})
    assert no_token.status_code == 401  # not even a 304
    for size in ("0", "15", "1025", "-3", "big", "12.5", ""):
        response = thumbnail(server, image_id, size=size)
        assert response.status_code == 400, (size, response.text)
        assert "size" in response.json()["detail"], size
    for roi in ("0", "x", str(2**53)):
        assert thumbnail(server, image_id, roi=roi).status_code == 400, roi
