"""Store: the only package that talks to Postgres (SQLAlchemy models, binary COPY, the sql/ functions)."""

from simsearch.store.builds import current_build, fail_build, finish_build, list_builds, start_build
from simsearch.store.db import embedded_postgres, make_engine, upgrade
from simsearch.store.hits import join_hits
from simsearch.store.read import VectorSet, max_embedding_id, read_service_vectors
from simsearch.store.records import BuildRecord, Hit, NewImage, ServiceRecord
from simsearch.store.services import count_vectors, create_service, delete_service, get_service, list_services
from simsearch.store.write import delete_images, replace_image_vectors, upsert_images

__all__ = [
    "BuildRecord",
    "Hit",
    "NewImage",
    "ServiceRecord",
    "VectorSet",
    "count_vectors",
    "create_service",
    "current_build",
    "delete_images",
    "delete_service",
    "embedded_postgres",
    "fail_build",
    "finish_build",
    "get_service",
    "join_hits",
    "list_builds",
    "list_services",
    "make_engine",
    "max_embedding_id",
    "read_service_vectors",
    "replace_image_vectors",
    "start_build",
    "upgrade",
    "upsert_images",
]
