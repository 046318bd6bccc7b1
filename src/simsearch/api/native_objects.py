"""The native face's objects: indexing the objects a detector finds, object search, images ranked by
their objects' similarity, and an image's stored objects."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from anyio import to_thread
from litestar import Controller, get, post
from litestar.di import NamedDependency, Provide
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, JSONBody, MultipartBody
from litestar.status_codes import HTTP_200_OK

from simsearch import objects, queries, store
from simsearch.api.context import read_guard
from simsearch.api.native_common import (
    READS,
    ImageId,
    core_dependency,
    fields_renamed,
    form_options,
    image_as,
    one_file,
    problems,
    service_named,
    storable,
)
from simsearch.api.schemas import (
    FoundObject,
    IndexOptions,
    IndexResult,
    Neighbour,
    ObjectOptions,
    ObjectSearchForm,
    ObjectSearchRequest,
    ObjectSearchResult,
    QueryObjectHits,
    RankedImageOut,
    RankOptions,
    SimilarObjectsForm,
    SimilarObjectsRequest,
    SimilarObjectsResult,
    StoredImage,
    StoredObject,
)
from simsearch.core import Core
from simsearch.objects import Plan
from simsearch.queries import FoundObjects, ObjectQuery
from simsearch.store import ServiceRecord


def object_query(given: ObjectOptions) -> ObjectQuery:
    """The request's options as the core's query (the same field names; lists become tuples)."""
    return msgspec.convert(given, ObjectQuery, from_attributes=True)


def index_plan(core: Core, service: ServiceRecord, options: IndexOptions) -> Plan | None:
    """The object pipeline of an indexing call (JSON body or upload form); None for whole images."""
    storable(categories=options.categories)
    categories = tuple(options.categories) if options.categories is not None else None
    query = ObjectQuery(
        detector=options.detector,
        crop=options.crop,
        confidence_threshold=options.confidence_threshold,
        query_categories=categories,  # the boxes kept, as a query's own objects are
    )
    return queries.object_plan(core, service, query, search=False)


def index_objects(
    core: Core, plan: Plan, data: Sequence[str | bytes], uris: Sequence[str | None], metadata: Sequence[dict[str, Any]]
) -> IndexResult:
    report = objects.index_objects(
        core.engine, plan.detector, plan.service, data, plan.how, core.intake, atomic=True, uris=uris, metadata=metadata
    )
    images = [
        StoredImage(
            position=i.position,
            id=report.image_ids[i.stored_uri] if i.objects else None,
            uri=i.stored_uri,
            objects=msgspec.convert(i.objects, list[FoundObject], from_attributes=True),
        )
        for i in report.images
    ]
    return IndexResult(
        images=images,
        indexed=sum(1 for i in report.images if i.objects),
        skipped=len(report.skipped),
        skipped_uris=report.skipped,
        objects=report.objects_stored,
    )


def _search_result(found: FoundObjects) -> ObjectSearchResult:
    return ObjectSearchResult(
        query_objects=[
            QueryObjectHits(
                bbox=list(o.bbox),
                category=o.category,
                prob=o.prob,
                neighbours=msgspec.convert(hits, list[Neighbour], from_attributes=True),
            )
            for o, hits in zip(found.query.objects, found.hits, strict=True)
        ],
        generation=found.generation,
    )


def _similar(core: Core, service: ServiceRecord, image: str | bytes, query: ObjectQuery) -> SimilarObjectsResult:
    ranked = queries.similar_images(core, service, image, query)
    return SimilarObjectsResult(
        query_objects=msgspec.convert(ranked.query.objects, list[FoundObject], from_attributes=True),
        images=msgspec.convert(ranked.images, list[RankedImageOut], from_attributes=True),
        generation=ranked.generation,
    )


class ServiceObjectController(Controller):
    """The object routes under /api/v1/services (the other service routes are native.ServiceController's)."""

    path = "/api/v1/services"
    tags = ["services"]  # noqa: RUF012 - Litestar reads these class attributes
    security = [{"bearer": []}]  # noqa: RUF012 - in OpenAPI; enforced by the guards when a token is set
    dependencies = {"core": Provide(core_dependency, sync_to_thread=False)}  # noqa: RUF012

    @post(
        "/{name:str}/objects/search",
        operation_id="searchObjects",
        guards=[read_guard],
        sync_to_thread=True,
        status_code=HTTP_200_OK,
        responses=problems(404, 413),
    )
    def search_objects_json(
        self, core: NamedDependency[Core], name: FromPath[str], data: JSONBody[ObjectSearchRequest]
    ) -> ObjectSearchResult:
        """Detect the objects of a query image and find each one's k nearest stored objects of this
        service: with `detector`, that detector service finds them and this service embeds each crop;
        without, this service must be a detector with box vectors. `categories` keeps stored objects of
        those categories, `filter` images whose metadata contains it."""
        storable(image=data.image)
        service = service_named(core, name)
        return _search_result(queries.query_objects(core, service, data.image, object_query(data)))

    @post(
        "/{name:str}/objects/search/upload",
        operation_id="searchObjectsUpload",
        guards=[read_guard],
        status_code=HTTP_200_OK,
        responses=problems(404, 413),
    )
    async def search_objects_upload(
        self, core: NamedDependency[Core], name: FromPath[str], data: MultipartBody[ObjectSearchForm]
    ) -> ObjectSearchResult:
        """The object search of an uploaded query image (multipart: `file`, and the JSON body's other
        fields; `crop` and `filter` as JSON objects, the category lists as JSON arrays)."""
        file = one_file(data.file)
        query = object_query(form_options(data, ObjectOptions))
        content = await file.read()

        def run() -> ObjectSearchResult:
            service = service_named(core, name)
            with fields_renamed(image_as("file")):
                return _search_result(queries.query_objects(core, service, content, query))

        return await to_thread.run_sync(run)

    @post(
        "/{name:str}/images/similar-objects",
        operation_id="similarObjects",
        guards=[read_guard],
        sync_to_thread=True,
        status_code=HTTP_200_OK,
        responses=problems(404, 413),
    )
    def similar_objects_json(
        self, core: NamedDependency[Core], name: FromPath[str], data: JSONBody[SimilarObjectsRequest]
    ) -> SimilarObjectsResult:
        """The stored images ranked by how similar their objects are to the objects of a query image: an
        object search (k neighbours per query object), then the hits aggregated per image in SQL by
        `score` (mean or min distance ascending, count of query objects or sum of 1 / (1 + distance)
        descending; ties by mean distance, then image id)."""
        storable(image=data.image)
        return _similar(core, service_named(core, name), data.image, object_query(data))

    @post(
        "/{name:str}/images/similar-objects/upload",
        operation_id="similarObjectsUpload",
        guards=[read_guard],
        status_code=HTTP_200_OK,
        responses=problems(404, 413),
    )
    async def similar_objects_upload(
        self, core: NamedDependency[Core], name: FromPath[str], data: MultipartBody[SimilarObjectsForm]
    ) -> SimilarObjectsResult:
        """The images ranked by their objects' similarity to those of an uploaded query image (multipart:
        `file`, and the JSON body's other fields)."""
        file = one_file(data.file)
        query = object_query(form_options(data, RankOptions))
        content = await file.read()

        def run() -> SimilarObjectsResult:
            service = service_named(core, name)
            with fields_renamed(image_as("file")):
                return _similar(core, service, content, query)

        return await to_thread.run_sync(run)


class ImageObjectController(Controller):
    """An image's stored objects, under /api/v1/images (the other image routes are native.ImageController's)."""

    path = "/api/v1/images"
    tags = ["images"]  # noqa: RUF012 - Litestar reads these class attributes
    security = [{"bearer": []}]  # noqa: RUF012
    dependencies = {"core": Provide(core_dependency, sync_to_thread=False)}  # noqa: RUF012

    @get(
        "/{image_id:int}/objects",
        operation_id="getImageObjects",
        guards=[read_guard],
        sync_to_thread=True,
        responses=READS,
    )
    def get_image_objects(self, core: NamedDependency[Core], image_id: ImageId) -> list[StoredObject]:
        """The objects stored for an image: each box, with the detector service that found it and the
        services that store a vector of it."""
        with core.engine.connect() as conn:
            store.get_image(conn, image_id)  # NotFound for an unknown image
            return msgspec.convert(store.image_objects(conn, image_id), list[StoredObject], from_attributes=True)


ROUTES: list[type[Controller] | HTTPRouteHandler] = [ServiceObjectController, ImageObjectController]
