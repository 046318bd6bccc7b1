"""The core every handler runs on (`simsearch.core.Core`, made once per process in the app's lifespan), the
settings the guards read, and the bearer-token guards. A leaf of api/: the route modules and app.py import it;
it imports none of them."""

from __future__ import annotations

import hmac
from typing import Any, Literal

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from simsearch.core import Core
from simsearch.settings import Settings


def core_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Core:
    core: Core = connection.app.state.core
    return core


def settings_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Settings:
    settings: Settings = connection.app.state.settings
    return settings


def _bearer(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _matches(token: str | None, expected: str | None) -> bool:
    return token is not None and expected is not None and hmac.compare_digest(token.encode(), expected.encode())


def authorize(connection: ASGIConnection[Any, Any, Any, Any], scope: Literal["read", "admin"]) -> None:
    """Bearer-token check: off when no token is configured; `read` accepts either token."""
    settings = settings_of(connection)
    admin = settings.api_token.get_secret_value() if settings.api_token else None
    read = settings.read_token.get_secret_value() if settings.read_token else None
    if admin is None and read is None:
        return
    token = _bearer(connection)
    if _matches(token, admin) or (scope == "read" and _matches(token, read)):
        return
    if _matches(token, read):
        raise PermissionDeniedException("this token may only read and search; writes need SIMSEARCH_API_TOKEN")
    if token is not None:
        raise NotAuthorizedException(
            "invalid bearer token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
        )
    raise NotAuthorizedException(
        "missing bearer token: send `Authorization: Bearer <token>`", headers={"WWW-Authenticate": "Bearer"}
    )


def read_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    authorize(connection, "read")


def admin_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    authorize(connection, "admin")
