"""Core: what every core call runs on (the database, the input limits, the loaded models and indexes, where
index files live), built once per process by the app's lifespan and by each CLI command.

The one module below the faces that reads `Settings`, and only here, to turn them into these plain parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from simsearch import store
from simsearch.index import ArtefactStore, DirectoryStore, IndexCache, ObjectStore, S3Config
from simsearch.input import Intake, UrlPolicy
from simsearch.models import ModelCache  # (no torch until a model loads: CLI commands stay fast)
from simsearch.settings import Settings


@dataclass(frozen=True, slots=True)
class Core:
    engine: Engine
    intake: Intake
    models: ModelCache
    indexes: IndexCache
    index_dir: Path  # generations' files, one folder per service
    home: Path  # SIMSEARCH_HOME: weights files may also live here
    artefacts: ArtefactStore | None = None  # where builds publish and replicas fetch (None: index_dir)

    @property
    def weights_roots(self) -> list[Path]:
        """Where a service's weights file may be read from."""
        return [*self.intake.roots, self.home]


def service_named(core: Core, name: str) -> store.ServiceRecord:
    """The service of that (stored, lower-case) name, or NotFound: one autocommit read, as every face's
    request starts."""
    with store.reading(core.engine) as conn:
        return store.get_service(conn, name)


def intake_of(settings: Settings, *, bounded: bool = True, urls: bool = True) -> Intake:
    """The settings' input limits; `bounded=False` lifts the per-call item limit (the CLI commits per batch),
    `urls=False` refuses URLs whatever the settings allow (the CLI reads local files only)."""
    policy = (
        UrlPolicy(
            allow_private=settings.allow_private_urls,
            timeout_s=settings.url_timeout_s,
            max_bytes=settings.max_url_bytes,
        )
        if settings.allow_urls and urls
        else None
    )
    return Intake(
        roots=tuple(settings.data_roots),
        max_pixels=settings.max_pixels,
        batch_size=settings.batch_size,
        max_items=settings.max_items if bounded else None,
        urls=policy,
    )


def open_engine(settings: Settings, url: str, **options: Any) -> Engine:  # noqa: ANN401 - make_engine's
    """An engine on `url` with the settings' timeouts (`options` go to `store.make_engine`)."""
    timeouts = store.Timeouts(
        connect_s=settings.db_connect_timeout_s,
        statement_s=settings.db_statement_timeout_s,
        lock_s=settings.db_lock_timeout_s,
        pool_s=settings.db_pool_timeout_s,
    )
    return store.make_engine(url, timeouts=timeouts, **options)


def at_head(engine: Engine, *, migrate: bool) -> Engine:
    """`engine` with its schema at this version's head: migrated, or with `migrate` False (`serve
    --no-migrate`, SIMSEARCH_MIGRATE=false) checked to be so, as a role without DDL rights needs; the
    engine is disposed when that fails."""
    try:
        if migrate:
            store.upgrade(engine)
        else:
            store.db.check_at_head(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def artefact_store(settings: Settings) -> ArtefactStore:
    """The store the settings name (`artefacts`): where this process's builds publish and its index cache
    fetches from (a directory store at the index folder by default)."""
    where = settings.artefacts
    chosen: ArtefactStore
    if where is None or not where.strip():
        chosen = DirectoryStore(settings.index_dir)
    elif where.startswith("s3://"):
        secret = settings.s3_secret_access_key
        key_id = settings.s3_access_key_id
        chosen = ObjectStore(
            S3Config(
                url=where,
                endpoint=settings.s3_endpoint,
                region=settings.s3_region,
                access_key_id=key_id.get_secret_value() if key_id is not None else None,
                secret_access_key=secret.get_secret_value() if secret is not None else None,
                allow_http=settings.s3_allow_http,
            )
        )
    else:
        chosen = DirectoryStore(Path(where.removeprefix("file://")).expanduser())
    return chosen


def make_core(settings: Settings, engine: Engine, *, bounded: bool = True, urls: bool = True) -> Core:
    """The process's core over an open (migrated) engine; the caller owns the engine and closes the caches.
    Its index cache fetches generations from the artefact store into `home/cache`, checked, and polls
    Postgres every `generation_poll_s` once it listens."""
    store_ = artefact_store(settings)
    return Core(
        engine=engine,
        intake=intake_of(settings, bounded=bounded, urls=urls),
        models=ModelCache(),
        indexes=IndexCache(engine, source=store_, cache_dir=settings.home / "cache", poll_s=settings.generation_poll_s),
        index_dir=settings.index_dir,
        home=settings.home,
        artefacts=store_,
    )
