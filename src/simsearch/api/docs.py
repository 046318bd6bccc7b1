"""The interactive API docs, offline: Swagger UI at /schema (and /schema/swagger) from the files the
`swagger-ui-py` package installs, served by the app itself, so the page renders without internet access.
Litestar's other doc pages (Redoc, Stoplight Elements, RapiDoc, Scalar) load their scripts from CDNs and
no registry package ships them: they are not served (404) rather than left blank."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.openapi.plugins import OpenAPIRenderPlugin, SwaggerRenderPlugin
from litestar.static_files import create_static_files_router

ASSETS_PATH = "/schema-assets/swagger-ui"
FAVICON = f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>"


def _swagger_ui_folder() -> Path:
    """swagger-ui-py's folder of Swagger UI's release files (found without importing the package: its
    __init__ imports handlers for other frameworks)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed: pip install swagger-ui-py (the API docs' assets)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def render_plugins() -> list[OpenAPIRenderPlugin]:
    """Swagger UI at the schema's root and at /swagger, its scripts and styles from ASSETS_PATH."""
    return [
        SwaggerRenderPlugin(
            js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            css_url=f"{ASSETS_PATH}/swagger-ui.css",
            standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
            path=["/swagger", "/"],
            favicon=FAVICON,
        )
    ]


def assets_router() -> Router:
    """Swagger UI's files (cached a day by browsers: the package's release is in no name, so not longer)."""
    return create_static_files_router(
        ASSETS_PATH,
        directories=[_swagger_ui_folder()],
        name="swagger-ui-assets",
        cache_control=CacheControlHeader(max_age=86400),
        include_in_schema=False,
    )
