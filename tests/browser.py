"""A real browser for the tests of the search page and the API docs: Debian's Chromium (`apt-get install -y
chromium`; .ci/run installs it) driven by Playwright's sync API, launched with `executable_path` (Playwright's
own browser download cannot work here). Each page runs offline: a request to anything but the server under
test is aborted and recorded, so a page that needs a CDN fails its test."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, Route

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
requires_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH: apt-get install -y chromium (.ci/run installs it as root)"
)
TOKEN_KEY = "simsearch-token"  # noqa: S105 - not a secret: search.js keeps the token under this sessionStorage key


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module (each test opens its own context: cookies and storage apart)."""
    from playwright.sync_api import sync_playwright  # here: only the browser tests need it

    assert CHROMIUM is not None
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


@dataclass
class Tab:
    """A page in its own browser context, offline but for `base`; `foreign` lists what it tried to load
    from elsewhere (aborted)."""

    context: BrowserContext
    page: Page
    base: str
    shots: Path
    foreign: list[str] = field(default_factory=list)

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        self.context.close()


def open_tab(browser: Browser, base: str, shots: Path, *, token: str | None = None) -> Tab:
    """A new context on `base` (its sessionStorage holding `token`, as after the user typed it) and a page."""
    context = browser.new_context(base_url=base, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(60_000)  # a first search loads the model in the server
    if token is not None:
        context.add_init_script(f"sessionStorage.setItem({json.dumps(TOKEN_KEY)}, {json.dumps(token)})")
    shots.mkdir(parents=True, exist_ok=True)
    tab = Tab(context=context, page=context.new_page(), base=base, shots=shots)

    def only_the_server(route: Route) -> None:
        url = route.request.url
        if url == base or url.startswith(base + "/"):
            route.continue_()
        else:
            tab.foreign.append(url)
            route.abort()

    context.route("**/*", only_the_server)
    return tab
