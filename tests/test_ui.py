"""The search page and the API docs in a real browser (tests/browser.py) against a real `simsearch serve` with
tokens set: the page asks for the token and then works; an edited photo finds its original first, and a
click on it searches again; a face service draws the query's and the results' boxes; the image browser pages
with the API's cursors; Swagger UI renders every operation. Every page runs offline: nothing but the server
is reachable, and what a page tried to fetch elsewhere fails the test. Screenshots go to the test's tmp folder.

SIMSEARCH_README_SCREENSHOT=docs/search-page.png makes the search test copy its screenshot there (the README's)."""

from __future__ import annotations

import functools
import os
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import httpx
import matplotlib.cbook
import numpy as np
import pytest
from tests.browser import Tab, browser, open_tab, requires_chromium
from tests.conftest import write_image
from tests.servers import Replica, start_replica

from simsearch.samples import edit, load_photo

pytestmark = [requires_chromium, pytest.mark.slow]
__all__ = ["browser"]  # the fixture, imported for this module's tests

ADMIN, READ = "ui-admin-secret", "ui-read-secret"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "stereo_motorcycle", "clock")
FACES = {"faces": "dlib:frontal_face", "face-vectors": "dlib:face_descriptor"}
CHAIN = {"detector": "faces", "crop": {"padding_ratio": 0.1}, "confidence_threshold": 0.6}


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[dict[str, Any]]:
    """A server with tokens, a photo service (MobileNetV2, the weights a registry package ships) over
    scikit-image's photos, and faces (dlib) over the astronaut, a collage of two and Grace Hopper."""
    root = tmp_path_factory.mktemp("ui")
    data = root / "data"
    originals = {n: write_image(data / "photos" / f"{n}.jpg", load_photo(n)) for n in PHOTOS}
    astronaut = load_photo("astronaut")
    grace = cv2.imread(str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    people = {
        "astronaut": originals["astronaut"],
        "collage": write_image(data / "people" / "collage.png", np.hstack([astronaut, astronaut])),
        "grace": write_image(data / "people" / "grace.png", cv2.cvtColor(grace, cv2.COLOR_BGR2RGB)),
    }
    server = start_replica(
        root / "home",
        database_url,
        data,
        SIMSEARCH_API_TOKEN=ADMIN,
        SIMSEARCH_READ_TOKEN=READ,
        SIMSEARCH_ALLOW_URLS="1",
        SIMSEARCH_ALLOW_PRIVATE_URLS="1",  # the test's own web server below, on loopback
    )
    server.client.headers["Authorization"] = f"Bearer {ADMIN}"
    web = root / "web"
    write_image(web / "rocket-flip.jpg", edit(load_photo("rocket"), "flip"))
    site = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(SimpleHTTPRequestHandler, directory=str(web)))
    threading.Thread(target=site.serve_forever, daemon=True).start()
    try:
        ok(server.post("/api/v1/services", {"name": "photos", "model": "mobilenet_v2", "metric": "cosine"}), 201)
        items = [{"data": str(p), "metadata": {"photo": n}} for n, p in originals.items()]
        photos = ok(server.post("/api/v1/services/photos/images", {"items": items}), 201)
        ok(server.post("/api/v1/services/photos/builds"), 201)
        for name, model in FACES.items():
            ok(server.post("/api/v1/services", {"name": name, "model": model}), 201)
        items = [{"data": str(p), "metadata": {"who": n}} for n, p in people.items()]
        faces = ok(server.post("/api/v1/services/face-vectors/images", {"items": items, **CHAIN}), 201)
        yield {
            "server": server,
            "root": root,
            "photos": {n: i["id"] for n, i in zip(originals, photos["images"], strict=True)},
            "originals": originals,
            "people": people,
            "faces": {n: i["id"] for n, i in zip(people, faces["images"], strict=True)},
            "url": f"http://127.0.0.1:{site.server_port}/rocket-flip.jpg",
        }
    finally:
        site.shutdown()
        server.stop()


def tab(browser: Any, world: dict[str, Any], tmp_path: Path, token: str | None = READ) -> Tab:
    server: Replica = world["server"]
    return open_tab(browser, server.base, tmp_path / "screenshots", token=token)


def choose_service(t: Tab, name: str, url: str = "/ui") -> None:
    """Open the page and pick the service; wait until the page has fitted its options to it."""
    t.page.goto(url)
    t.page.locator("#service option", has_text=name).wait_for(state="attached")
    t.page.select_option("#service", name)
    t.page.wait_for_function(
        "n => document.querySelector('#service').value === n"
        " && document.querySelector('#search-form').getAttribute('aria-busy') === 'false'",
        arg=name,
    )


def cards(t: Tab) -> Any:
    return t.page.locator("#results .card")


def first_result_loaded(t: Tab) -> None:
    """The first card's thumbnail has been fetched (with the token) and decoded."""
    t.page.wait_for_function(
        "() => { const i = document.querySelector('#results .card img'); return i && i.complete && i.naturalWidth > 0 }"
    )


def test_the_page_asks_for_the_token_and_then_works(browser: Any, world: dict[str, Any], tmp_path: Path) -> None:
    t = tab(browser, world, tmp_path, token=None)
    page = t.page
    page.goto("/")  # redirects to the page
    assert page.url == t.base + "/ui"
    page.wait_for_selector("#auth:not([hidden])")
    assert page.is_hidden("#main")
    assert "photos" not in page.content()  # nothing of the server's data without a token
    t.shot("asks-for-token")
    page.fill("#token", "not-the-token")
    page.click("#auth-form button[type=submit]")
    page.wait_for_function("() => document.querySelector('#auth-error').textContent.includes('refused')")
    assert page.is_hidden("#main")
    assert "photos" not in page.locator("body").inner_text()
    page.fill("#token", READ)
    page.press("#token", "Enter")  # the keyboard works as the button
    page.wait_for_selector("#main:not([hidden])")
    assert page.is_hidden("#auth")
    assert page.locator("#service option").all_inner_texts() == ["face-vectors", "faces", "photos"]
    assert page.evaluate("sessionStorage.getItem('simsearch-token')") == READ
    page.click("#forget-token")  # forgetting it hides everything again
    page.wait_for_selector("#auth:not([hidden])")
    assert page.locator("#service option").count() == 0
    assert t.foreign == []
    t.close()


def test_an_edited_photo_finds_its_original_and_a_click_searches_with_it(
    browser: Any, world: dict[str, Any], tmp_path: Path
) -> None:
    t = tab(browser, world, tmp_path)
    page = t.page
    choose_service(t, "photos")
    info = page.locator("#service-info").inner_text()
    assert "mobilenet_v2" in info
    assert "cosine" in info
    assert str(len(PHOTOS)) in info
    assert "faiss Flat" in info
    assert page.is_checked("input[name=mode][value=images]")
    assert page.is_hidden("#object-options")  # options of the object search only
    edited = write_image(tmp_path / "chelsea-crop.jpg", edit(load_photo("chelsea"), "crop"))
    page.set_input_files("#file", str(edited))
    page.wait_for_selector("#results .card")
    first_result_loaded(t)
    first = cards(t).first
    assert first.get_attribute("data-image-id") == str(world["photos"]["chelsea"])
    assert str(world["originals"]["chelsea"]) in first.inner_text()
    assert "photo" in first.inner_text()
    assert "chelsea" in first.inner_text()
    assert cards(t).count() == len(PHOTOS)  # k = 12 > the images stored
    assert "generation" in page.inner_text("#status")
    shot = t.shot("edited-photo-finds-its-original")
    if target := os.environ.get("SIMSEARCH_README_SCREENSHOT"):
        shutil.copyfile(shot, target)

    # "more like this": the coffee photo's card, then its grid, led by itself at distance 0
    page.locator(f"#results .card[data-image-id='{world['photos']['coffee']}'] button.hit").click()
    page.wait_for_function(
        "id => document.querySelector('#results .card')?.dataset.imageId === String(id)", arg=world["photos"]["coffee"]
    )
    assert "distance 0.000" in cards(t).first.inner_text()
    assert f"image {world['photos']['coffee']}" in page.inner_text("#query-caption")
    page.wait_for_function("() => document.querySelector('#query-frame img')?.naturalWidth > 0")
    page.fill("#k", "2")
    page.fill("#filter", '{"photo": "rocket"}')
    page.click("#search-button")
    page.wait_for_function("() => document.querySelectorAll('#results .card').length === 1")
    assert cards(t).first.get_attribute("data-image-id") == str(world["photos"]["rocket"])
    t.shot("more-like-this-filtered")
    # an image URL (the server fetches it: URL fetching is on)
    page.fill("#filter", "")
    page.fill("#url", world["url"])
    page.click("#search-button")
    page.wait_for_function("u => document.querySelector('#query-caption').textContent.includes(u)", arg=world["url"])
    page.wait_for_function("() => document.querySelectorAll('#results .card').length === 2")
    assert cards(t).first.get_attribute("data-image-id") == str(world["photos"]["rocket"])
    page.fill("#filter", "{not json")
    page.click("#search-button")
    page.wait_for_function("() => document.querySelector('#error').textContent.includes('filter')")
    assert t.foreign == []
    t.close()


def test_a_face_service_draws_the_boxes_of_the_query_and_of_each_match(
    browser: Any, world: dict[str, Any], tmp_path: Path
) -> None:
    t = tab(browser, world, tmp_path)
    page = t.page
    choose_service(t, "face-vectors")
    # the page sees that this service stores faces found by `faces`, and searches objects with it
    page.wait_for_selector("#object-options:not([hidden])")
    assert page.is_checked("input[name=mode][value=objects]")
    assert page.input_value("#detector") == "faces"
    page.fill("#padding", "0.1")
    page.fill("#threshold", "0.6")
    page.select_option("#score", "count")
    page.set_input_files("#file", str(world["people"]["collage"]))
    page.wait_for_selector("#results .card")
    page.wait_for_function("() => document.querySelectorAll('#query-frame .box').length === 2")
    first_result_loaded(t)
    first = cards(t).first
    assert first.get_attribute("data-image-id") == str(world["faces"]["collage"])  # both faces matched
    assert "2 of 2 query objects" in first.inner_text()
    assert first.locator(".box").count() >= 2  # its matching faces, drawn on its thumbnail
    box = first.locator(".box").first.bounding_box()
    frame = first.locator(".frame").bounding_box()
    assert box is not None
    assert frame is not None
    assert frame["x"] <= box["x"]
    assert box["x"] + box["width"] <= frame["x"] + frame["width"] + 1
    assert "query object 1" in first.inner_text()  # the per-image matches
    t.shot("faces-ranked")
    page.select_option("#view", "objects")  # each query face's nearest faces, each with its box
    page.click("#search-button")
    page.wait_for_selector("#results .object-hits h3")
    assert page.locator("#results .object-hits").count() == 2
    assert page.locator("#results .object-hits .card .box").count() >= 2
    t.shot("faces-per-object")
    assert t.foreign == []
    t.close()


def test_the_image_browser_pages_with_the_api_s_cursors(browser: Any, world: dict[str, Any], tmp_path: Path) -> None:
    t = tab(browser, world, tmp_path)
    page = t.page
    choose_service(t, "photos", "/ui?page_size=3")
    page.click("#tab-browse")
    seen: list[str] = []
    for _ in range(len(PHOTOS)):  # bounded: a browser that never reaches the last page fails below
        page.wait_for_function("() => document.querySelector('#browse-status').textContent.startsWith('page')")
        seen += [c.get_attribute("data-image-id") or "" for c in page.locator("#browse .card").all()]
        if page.is_disabled("#browse-next"):
            break
        status = page.inner_text("#browse-status")
        page.click("#browse-next")
        page.wait_for_function("s => document.querySelector('#browse-status').textContent !== s", arg=status)
    assert seen == [str(i) for i in sorted(world["photos"].values())]
    page.click("#browse-first")
    page.wait_for_function("() => document.querySelector('#browse-status').textContent.startsWith('page 1 ')")
    page.locator("#browse .card button.hit").first.click()  # a browsed image is a query too
    page.wait_for_selector("#search-view:not([hidden]) #results .card")
    assert cards(t).first.get_attribute("data-image-id") == seen[0]
    assert t.foreign == []
    t.close()


def test_the_api_docs_render_every_operation_offline(browser: Any, world: dict[str, Any], tmp_path: Path) -> None:
    server: Replica = world["server"]
    t = tab(browser, world, tmp_path, token=None)
    page = t.page
    page.goto("/schema")
    page.wait_for_selector(".opblock")
    operations = page.locator(".opblock-summary-path").all_inner_texts()
    document = server.get("/schema/openapi.json").json()
    expected = sum(len(item) for item in document["paths"].values())
    assert len(operations) == expected
    assert any("/api/v1/images/{image_id}/thumbnail" in o.replace("\u200b", "") for o in operations)
    t.shot("api-docs")
    assert t.foreign == []
    t.close()
    assert server.get("/schema/swagger").status_code == 200
    for gone in ("/schema/redoc", "/schema/elements", "/schema/rapidoc", "/schema/scalar"):
        assert server.get(gone).status_code == 404, gone  # their scripts would come from CDNs
