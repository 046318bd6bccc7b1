"""The native face, /api/v1: resources over the same core functions as the DeepDetect face and the CLI."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

import msgspec
import numpy as np
from anyio import to_thread
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency, Provide
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody, MultipartBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from simsearch import queries, services, store
from simsearch.api.context import admin_guard, core_of, read_guard
from simsearch.api.native_common import (
    READS,
    SENDS,
    WRITES,
    ImageId,
    OptionalBody,
    core_dependency,
    fields_renamed,
    form_options,
    image_as,
    items_as,
    one_file,
    problems,
    service_named,
    storable,
)
from simsearch.api.native_objects import index_objects, index_plan
from simsearch.api.schemas import (
    BuildOut,
    BuildRequest,
    Health,
    HitOut,
    ImageItem,
    ImageOut,
    ImagePage,
    ImagePatch,
    IndexInfo,
    IndexOptions,
    IndexRequest,
    IndexResult,
    Liveness,
    Readiness,
    ReadinessState,
    SearchRequest,
    SearchResult,
    SearchUploadForm,
    ServiceCreate,
    ServiceHealth,
    ServiceOut,
    ServiceReadiness,
    StoredImage,
    UploadForm,
    UploadItem,
)
from simsearch.core import Core
from simsearch.errors import BadInput
from simsearch.index import (
    INDEX_KEYS,
    GenerationState,
    build_generation,
    faiss_index,
    index_settings,
    stored_settings,
)
from simsearch.ingest import ingest
from simsearch.queries import Found
from simsearch.search import SearchOptions
from simsearch.store import BuildRecord, ImageRecord, ServiceRecord


def _service_out(core: Core, service: ServiceRecord) -> ServiceOut:
    with core.engine.connect() as conn:
        count = store.count_vectors(conn, service.id)
        build = store.current_build(conn, service.id)
    state = {
        "vectors": count,
        "generation": build.id if build else None,
        "built_at": build.finished_at if build else None,
    }
    index = msgspec.convert(stored_settings(service.index_settings).to_dict() | state, IndexInfo)  # extra keys dropped
    return ServiceOut(
        name=service.name,
        kind="detector" if service.kind == "detector" else "extractor",
        description=service.description,
        model=service.model,
        weights=service.weights,
        layer=service.layer,
        size=service.input_size,
        metric=service.metric,
        dimension=service.dim,
        index=index,
        created_at=service.created_at,
    )


def _image_out(image: ImageRecord) -> ImageOut:
    return msgspec.convert(image, ImageOut, from_attributes=True)


def _build_out(build: BuildRecord) -> BuildOut:
    return msgspec.convert(build, BuildOut, from_attributes=True)  # the record's extra fields are dropped


def _whole_images(
    core: Core,
    service: ServiceRecord,
    data: Sequence[str | bytes],
    uris: Sequence[str | None],
    metadata: Sequence[dict[str, Any]],
) -> IndexResult:
    extractor = services.extractor_for(service, core.models)
    report = ingest(
        core.engine, service, extractor, data, core.intake, atomic=True, uris=uris, metadata=metadata, keep_vectors=True
    )
    images = [
        StoredImage(position=p.position, id=report.image_ids[p.stored_uri], uri=p.stored_uri)
        for p in report.predictions
    ]
    return IndexResult(images=images, indexed=report.indexed, skipped=report.skipped, skipped_uris=report.skipped_uris)


def _index(
    core: Core,
    name: str,
    options: IndexOptions,
    data: Sequence[str | bytes],
    items: Sequence[ImageItem | UploadItem],
    rename: Callable[[str], str],
) -> IndexResult:
    """Whole images, or the objects found in them; the core's field names as the request's (`rename`)."""
    service = service_named(core, name)
    plan = index_plan(core, service, options)
    uris, metadata = [i.uri for i in items], [i.metadata for i in items]
    with fields_renamed(rename):
        if plan is not None:
            return index_objects(core, plan, data, uris, metadata)
        return _whole_images(core, service, data, uris, metadata)


def _search_result(found: Found) -> SearchResult:
    return SearchResult(
        results=msgspec.convert(found.hits, list[HitOut], from_attributes=True), generation=found.generation
    )


def _upload_items(raw: str | None, count: int) -> list[UploadItem]:
    """The `items` form field: a JSON array with one {uri, metadata} object per uploaded file."""
    if raw is None or not raw.strip():
        return [UploadItem() for _ in range(count)]
    try:
        items = msgspec.json.decode(raw, type=list[UploadItem] | None)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise BadInput("items", f"must be a JSON array of {{uri, metadata}} objects, one per file: {exc}") from exc
    if items is None:
        return [UploadItem() for _ in range(count)]
    if len(items) != count:
        raise BadInput("items", f"has {len(items)} objects for {count} files; give one per file")
    return items


def _form_filter(raw: str | None) -> dict[str, Any] | None:
    if raw is None or not raw.strip():
        return None
    try:
        where = msgspec.json.decode(raw, type=dict[str, Any] | None)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise BadInput("filter", f"must be a JSON object: {exc}") from exc
    storable(filter=where)
    return where


def _query_vector(core: Core, service: ServiceRecord, data: SearchRequest) -> np.ndarray:
    """The one query a search gives: an image, a stored image's id, or a vector."""
    if len([x for x in (data.image, data.image_id, data.vector) if x is not None]) != 1:
        raise BadInput("query", "give exactly one of image, image_id and vector")
    if data.vector is not None:
        return queries.given_vector(data.vector)
    if data.image_id is not None:
        return queries.stored_vector(core, service, data.image_id)
    return queries.image_vector(core, service, str(data.image))


class ServiceController(Controller):
    path = "/api/v1/services"
    tags = ["services"]  # noqa: RUF012 - Litestar reads these class attributes
    security = [{"bearer": []}]  # noqa: RUF012 - in OpenAPI; enforced by the guards when a token is set
    dependencies = {"core": Provide(core_dependency, sync_to_thread=False)}  # noqa: RUF012

    @post(
        "/",
        operation_id="createService",
        guards=[admin_guard],
        sync_to_thread=True,
        status_code=HTTP_201_CREATED,
        responses=problems(403, 409, 413),
    )
    def create_service(self, core: NamedDependency[Core], data: JSONBody[ServiceCreate]) -> ServiceOut:
        """Register a service: the model that makes vectors, and how they are indexed."""
        storable(index_type=data.index_type)  # services.create_service checks the model's strings
        if data.index_gpu:  # refused here when faiss cannot use a GPU; DeepDetect's face warns instead
            faiss_index.check_gpu(0)
        record = services.create_service(
            core.engine,
            core.models,
            data.name,
            model=data.model,
            weights=data.weights,
            layer=data.layer,
            size=data.size,
            metric=data.metric,
            index=index_settings({key: getattr(data, key) for key in INDEX_KEYS if hasattr(data, key)}),
            description=data.description,
            weights_roots=core.weights_roots,
        )
        return _service_out(core, record)

    @get("/", operation_id="listServices", guards=[read_guard], sync_to_thread=True, responses=problems())
    def list_services(self, core: NamedDependency[Core]) -> list[ServiceOut]:
        """Every service, by name."""
        with core.engine.connect() as conn:
            listed = store.list_services(conn)
        return [_service_out(core, s) for s in listed]

    @get("/{name:str}", operation_id="getService", guards=[read_guard], sync_to_thread=True, responses=READS)
    def get_service(self, core: NamedDependency[Core], name: FromPath[str]) -> ServiceOut:
        """One service with its index state."""
        return _service_out(core, service_named(core, name))

    @delete("/{name:str}", operation_id="deleteService", guards=[admin_guard], sync_to_thread=True, responses=WRITES)
    def delete_service(self, core: NamedDependency[Core], name: FromPath[str]) -> None:
        """Delete the service, its vectors, its index files, and the images no other service uses."""
        service = service_named(core, name)
        record = services.remove_service(core.engine, service.name, clear="full", index_dir=core.index_dir)
        core.indexes.forget(record.id)

    @post(
        "/{name:str}/images",
        operation_id="indexImages",
        guards=[admin_guard],
        sync_to_thread=True,
        status_code=HTTP_201_CREATED,
        responses=SENDS,
    )
    def index_json(self, core: NamedDependency[Core], name: FromPath[str], data: JSONBody[IndexRequest]) -> IndexResult:
        """Index images given as paths, directories, base64 or URLs, with optional uri and metadata each;
        one transaction for the whole call. Errors name the item as `data[i]`.

        Objects instead of whole images: with `detector` (a detector service), the objects it finds are
        cropped (`crop`) and embedded by this service; when this service is itself a detector, its boxes
        are indexed with its own box vectors (the boxes only, for a detector that makes none). Each image
        reports the objects stored; an image with none stores nothing (its `id` is null)."""
        content: list[str | bytes] = [item.data for item in data.items]
        return _index(core, name, data, content, data.items, items_as("items", "data"))

    @post(
        "/{name:str}/images/upload",
        operation_id="uploadImages",
        guards=[admin_guard],
        status_code=HTTP_201_CREATED,
        responses=problems(403, 404, 413),
    )
    async def index_upload(
        self,
        core: NamedDependency[Core],
        name: FromPath[str],
        data: MultipartBody[UploadForm],
    ) -> IndexResult:
        """Index uploaded image files (multipart); `items` is an optional JSON array of {uri, metadata},
        one per file. Stored uris default to sha256:<hex> of the bytes. Errors name the file as `files[i]`.
        `detector`, `crop` (a JSON object), `confidence_threshold` and `categories` (a JSON array) index
        objects, as in the JSON body."""
        files = data.files if isinstance(data.files, list) else [data.files]
        if not files or not all(isinstance(f, UploadFile) for f in files):
            raise BadInput("files", "send each image as a file part named `files` (multipart/form-data)")
        items = _upload_items(data.items, len(files))
        options = form_options(data, IndexOptions)
        contents: list[str | bytes] = [await f.read() for f in files]
        rename = items_as("files", "files")
        return await to_thread.run_sync(lambda: _index(core, name, options, contents, items, rename))

    @post(
        "/{name:str}/search",
        operation_id="search",
        guards=[read_guard],
        sync_to_thread=True,
        status_code=HTTP_200_OK,
        responses=problems(404, 413),
    )
    def search_json(
        self, core: NamedDependency[Core], name: FromPath[str], data: JSONBody[SearchRequest]
    ) -> SearchResult:
        """The k stored images nearest to a query image, a stored image, or a raw vector; `filter` keeps
        the images whose metadata contains it (and still answers k when k of them exist)."""
        storable(filter=data.filter, image=data.image)
        service = service_named(core, name)
        options = SearchOptions(where=data.filter, nprobe=data.nprobe, ef_search=data.ef_search, search_k=data.search_k)
        return _search_result(queries.search_image(core, service, _query_vector(core, service, data), data.k, options))

    @post(
        "/{name:str}/search/upload",
        operation_id="searchUpload",
        guards=[read_guard],
        status_code=HTTP_200_OK,
        responses=problems(404, 413),
    )
    async def search_upload(
        self,
        core: NamedDependency[Core],
        name: FromPath[str],
        data: MultipartBody[SearchUploadForm],
    ) -> SearchResult:
        """The k stored images nearest to an uploaded image (multipart: `file`, optional `k`, `filter`)."""
        file = one_file(data.file)
        options = SearchOptions(where=_form_filter(data.filter))
        content = await file.read()

        def run() -> SearchResult:
            service = service_named(core, name)
            with fields_renamed(image_as("file")):
                vector = queries.image_vector(core, service, content)
            return _search_result(queries.search_image(core, service, vector, data.k, options))

        return await to_thread.run_sync(run)

    @post(
        "/{name:str}/builds",
        operation_id="startBuild",
        guards=[admin_guard],
        sync_to_thread=True,
        status_code=HTTP_201_CREATED,
        responses=SENDS,
        operation_class=OptionalBody,
    )
    def start_build(
        self, core: NamedDependency[Core], name: FromPath[str], data: JSONBody[BuildRequest | None] = None
    ) -> BuildOut:
        """Build a new index generation from Postgres and swap it in (answers when it is ready); a body is
        optional, its `index_type` overrides the service's for this generation."""
        index_type = data.index_type if data is not None else None
        storable(index_type=index_type)
        service = service_named(core, name)
        build = build_generation(core.engine, service, core.index_dir, index_type=index_type, artefacts=core.artefacts)
        core.indexes.invalidate(service.id)  # the next search here sees it (other processes hear NOTIFY)
        return _build_out(build)

    @get("/{name:str}/builds", operation_id="listBuilds", guards=[read_guard], sync_to_thread=True, responses=READS)
    def list_builds(self, core: NamedDependency[Core], name: FromPath[str]) -> list[BuildOut]:
        """Every generation of the service's index, newest first (building, ready, failed, retired)."""
        service = service_named(core, name)
        with core.engine.connect() as conn:
            return [_build_out(b) for b in store.list_builds(conn, service.id)]


class ImageController(Controller):
    path = "/api/v1/images"
    tags = ["images"]  # noqa: RUF012 - Litestar reads these class attributes
    security = [{"bearer": []}]  # noqa: RUF012
    dependencies = {"core": Provide(core_dependency, sync_to_thread=False)}  # noqa: RUF012

    @get("/", operation_id="listImages", guards=[read_guard], sync_to_thread=True, responses=READS)
    def list_images(
        self,
        core: NamedDependency[Core],
        service: Annotated[str | None, QueryParameter(description="only the images this service indexed")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000, description="page size")] = 100,
        cursor: Annotated[str | None, QueryParameter(description="next_cursor of the previous page")] = None,
    ) -> ImagePage:
        """Images in id order, a page at a time (keyset pagination); `service` keeps those it indexed.
        `next_cursor` is null on the last page."""
        after = 0
        if cursor is not None:
            if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 18:
                raise BadInput("cursor", "not a cursor this API gave out; pass next_cursor unchanged")
            after = int(cursor)
        service_id = service_named(core, service).id if service is not None else None
        with core.engine.connect() as conn:
            page = store.list_images(conn, service_id=service_id, after_id=after, limit=limit + 1)
        more = len(page) > limit
        page = page[:limit]
        return ImagePage(items=[_image_out(i) for i in page], next_cursor=str(page[-1].id) if more else None)

    @get("/{image_id:int}", operation_id="getImage", guards=[read_guard], sync_to_thread=True, responses=READS)
    def get_image(self, core: NamedDependency[Core], image_id: ImageId) -> ImageOut:
        """One stored image and its metadata."""
        with core.engine.connect() as conn:
            return _image_out(store.get_image(conn, image_id))

    @patch("/{image_id:int}", operation_id="updateImage", guards=[admin_guard], sync_to_thread=True, responses=SENDS)
    def update_image(self, core: NamedDependency[Core], image_id: ImageId, data: JSONBody[ImagePatch]) -> ImageOut:
        """Merge (or with replace=true, replace) the image's metadata; new keys win."""
        storable(metadata=data.metadata)
        with core.engine.begin() as conn:
            return _image_out(store.update_metadata(conn, image_id, data.metadata, replace=data.replace))

    @delete(
        "/{image_id:int}",
        operation_id="deleteImage",
        guards=[admin_guard],
        sync_to_thread=True,
        status_code=HTTP_204_NO_CONTENT,
        responses=WRITES,
    )
    def delete_image(self, core: NamedDependency[Core], image_id: ImageId) -> None:
        """Delete the image with its objects and vectors in every service: gone from search at once."""
        with core.engine.begin() as conn:
            if store.delete_images(conn, [image_id]) == 0:
                store.get_image(conn, image_id)  # raises NotFound


@get(
    "/api/v1/health",
    operation_id="health",
    tags=["health"],
    sync_to_thread=True,
    responses={503: ResponseSpec(Health, description="The database does not answer (`database: false`).")},
)
def health(request: Request[Any, Any, Any]) -> Response[Health]:
    """The database answers, and which index generation each service has current and loaded. No token
    needed (for load balancers and probes): 503 while the database does not answer."""
    core = core_of(request)
    try:
        with core.engine.connect() as conn:
            listed = store.list_services(conn)
            current = {s.id: store.current_build(conn, s.id) for s in listed}
    except Exception as exc:  # the pool's timeout never passes the engine's error hook: ask the same rule
        if store.database_unavailable(exc) is None:
            raise
        return Response(Health(status="unavailable", database=False, services=[]), status_code=503)
    generations = {sid: build.id for sid, build in current.items() if build is not None}
    loaded = core.indexes.loaded()
    return Response(
        Health(
            status="ok",
            database=True,
            services=[
                ServiceHealth(name=s.name, generation=generations.get(s.id), loaded=loaded.get(s.id)) for s in listed
            ],
        )
    )


@get(
    "/api/v1/ready",
    operation_id="readiness",
    tags=["health"],
    sync_to_thread=True,
    responses={
        503: ResponseSpec(
            Readiness, description="Not ready: the database does not answer, or generations are still loading at start."
        )
    },
)
def readiness(request: Request[Any, Any, Any]) -> Response[Readiness]:
    """Whether a load balancer should send this replica traffic (no token needed). 200 `ready`: every
    service's current generation is loaded; 200 `degraded`: some cannot be (the reason and the lag are
    per service) and their searches answer from the generation held or exactly through Postgres, correct
    but slower; 503 while the database does not answer or the generations are still loading at start."""
    core = core_of(request)
    try:
        with core.engine.connect() as conn:
            listed = store.list_services(conn)
            current = store.current_builds(conn, [s.id for s in listed])
    except Exception as exc:  # as in `health`: an outage is a 503, anything else is a bug
        if store.database_unavailable(exc) is None:
            raise
        return Response(Readiness(status="unavailable", database=False, services=[]), status_code=503)
    states = core.indexes.states()
    services = [
        _service_readiness(s.name, b.id if (b := current.get(s.id)) else None, states.get(s.id)) for s in listed
    ]
    if not core.indexes.warm:
        return Response(Readiness(status="starting", database=True, services=services), status_code=503)
    degraded = any(s.state == "degraded" for s in services)
    return Response(Readiness(status="degraded" if degraded else "ready", database=True, services=services))


def _service_readiness(name: str, generation: int | None, state: GenerationState | None) -> ServiceReadiness:
    loaded = state.loaded if state is not None else None
    kind: ReadinessState
    if generation is None:
        kind = "exact"
    elif loaded is not None and loaded >= generation:
        kind = "current"
    elif state is None:
        kind = "on_first_use"
    else:
        kind = "degraded" if state.degraded is not None else "loading"
    lag = state.lag_s if state is not None and kind in ("degraded", "loading") else 0.0
    reason = state.degraded if state is not None and kind == "degraded" else None
    return ServiceReadiness(name=name, generation=generation, loaded=loaded, state=kind, reason=reason, lag_s=lag)


@get("/api/v1/live", operation_id="liveness", tags=["health"])
async def liveness() -> Liveness:
    """The process answers (no token, no database): for an orchestrator's liveness probe, which should
    not restart replicas while the database is away (/api/v1/health and /api/v1/ready say that)."""
    return Liveness(status="alive")


ROUTES: list[type[Controller] | HTTPRouteHandler] = [ServiceController, ImageController, health, readiness, liveness]
