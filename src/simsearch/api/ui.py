"""The search page at /ui (`/` redirects there): one server-rendered template and a little plain JavaScript
(static/search.js) that calls the /api/v1 JSON API, thumbnails included. The page holds no data of its own:
everything it shows comes through the API with the token the user gives it, so without a valid token it
shows nothing but the token field. No build step, no CDN: the files ship in the package."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
from litestar import Request, Router, get
from litestar.datastructures import CacheControlHeader
from litestar.handlers import HTTPRouteHandler
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.template import TemplateConfig

from simsearch import __version__
from simsearch.api.context import read_guard, settings_of

_HERE = Path(__file__).parent
STATIC_PATH = "/ui/static"

TEMPLATES = TemplateConfig(directory=_HERE / "templates", engine=JinjaTemplateEngine)


class PageSettings(msgspec.Struct):
    """What the page adapts to (read with a valid token only)."""

    allow_urls: bool  # show the URL field: the server fetches http(s) images
    max_request_bytes: int  # larger files are refused before they are sent
    version: str


@get("/", include_in_schema=False, sync_to_thread=False)
def root() -> Redirect:
    return Redirect("/ui")


@get("/ui", include_in_schema=False, sync_to_thread=False)
def page() -> Template:
    """The search page (its markup and scripts only; the data comes from the API)."""
    return Template("search.html.j2", context={"version": __version__, "static": STATIC_PATH})


@get("/ui/settings", include_in_schema=False, guards=[read_guard], sync_to_thread=False)
def page_settings(request: Request[Any, Any, Any]) -> PageSettings:
    settings = settings_of(request)
    return PageSettings(
        allow_urls=settings.allow_urls, max_request_bytes=settings.max_request_bytes, version=__version__
    )


def static_router() -> Router:
    """The page's script, styles and icon (the version in their URLs: a new release is fetched anew)."""
    return create_static_files_router(
        STATIC_PATH,
        directories=[_HERE / "static"],
        name="ui-static",
        cache_control=CacheControlHeader(max_age=3600),
        include_in_schema=False,
    )


ROUTES: list[HTTPRouteHandler] = [root, page, page_settings]
