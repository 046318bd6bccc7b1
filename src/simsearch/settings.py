"""One settings object, read from the environment. Only `cli` and `api` read it."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

import platformdirs
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_home() -> Path:
    # The embedded server runs as a separate `pgserver` user when we are root, and pgserver makes every
    # parent of its data directory traversable: keep it out of /root.
    if os.name != "nt" and os.geteuid() == 0:
        return Path("/var/lib/simsearch")
    return platformdirs.user_data_path("simsearch")


class Settings(BaseSettings):
    """simsearch configuration; every field is read from `SIMSEARCH_<NAME>` unless said otherwise, and
    from a `.env` file in the working directory (the real environment wins over it)."""

    model_config = SettingsConfigDict(
        env_prefix="SIMSEARCH_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        use_attribute_docstrings=True,
    )

    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "SIMSEARCH_DATABASE_URL")
    )
    """Postgres (>= 15, with pgvector) to use, e.g. postgresql://user:pw@host/db (env `DATABASE_URL`).
    Unset: an embedded PostgreSQL 18 + pgvector is started under `home`."""

    db_connect_timeout_s: float = Field(default=5.0, gt=0)
    """Longest wait to open a database connection, and for a pooled one to answer its ping before each
    use, in seconds (whole seconds, at least 2: libpq's connect_timeout). Past it: 503, retry."""

    db_statement_timeout_s: float = Field(default=60.0, ge=0)
    """Longest a database statement may run, in seconds (Postgres' statement_timeout; 0: no limit).
    Builds' reads, build-lock waits and migrations are not limited."""

    db_lock_timeout_s: float = Field(default=30.0, ge=0)
    """Longest a statement may wait for a lock another transaction holds, in seconds (lock_timeout; 0: no
    limit)."""

    db_pool_timeout_s: float = Field(default=10.0, gt=0)
    """Longest a request waits for a free connection of the pool, in seconds."""

    home: Path = Field(default_factory=_default_home)
    """Folder for the embedded database (`pgdata/`) and the index files (`indexes/`)."""

    data_roots: Annotated[list[Path], NoDecode] = Field(default_factory=lambda: [Path.cwd()])
    """Directories input files may be read from, separated by `:` (default: the current directory)."""

    max_pixels: int = Field(default=50_000_000, gt=0)
    """Largest image accepted, in pixels (width x height), checked before decoding."""

    batch_size: int = Field(default=32, gt=0)
    """Images per model batch and per database transaction when indexing."""

    max_items: int = Field(default=1000, gt=0)
    """Most entries in one API call's `data` (or files in one upload); directories count as one."""

    max_request_bytes: int = Field(default=64 << 20, gt=0)
    """Largest HTTP request body accepted, in bytes (uploads and base64 included)."""

    allow_urls: bool = False
    """Fetch http(s) URLs given as image inputs (off: they are refused with 400)."""

    allow_private_urls: bool = False
    """Let URL inputs reach loopback, private and link-local addresses (only with `allow_urls`)."""

    url_timeout_s: float = Field(default=10.0, gt=0)
    """Connect and read timeout for each fetched URL, in seconds."""

    max_url_bytes: int = Field(default=32 << 20, gt=0)
    """Largest image fetched from a URL, in bytes."""

    api_token: SecretStr | None = None
    """Bearer token for every API call (admin). Unset, and `read_token` unset too: no authentication."""

    read_token: SecretStr | None = None
    """Bearer token that may only read and search. When only this one is set, writes are refused."""

    @field_validator("data_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:  # noqa: ANN401 - pydantic hands us the raw value
        if isinstance(value, str):
            return [Path(part) for part in value.split(":") if part]
        return value

    @field_validator("api_token", "read_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:  # noqa: ANN401 - pydantic hands us the raw value
        # docker compose passes `${SIMSEARCH_API_TOKEN:-}` as an empty string: that means "no token"
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"

    @property
    def index_dir(self) -> Path:
        return self.home / "indexes"


@lru_cache
def get_settings() -> Settings:
    return Settings()


def settings_table() -> str:
    """The configuration as a Markdown table (the README's copy is checked against this by a test)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        variable = "DATABASE_URL" if name == "database_url" else f"SIMSEARCH_{name.upper()}"
        if name == "home":
            default = "`/var/lib/simsearch` as root, else `~/.local/share/simsearch`"
        elif name == "data_roots":
            default = "the current directory"
        else:
            default = "unset" if field.default is None else f"`{field.default}`"
        meaning = " ".join((field.description or "").split())
        rows.append(f"| `{variable}` | {default} | {meaning} |")
    return "\n".join(rows)
