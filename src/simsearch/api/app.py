"""create_app(settings): the Litestar app with both faces, one error handler and the shared core (the top
of api/: it imports the route modules, none of them imports it; `Core` and the guards are in context.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from litestar import Litestar, Request
from litestar.enums import RequestEncodingType
from litestar.exceptions import ClientException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from sqlalchemy import Engine

from simsearch import __version__, store
from simsearch.api import chain, deepdetect, docs, native, native_objects, observe, thumbnails, ui
from simsearch.api.errors import body_error, handle_exception
from simsearch.core import at_head, make_core, open_engine
from simsearch.errors import BadInput
from simsearch.settings import Settings


class SimsearchRequest(Request[Any, Any, Any]):
    """Litestar's request, but JSON nested deeper than the decoder can recurse is a 400, not a 500."""

    async def json(self) -> Any:  # noqa: ANN401 - any JSON value
        try:
            return await super().json()
        except RecursionError:
            raise ClientException("the JSON body is nested too deeply") from None


def _json_data_field(request: Request[Any, Any, Any]) -> Any:  # noqa: ANN401 - Litestar's FieldDefinition
    """The handler's `data` field when its body is JSON (not a multipart or urlencoded form); else None."""
    data_field = getattr(request.route_handler, "parsed_data_field", None)
    if data_field is None:
        return None
    media_type = getattr(data_field.kwarg_definition, "media_type", RequestEncodingType.JSON)
    return data_field if media_type == RequestEncodingType.JSON else None


async def strict_json_body(request: Request[Any, Any, Any]) -> None:
    """Decode a handler's typed JSON body strictly before Litestar does: Litestar converts leniently
    ("5" for an int), and its errors name the argument (`data`) instead of the field at fault. Whatever
    the content type says: Litestar reads a JSON route's body as JSON under any label (text/plain, or the
    form type `curl -d` sends), so the strict decoding must not depend on the label either."""
    data_field = _json_data_field(request)
    if data_field is None:
        return
    raw = await request.body()
    if not raw.strip():
        if data_field.is_optional:  # a body that may be left out (e.g. a build's settings)
            return
        raise BadInput("body", "missing: send a JSON object")
    try:
        msgspec.json.decode(raw, type=data_field.annotation, strict=True)
    except msgspec.ValidationError as exc:
        raise body_error(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise BadInput("body", f"not valid JSON ({exc})") from None
    except RecursionError:
        raise BadInput("body", "the JSON body is nested too deeply") from None


def open_database(settings: Settings) -> Engine:
    """The configured Postgres, or the embedded one, migrated to the latest schema; with SIMSEARCH_MIGRATE
    false (`serve --no-migrate`), checked to be at it instead: a role without DDL rights never migrates."""
    url = settings.database_url or store.embedded_postgres(settings.pgdata)
    return at_head(open_engine(settings, url, pool_size=10, max_overflow=20), migrate=settings.migrate)


def create_app(settings: Settings | None = None, *, engine: Engine | None = None) -> Litestar:
    """The HTTP app. `engine` is for callers that already hold a migrated one (tests); otherwise the
    database is opened (and migrated) when the app starts."""
    settings = settings or Settings()
    observe.configure_logging(settings)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        own = engine is None
        eng = engine if engine is not None else open_database(settings)
        core = make_core(settings, eng)
        core.indexes.listen()  # new generations built by any process are loaded here as they commit
        app.state.core, app.state.settings = core, settings
        try:
            yield
        finally:
            core.indexes.close()
            core.models.unload()
            if own:
                eng.dispose()

    app = Litestar(
        route_handlers=[
            *deepdetect.ROUTES,
            *chain.ROUTES,
            *native.ROUTES,
            *native_objects.ROUTES,
            *thumbnails.ROUTES,
            observe.metrics_route,
            *ui.ROUTES,
            ui.static_router(),
            docs.assets_router(),
        ],
        lifespan=[lifespan],
        template_config=ui.TEMPLATES,
        exception_handlers={Exception: handle_exception},
        request_class=SimsearchRequest,
        before_request=strict_json_body,
        request_max_body_size=settings.max_request_bytes,
        openapi_config=OpenAPIConfig(
            title="simsearch",
            version=__version__,
            description="Image similarity search on PostgreSQL. The native face, /api/v1; the DeepDetect-compatible "
            "routes (/info, /services, /predict) are documented in the README.",
            path="/schema",
            render_plugins=docs.render_plugins(),  # Swagger UI from packaged files: no CDN
            # Each guarded route declares `security` itself: /api/v1/health needs no token.
            components=Components(
                security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")},
            ),
        ),
        debug=False,
        logging_config=None,  # observe.configure_logging's, not Litestar's second handler on the root logger
    )
    # outermost, around the router and its exception handler: unrouted requests and errors are observed too
    app.asgi_handler = observe.Observer(app.asgi_handler, settings)
    return app
