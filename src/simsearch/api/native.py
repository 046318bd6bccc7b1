"""The native face, /api/v1: resources over the same core functions as the DeepDetect face and the CLI."""

from __future__ import annotations

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

from simsearch import services, store
from simsearch.api.context import Core, admin_guard, core_of, read_guard
from simsearch.api.native_common import (
    READS,
    SENDS,
    WRITES,
    ImageId,
    OptionalBody,
    core_dependency,
    data_as,
    fields_renamed,
    form_options,
    is_directory,
    problems,
    service_named,
)
from simsearch.api.native_objects import index_objects, index_plan
from simsearch.api.schemas import (
    BuildOut,
    BuildRequest,
    Health,
    HitOut,
    ImageOut,
    ImagePage,
    ImagePatch,
    IndexInfo,
    IndexOptions,
    IndexRequest,
    IndexResult,
    SearchRequest,
    SearchResult,
    SearchUploadForm,
    ServiceCreate,
    ServiceHealth,
    ServiceOut,
    StoredImage,
    UploadForm,
    UploadItem,
)
from simsearch.errors import BadInput
from simsearch.index import build_generation, faiss_index, index_settings, stored_settings
from simsearch.ingest import IngestReport, ingest
from simsearch.search import SearchOptions, search_vectors
from simsearch.store import BuildRecord, ImageRecord, ServiceRecord


def _service_out(core: Core, service: ServiceRecord) -> ServiceOut:
    settings = stored_settings(service.index_settings)
    with core.engine.connect() as conn:
        count = store.count_vectors(conn, service.id)
        build = store.current_build(conn, service.id)
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
        index=IndexInfo(
            backend=settings.backend,
            index_type=settings.index_type,
            vectors=count,
            generation=build.id if build else None,
            built_at=build.finished_at if build else None,
            train_samples=settings.train_samples,
            nprobe=settings.nprobe,
            ef_search=settings.ef_search,
            ondisk=settings.ondisk,
            n_trees=settings.n_trees,
            search_k=settings.search_k,
        ),
        created_at=service.created_at,
    )


def _image_out(image: ImageRecord) -> ImageOut:
    return msgspec.convert(image, ImageOut, from_attributes=True)


def _build_out(build: BuildRecord) -> BuildOut:
    return msgspec.convert(build, BuildOut, from_attributes=True)  # the record's extra fields are dropped


def _ingest(
    core: Core,
    service: ServiceRecord,
    data: list[str | bytes],
    *,
    field: str = "items",
    uris: list[str | None] | None = None,
    metadata: list[dict[str, Any]] | None = None,
    write: bool = True,
) -> IngestReport:
    if len(data) > core.settings.max_items:
        raise BadInput(field, f"{len(data)} items; at most {core.settings.max_items} per call (SIMSEARCH_MAX_ITEMS)")
    return ingest(
        core.engine,
        service,
        services.extractor_for(service),
        data,
        roots=core.roots,
        max_pixels=core.settings.max_pixels,
        batch_size=core.settings.batch_size,
        atomic=True,
        uris=uris,
        metadata=metadata,
        write=write,
        keep_vectors=True,
        urls=core.urls,
    )


def _index_result(report: IngestReport) -> IndexResult:
    images = [
        StoredImage(position=p.position, id=report.image_ids[p.stored_uri], uri=p.stored_uri)
        for p in report.predictions
    ]
    return IndexResult(images=images, indexed=report.indexed, skipped=report.skipped, skipped_uris=report.skipped_uris)


def _query_vector(core: Core, service: ServiceRecord, query: str | bytes, field: str) -> np.ndarray:
    """The (1, dim) vector of one query image: a path, base64 bytes, a URL, or uploaded bytes."""
    if isinstance(query, str) and is_directory(core, query):
        raise BadInput(field, f"{query} is a directory; search with one image")
    with fields_renamed(data_as(field)):
        predictions = _ingest(core, service, [query], field=field, write=False).predictions
    if len(predictions) != 1:
        raise BadInput(field, "give exactly one image (a file, base64 bytes or a URL)")
    return predictions[0].vector[None, :]


def _search(
    core: Core, service: ServiceRecord, queries: np.ndarray, k: int, where: dict[str, Any] | None, **knobs: int | None
) -> SearchResult:
    index = core.indexes.current(service)
    options = SearchOptions(
        where=where, nprobe=knobs.get("nprobe"), ef_search=knobs.get("ef_search"), search_k=knobs.get("search_k")
    )
    hits = search_vectors(core.engine, service, index, queries, k, options)[0]
    return SearchResult(
        results=[
            HitOut(
                image_id=h.image_id,
                uri=h.uri,
                distance=h.dist,
                width=h.width,
                height=h.height,
                sha256=h.sha256,
                metadata=h.metadata,
            )
            for h in hits
        ],
        generation=index.build.id if index is not None else None,
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
    for i, item in enumerate(items):
        store.check_storable(item.uri, f"items[{i}].uri")
        store.check_storable(item.metadata, f"items[{i}].metadata")
    return items


def _form_filter(raw: str | None) -> dict[str, Any] | None:
    if raw is None or not raw.strip():
        return None
    try:
        where = msgspec.json.decode(raw, type=dict[str, Any] | None)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise BadInput("filter", f"must be a JSON object: {exc}") from exc
    store.check_storable(where, "filter")
    return where


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
        for key in ("model", "weights", "layer", "index_type", "description"):
            store.check_storable(getattr(data, key), key)
        if data.index_gpu:  # refused here when faiss cannot use a GPU; DeepDetect's face warns instead
            faiss_index.check_gpu(0)
        settings = index_settings(
            {
                "index_type": data.index_type,
                "train_samples": data.train_samples,
                "nprobe": data.nprobe,
                "ef_search": data.ef_search,
                "ondisk": data.ondisk,
                "index_backend": data.index_backend,
                "n_trees": data.n_trees,
                "search_k": data.search_k,
                "index_gpu": data.index_gpu,
            }
        )
        record = services.create_service(
            core.engine,
            data.name,
            model=data.model,
            weights=data.weights,
            layer=data.layer,
            size=data.size,
            metric=data.metric,
            index=settings,
            description=data.description,
            weights_roots=[*core.roots, core.settings.home],
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
        record = services.remove_service(core.engine, service.name, clear="full", index_dir=core.settings.index_dir)
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
        for i, item in enumerate(data.items):
            store.check_storable(item.uri, f"items[{i}].uri")
            store.check_storable(item.metadata, f"items[{i}].metadata")
        store.check_storable(data.categories, "categories")
        service = service_named(core, name)
        plan = index_plan(core, service, data)
        content: list[str | bytes] = [item.data for item in data.items]
        uris: list[str | None] = [item.uri for item in data.items]
        metadata = [item.metadata for item in data.items]
        if plan is not None:
            return index_objects(core, plan, content, uris=uris, metadata=metadata)
        return _index_result(_ingest(core, service, content, uris=uris, metadata=metadata))

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
        uris: list[str | None] = [i.uri for i in items]
        metadata = [i.metadata for i in items]

        def run() -> IndexResult:
            service = service_named(core, name)
            plan = index_plan(core, service, options)
            with fields_renamed(data_as(r"files[\1]")):
                if plan is not None:
                    return index_objects(core, plan, contents, field="files", uris=uris, metadata=metadata)
                report = _ingest(core, service, contents, field="files", uris=uris, metadata=metadata)
            return _index_result(report)

        return await to_thread.run_sync(run)

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
        store.check_storable(data.filter, "filter")
        store.check_storable(data.image, "image")
        service = service_named(core, name)
        given = [x for x in (data.image, data.image_id, data.vector) if x is not None]
        if len(given) != 1:
            raise BadInput("query", "give exactly one of image, image_id and vector")
        if data.vector is not None:
            given_vector = np.asarray([data.vector], dtype=np.float64)
            if not (np.abs(given_vector) <= np.finfo(np.float32).max).all():
                raise BadInput("vector", "values must be finite float32 numbers")
            queries = given_vector.astype(np.float32)
        elif data.image_id is not None:
            with core.engine.connect() as conn:
                queries = store.image_vector(conn, service.id, data.image_id)[None, :]
        else:
            queries = _query_vector(core, service, str(data.image), "image")
        knobs = {"nprobe": data.nprobe, "ef_search": data.ef_search, "search_k": data.search_k}
        return _search(core, service, queries, data.k, data.filter, **knobs)

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
        if not isinstance(data.file, UploadFile):
            raise BadInput("file", "send exactly one image as a file part named `file` (multipart/form-data)")
        where = _form_filter(data.filter)
        content = await data.file.read()

        def run() -> SearchResult:
            service = service_named(core, name)
            return _search(core, service, _query_vector(core, service, content, "file"), data.k, where)

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
        store.check_storable(index_type, "index_type")
        service = service_named(core, name)
        build = build_generation(core.engine, service, core.settings.index_dir, index_type=index_type)
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
        store.check_storable(data.metadata, "metadata")
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


ROUTES: list[type[Controller] | HTTPRouteHandler] = [ServiceController, ImageController, health]
