"""The envelope rules of ../shared/deepdetect-api.md ("Envelope and errors"), checked on a response.

`check_every_response(client)` makes a test client check them on every DeepDetect-face response it
receives (everything but /api/ and /schema, which are the native face), so that no test can see a
null member, a status that disagrees with the HTTP code, or an error message without its prefix.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

NATIVE_PREFIXES = ("/api/", "/schema")

# msg for each HTTP status (the contract's table; the codes it does not list as errors.py renders them)
MSG = {
    200: "OK",
    201: "Created",
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    413: "PayloadTooLarge",
    500: "InternalError",
    503: "ServiceUnavailable",
}
# what dd_msg starts with for each dd_code whose text the contract fixes
DD_MSG_PREFIX = {
    1000: "Unknown Library",
    1002: "Service Not Found",
    1004: "Input Connector Not Found",
    1005: "Service Input Error",
    1006: "Service Bad Request Error",
    1014: "Service already exists",
}
# the HTTP statuses of each dd_code (1013, a chain action's internal error, is 400 with msg InternalError;
# 1007, an error of the server, is 500, or 503 when it is unavailable for a while: a database outage, an
# index file that cannot be read)
DD_STATUS: dict[int, tuple[int, ...]] = {
    400: (400,),
    1000: (404,),
    1002: (404,),
    1004: (404,),
    1005: (400,),
    1006: (400,),
    1007: (500, 503),
    1012: (400,),
    1013: (400,),
    1014: (409,),
}


def _null_paths(value: Any, path: str = "$") -> Iterator[str]:
    if value is None:
        yield path
    elif isinstance(value, dict):
        for key, member in value.items():
            yield from _null_paths(member, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _null_paths(item, f"{path}[{i}]")


def check_envelope(response: httpx.Response) -> dict[str, Any]:
    """Assert the envelope rules on one DeepDetect-face response; returns the decoded body."""
    where = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
    try:
        body = json.loads(response.content)
    except ValueError as exc:
        raise AssertionError(f"{where}: not JSON: {response.content[:200]!r}") from exc
    assert isinstance(body, dict), f"{where}: not a JSON object: {body!r}"[:500]
    assert set(body) <= {"status", "head", "body"}, f"{where}: members {sorted(body)}"
    status = body.get("status")
    assert isinstance(status, dict), f"{where}: no status object: {body!r}"[:500]
    assert set(status) <= {"code", "msg", "dd_code", "dd_msg"}, f"{where}: status members {sorted(status)}"
    nulls = list(_null_paths(body))
    assert not nulls, f"{where}: null members at {nulls}"
    code = status.get("code")
    assert code == response.status_code, f"{where}: status.code is {code!r}"
    dd_code = status.get("dd_code")
    expected_msg = "InternalError" if dd_code == 1013 else MSG.get(code)
    assert status.get("msg") == expected_msg, f"{where}: msg {status.get('msg')!r}, expected {expected_msg!r}"
    if code in (200, 201):
        assert "dd_code" not in status, f"{where}: a success with {status}"
        assert "dd_msg" not in status, f"{where}: a success with {status}"
    if dd_code is not None:
        assert dd_code in DD_STATUS, f"{where}: unknown dd_code {dd_code!r}"
        assert code in DD_STATUS[dd_code], f"{where}: dd_code {dd_code} comes with HTTP {DD_STATUS[dd_code]}"
        dd_msg = status.get("dd_msg")
        assert isinstance(dd_msg, str), f"{where}: dd_code {dd_code} without dd_msg"
        assert dd_msg, f"{where}: dd_code {dd_code} with an empty dd_msg"
        prefix = DD_MSG_PREFIX.get(dd_code, "")
        assert dd_msg.startswith(prefix), f"{where}: dd_msg {dd_msg!r} does not start with {prefix!r}"
    warning = body.get("head", {}).get("warning")
    assert warning is None or isinstance(warning, str), f"{where}: head.warning {warning!r} is not one string"
    return body


def is_deepdetect_face(response: httpx.Response) -> bool:
    return not response.request.url.path.startswith(NATIVE_PREFIXES)


def _hook(response: httpx.Response) -> None:
    if is_deepdetect_face(response):
        response.read()  # the hook runs before the body is read
        check_envelope(response)


def check_every_response(client: httpx.Client) -> httpx.Client:
    """Make `client` (Litestar's TestClient is an httpx.Client) check the envelope on every DeepDetect
    response; idempotent, so module fixtures may call it on a shared client."""
    hooks = client.event_hooks
    if _hook not in hooks["response"]:
        hooks["response"] = [*hooks["response"], _hook]
    return client
