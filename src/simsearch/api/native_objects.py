"""The native face's objects: indexing the objects a detector finds, object search, images ranked by
their objects' similarity, and an image's stored objects."""

from __future__ import annotations

from typing import Any

import msgspec
from anyio import to_thread
from litestar import Controller, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency, Provide
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, JSONBody, MultipartBody
from litestar.status_codes import HTTP_200_OK

from simsearch import objects, store
from simsearch.api.context import Core, read_guard
from simsearch.api.native_common import (
    READS,
    ImageId,
    core_dependency,
    data_as,
    fields_renamed,
    form_options,
    is_directory,
    problems,
    service_named,
)
from simsearch.api.schemas import (
    Crop,
    FoundObject,
    IndexOptions,
    IndexResult,
    Match,
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
from simsearch.errors import BadInput
from simsearch.objects import CropOptions, ObjectImage, ObjectReport, Plan, plan
from simsearch.search import SearchOptions
from simsearch.store import Hit, ObjectRecord, RankedImage, ServiceRecord


def _object_plan(
    core: Core,
    service: ServiceRecord,
    *,
    detector: str | None,
    crop: Crop | None,
    threshold: float,
    categories: list[str] | None,
    search: bool,
) -> Plan | None:
    """`objects.plan` for a request; `crop`, `confidence_threshold` and `categories` without any object
    pipeline are refused rather than ignored."""
    options = CropOptions(**msgspec.structs.asdict(crop)) if crop is not None else None
    found = plan(
        core.engine,
        service,
        detector,
        crop=options,
        confidence_threshold=threshold,
        categories=categories,
        search=search,
    )
    if found is None:
        for field, given in (("crop", crop), ("confidence_threshold", threshold or None), ("categories", categories)):
            if given is not None:
                raise BadInput(field, "applies to objects only: name a detector service in `detector`")
    return found


def index_plan(core: Core, service: ServiceRecord, options: IndexOptions) -> Plan | None:
    """The object pipeline of an indexing call (JSON body or upload form); None for whole images."""
    return _object_plan(
        core,
        service,
        detector=options.detector,
        crop=options.crop,
        threshold=options.confidence_threshold,
        categories=options.categories,
        search=False,
    )


def _box(values: Any) -> list[float]:  # noqa: ANN401 - a tuple or a JSON array of four numbers
    return [float(v) for v in values]


def index_objects(
    core: Core,
    plan: Plan,
    data: list[str | bytes],
    *,
    field: str = "items",
    uris: list[str | None] | None = None,
    metadata: list[dict[str, Any]] | None = None,
) -> IndexResult:
    if len(data) > core.settings.max_items:
        raise BadInput(field, f"{len(data)} items; at most {core.settings.max_items} per call (SIMSEARCH_MAX_ITEMS)")
    report: ObjectReport = objects.index_objects(
        core.engine,
        plan.detector,
        plan.service,
        data,
        plan.how,
        roots=core.roots,
        max_pixels=core.settings.max_pixels,
        batch_size=core.settings.batch_size,
        atomic=True,
        uris=uris,
        metadata=metadata,
        urls=core.urls,
    )
    images = [
        StoredImage(
            position=i.position,
            id=report.image_ids[i.stored_uri] if i.objects else None,
            uri=i.stored_uri,
            objects=[FoundObject(bbox=_box(o.bbox), category=o.category, prob=o.prob) for o in i.objects],
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


def _query_objects(core: Core, plan: Plan, query: str | bytes, field: str) -> ObjectImage:
    """One query image with the objects found in it (nothing is written)."""
    if isinstance(query, str) and is_directory(core, query):
        raise BadInput(field, f"{query} is a directory; search with one image")
    with fields_renamed(data_as(field)):
        found = [
            image
            for batch, _ in objects.find_objects(
                [query], plan.how, roots=core.roots, max_pixels=core.settings.max_pixels, batch_size=1, urls=core.urls
            )
            for image in batch
        ]
    if len(found) != 1:
        raise BadInput(field, "give exactly one image (a file, base64 bytes or a URL)")
    return found[0]


def _object_search(
    core: Core, service: ServiceRecord, query: str | bytes, field: str, given: ObjectOptions
) -> tuple[ServiceRecord, ObjectImage, list[list[Hit]], int | None]:
    """Detect the query image's objects and find each one's k nearest stored objects: the service that
    answered, the query image, the hits per query object, and the index generation used."""
    for key in ("filter", "categories", "query_categories"):
        store.check_storable(getattr(given, key), key)
    plan = _object_plan(
        core,
        service,
        detector=given.detector,
        crop=given.crop,
        threshold=given.confidence_threshold,
        categories=given.query_categories,
        search=True,
    )
    if plan is None or plan.service is None:  # refused by _object_plan already when searching
        raise BadInput("detector", f"{service.name} makes no object vectors to search")
    image = _query_objects(core, plan, query, field)
    index = core.indexes.current(plan.service)
    options = SearchOptions(
        where=given.filter,
        categories=tuple(given.categories) if given.categories is not None else None,
        nprobe=given.nprobe,
        ef_search=given.ef_search,
        search_k=given.search_k,
    )
    hits = objects.search_objects(core.engine, plan.service, index, [image], given.k, options)[0]
    return plan.service, image, hits, index.build.id if index is not None else None


def _neighbour(hit: Hit) -> Neighbour:
    return Neighbour(
        image_id=hit.image_id,
        uri=hit.uri,
        dist=hit.dist,
        roi_id=hit.roi_id,
        embedding_id=hit.embedding_id,
        bbox=_box(hit.bbox) if hit.bbox is not None else None,
        category=hit.category,
        prob=hit.prob,
        width=hit.width,
        height=hit.height,
        metadata=hit.metadata,
    )


def _search_result(image: ObjectImage, hits: list[list[Hit]], generation: int | None) -> ObjectSearchResult:
    return ObjectSearchResult(
        query_objects=[
            QueryObjectHits(
                bbox=_box(o.bbox), category=o.category, prob=o.prob, neighbours=[_neighbour(h) for h in found]
            )
            for o, found in zip(image.objects, hits, strict=True)
        ],
        generation=generation,
    )


def _ranked(image: RankedImage) -> RankedImageOut:
    return RankedImageOut(
        image_id=image.image_id,
        uri=image.uri,
        score=image.score,
        hit_count=image.hit_count,
        query_count=image.query_count,
        mean_dist=image.mean_dist,
        min_dist=image.min_dist,
        width=image.width,
        height=image.height,
        sha256=image.sha256,
        metadata=image.metadata,
        matches=msgspec.convert(image.matches, list[Match]),
    )


def _similar_objects(
    core: Core, service: ServiceRecord, query: str | bytes, field: str, given: RankOptions
) -> SimilarObjectsResult:
    """The images ranked by their objects' hits (sql/functions/rank_images.sql does the ranking)."""
    answering, image, hits, generation = _object_search(core, service, query, field, given)
    ranked = objects.rank_images(
        core.engine,
        answering,
        hits,
        score=given.score,
        categories=given.categories,
        where=given.filter,
        limit=given.limit,
    )
    return SimilarObjectsResult(
        query_objects=[FoundObject(bbox=_box(o.bbox), category=o.category, prob=o.prob) for o in image.objects],
        images=[_ranked(r) for r in ranked],
        generation=generation,
    )


def _stored_object(record: ObjectRecord) -> StoredObject:
    return StoredObject(
        roi_id=record.roi_id,
        image_id=record.image_id,
        bbox=_box(record.bbox),
        category=record.category,
        prob=record.prob,
        detector=record.detector,
        embedded_by=record.embedded_by,
        created_at=record.created_at,
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
        store.check_storable(data.image, "image")
        service = service_named(core, name)
        _, image, hits, generation = _object_search(core, service, data.image, "image", data)
        return _search_result(image, hits, generation)

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
        if not isinstance(data.file, UploadFile):
            raise BadInput("file", "send exactly one image as a file part named `file` (multipart/form-data)")
        given = form_options(data, ObjectOptions)
        content = await data.file.read()

        def run() -> ObjectSearchResult:
            service = service_named(core, name)
            _, image, hits, generation = _object_search(core, service, content, "file", given)
            return _search_result(image, hits, generation)

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
        store.check_storable(data.image, "image")
        service = service_named(core, name)
        return _similar_objects(core, service, data.image, "image", data)

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
        if not isinstance(data.file, UploadFile):
            raise BadInput("file", "send exactly one image as a file part named `file` (multipart/form-data)")
        given = form_options(data, RankOptions)
        content = await data.file.read()

        def run() -> SimilarObjectsResult:
            return _similar_objects(core, service_named(core, name), content, "file", given)

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
            return [_stored_object(o) for o in store.image_objects(conn, image_id)]


ROUTES: list[type[Controller] | HTTPRouteHandler] = [ServiceObjectController, ImageObjectController]
