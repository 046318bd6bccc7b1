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

    migrate: bool = True
    """Apply pending migrations when a command or `serve` starts. False (`serve --no-migrate`), for a role
    without DDL rights: check that the schema is at this version's head and refuse to start if not; the
    owner runs `simsearch db upgrade` once per release."""

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

    # -- artefact store and generations (index files every replica fetches) --
    artefacts: str | None = None
    """Where builds publish index generations and every replica fetches them from: unset, the folder
    `home/indexes`; a directory path (a mount every replica shares); or `s3://bucket/prefix` (S3-compatible
    object storage, with the `s3_*` settings). Each replica keeps its own checked copy under `home/cache`."""

    s3_endpoint: str | None = None
    """Endpoint URL of S3-compatible storage (e.g. http://minio:9000, SeaweedFS); unset: AWS S3."""

    s3_region: str | None = None
    """S3 region (unset: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1)."""

    s3_access_key_id: SecretStr | None = None
    """S3 access key id (unset: AWS_ACCESS_KEY_ID, or the instance's credentials)."""

    s3_secret_access_key: SecretStr | None = None
    """S3 secret access key (unset: AWS_SECRET_ACCESS_KEY, or the instance's credentials)."""

    s3_allow_http: bool = False
    """Allow a plain http:// `s3_endpoint` (a store on loopback or a private network)."""

    generation_poll_s: float = Field(default=5.0, ge=0)
    """Also ask Postgres for new index generations every this many seconds (0: only the LISTEN/NOTIFY
    announcements, which a read-only standby never delivers)."""

    # -- observability (logs, request ids, /metrics) --
    log_format: str = Field(default="text", pattern=r"^(text|json)$")
    """Log lines as `text` or `json` (one JSON object per line, with the request id), on stderr."""

    access_log: bool = True
    """Log one line per HTTP request: method, route, status, duration in ms, request id."""

    slow_request_ms: float = Field(default=1000.0, ge=0)
    """Log a WARNING for an HTTP request that takes longer than this, in milliseconds (0: off)."""

    metrics_token: SecretStr | None = None
    """Bearer token for GET /metrics (the admin token is accepted too). Unset: /metrics takes what reads do."""

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _empty_metrics_token_is_unset(cls, value: Any) -> Any:  # noqa: ANN401 - pydantic hands us the raw value
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("data_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:  # noqa: ANN401 - pydantic hands us the raw value
        if isinstance(value, str):
            return [Path(part) for part in value.split(":") if part]
        return value

    @field_validator("api_token", "read_token", "s3_access_key_id", "s3_secret_access_key", mode="before")
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
