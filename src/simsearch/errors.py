"""The errors simsearch raises on purpose; each maps to one HTTP status and says what to do next."""

from __future__ import annotations


class SimsearchError(Exception):
    """Base class; `status` is the HTTP status the API answers with."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_detail(self) -> dict[str, object]:
        return {"status": self.status, "detail": self.message}


class BadInput(SimsearchError):
    """A request value that cannot be accepted: names the field and the reason."""

    status = 400

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def to_detail(self) -> dict[str, object]:
        return {"status": self.status, "detail": self.message, "field": self.field}


class NotFound(SimsearchError):
    status = 404


class Conflict(SimsearchError):
    status = 409


class Unavailable(SimsearchError):
    """Something needed is missing on this machine (weights without network, a GPU, an extra)."""

    status = 503


class DatabaseUnavailable(Unavailable):
    """Postgres cannot be reached, refused us, or did not answer in time: the client may retry.

    `message` is all an HTTP client learns. `detail` (what failed, naming hosts and sockets) and `hint`
    (what to do) are for the operator: the server's log and the command line."""

    def __init__(self, detail: str, hint: str) -> None:
        super().__init__("database unavailable, retry in a moment")
        self.detail = detail
        self.hint = hint

    def for_operator(self) -> str:
        return f"{self.detail}; {self.hint}"
