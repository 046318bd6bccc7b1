"""Store: the only package that talks to Postgres (SQLAlchemy models, binary COPY, the sql/ functions)."""

from simsearch.store.builds import (
    current_build,
    fail_build,
    fail_interrupted_builds,
    fence_writers,
    finish_build,
    join_writers,
    list_builds,
    lock_builds,
    start_build,
    unlock_builds,
)
from simsearch.store.db import Timeouts, make_engine, masked_url, unbounded, upgrade
from simsearch.store.embedded import embedded_postgres
from simsearch.store.hits import join_hits
from simsearch.store.images import get_image, image_ids, image_vector, list_images, update_metadata
from simsearch.store.notify import CHANNEL, announce_generation, listen_generations
from simsearch.store.objects import SCORES, category_ids, image_objects, rank_images, replace_objects
from simsearch.store.outage import database_unavailable
from simsearch.store.read import VectorSet, max_embedding_id, read_recent_vectors, read_service_vectors
from simsearch.store.records import (
    BuildRecord,
    Hit,
    ImageRecord,
    NewImage,
    NewObject,
    ObjectRecord,
    RankedImage,
    ServiceRecord,
)
from simsearch.store.services import (
    count_vectors,
    create_service,
    delete_service,
    detach_service,
    find_service,
    get_service,
    list_services,
    reattach_service,
    record_layer,
    set_layer,
    update_service,
)
from simsearch.store.values import check_storable
from simsearch.store.write import delete_images, replace_image_vectors, upsert_images

__all__ = [
    "CHANNEL",
    "SCORES",
    "BuildRecord",
    "Hit",
    "ImageRecord",
    "NewImage",
    "NewObject",
    "ObjectRecord",
    "RankedImage",
    "ServiceRecord",
    "Timeouts",
    "VectorSet",
    "announce_generation",
    "category_ids",
    "check_storable",
    "count_vectors",
    "create_service",
    "current_build",
    "database_unavailable",
    "delete_images",
    "delete_service",
    "detach_service",
    "embedded_postgres",
    "fail_build",
    "fail_interrupted_builds",
    "fence_writers",
    "find_service",
    "finish_build",
    "get_image",
    "get_service",
    "image_ids",
    "image_objects",
    "image_vector",
    "join_hits",
    "join_writers",
    "list_builds",
    "list_images",
    "list_services",
    "listen_generations",
    "lock_builds",
    "make_engine",
    "masked_url",
    "max_embedding_id",
    "rank_images",
    "read_recent_vectors",
    "read_service_vectors",
    "reattach_service",
    "record_layer",
    "replace_image_vectors",
    "replace_objects",
    "set_layer",
    "start_build",
    "unbounded",
    "unlock_builds",
    "update_metadata",
    "update_service",
    "upgrade",
    "upsert_images",
]
