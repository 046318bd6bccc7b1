"""The native face, /api/v1: resources over the same core functions as the DeepDetect face and the CLI."""

from __future__ import annotations

import json
from typing import Annotated, Any

import numpy as np
from anyio import to_thread
from litestar import Controller, Request, delete, get, patch, post
from litestar.di import Provide
from litestar.enums import RequestEncodingType
from litestar.handlers import HTTPRouteHandler
from litestar.params import Body, Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from simsearch import services, store
from simsearch.api.app import Core, admin_guard, core_of, read_guard
from simsearch.api.schemas import (
    BuildOut,
    BuildRequest,
    Health,
    HitOut,
    ImageOut,
    ImagePage,
    ImagePatch,
    IndexInfo,
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
)
from simsearch.errors import BadInput
from simsearch.index import build_generation, index_settings, stored_settings
from simsearch.ingest import IngestReport, ingest
from simsearch.search import SearchOptions, search_vectors
from simsearch.store import BuildRecord, ImageRecord, ServiceRecord


def _core(request: Request[Any, Any, Any]) -> Core:
    return core_of(request)


def _service(core: Core, name: str) -> ServiceRecord:
    with core.engine.connect() as conn:
        return store.get_service(conn, name.strip().lower())


def _service_out(core: Core, service: ServiceRecord) -> ServiceOut:
    settings = stored_settings(service.index_settings)
    with core.engine.connect() as conn:
        count = store.count_vectors(conn, service.id)
        build = store.current_build(conn, service.id)
    return ServiceOut(
        name=service.name,
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
        ),
        created_at=service.created_at,
    )


def _image_out(image: ImageRecord) -> ImageOut:
    return ImageOut(
        id=image.id,
        uri=image.uri,
        sha256=image.sha256,
        width=image.width,
        height=image.height,
        metadata=image.metadata,
        created_at=image.created_at,
    )


def _build_out(build: BuildRecord) -> BuildOut:
    return BuildOut(
        id=build.id,
        status=build.status,
        backend=build.backend,
        index_type=build.index_type,
        vector_count=build.vector_count,
        watermark=build.watermark,
        started_at=build.started_at,
        finished_at=build.finished_at,
        timings=build.timings,
        error=build.error,
    )


def _ingest(
    core: Core,
    service: ServiceRecord,
    data: list[str | bytes],
    *,
    uris: list[str | None] | None = None,
    metadata: list[dict[str, Any]] | None = None,
    write: bool = True,
) -> IngestReport:
    if len(data) > core.settings.max_items:
        raise BadInput("items", f"{len(data)} items; at most {core.settings.max_items} per call (SIMSEARCH_MAX_ITEMS)")
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


def _search(
    core: Core, service: ServiceRecord, queries: np.ndarray, k: int, where: dict[str, Any] | None, **knobs: int | None
) -> SearchResult:
    index = core.indexes.current(service)
    options = SearchOptions(where=where, nprobe=knobs.get("nprobe"), ef_search=knobs.get("ef_search"))
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


def _json_form_field(value: str | None, field: str, kind: type) -> Any:  # noqa: ANN401 - parsed JSON
    if value is None or value == "":
        return None
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise BadInput(field, f"must be JSON: {exc}") from exc
    if not isinstance(parsed, kind):
        raise BadInput(field, f"must be a JSON {'array' if kind is list else 'object'}")
    return parsed


class ServiceController(Controller):
    path = "/api/v1/services"
    tags = ["services"]  # noqa: RUF012 - Litestar reads these class attributes
    dependencies = {"core": Provide(_core, sync_to_thread=False)}  # noqa: RUF012

    @post("/", operation_id="createService", guards=[admin_guard], sync_to_thread=True, status_code=HTTP_201_CREATED)
    def create_service(self, core: Core, data: ServiceCreate) -> ServiceOut:
        """Register a service: the model that makes vectors, and how they are indexed."""
        if data.index_gpu:
            raise BadInput("index_gpu", "GPU indexes are not available in this version; leave index_gpu false")
        settings = index_settings(
            {
                "index_type": data.index_type,
                "train_samples": data.train_samples,
                "nprobe": data.nprobe,
                "ef_search": data.ef_search,
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
        )
        return _service_out(core, record)

    @get("/", operation_id="listServices", guards=[read_guard], sync_to_thread=True)
    def list_services(self, core: Core) -> list[ServiceOut]:
        """Every service, by name."""
        with core.engine.connect() as conn:
            listed = store.list_services(conn)
        return [_service_out(core, s) for s in listed]

    @get("/{name:str}", operation_id="getService", guards=[read_guard], sync_to_thread=True)
    def get_service(self, core: Core, name: str) -> ServiceOut:
        """One service with its index state."""
        return _service_out(core, _service(core, name))

    @delete("/{name:str}", operation_id="deleteService", guards=[admin_guard], sync_to_thread=True)
    def delete_service(self, core: Core, name: str) -> None:
        """Delete the service, its vectors, its index files, and the images no other service uses."""
        record = services.remove_service(core.engine, name, clear="full", index_dir=core.settings.index_dir)
        core.indexes.forget(record.id)

    @post(
        "/{name:str}/images",
        operation_id="indexImages",
        guards=[admin_guard],
        sync_to_thread=True,
        status_code=HTTP_201_CREATED,
    )
    def index_json(self, core: Core, name: str, data: IndexRequest) -> IndexResult:
        """Index images given as paths, directories, base64 or URLs, with optional uri and metadata each;
        one transaction for the whole call."""
        service = _service(core, name)
        report = _ingest(
            core,
            service,
            [item.data for item in data.items],
            uris=[item.uri for item in data.items],
            metadata=[item.metadata for item in data.items],
        )
        return _index_result(report)

    @post(
        "/{name:str}/images/upload",
        operation_id="uploadImages",
        guards=[admin_guard],
        status_code=HTTP_201_CREATED,
    )
    async def index_upload(
        self, core: Core, name: str, data: Annotated[UploadForm, Body(media_type=RequestEncodingType.MULTI_PART)]
    ) -> IndexResult:
        """Index uploaded image files (multipart); `items` is an optional JSON array of {uri, metadata},
        one per file. Stored uris default to sha256:<hex> of the bytes."""
        files = data.files if isinstance(data.files, list) else [data.files]
        contents: list[str | bytes] = [await f.read() for f in files]
        items = _json_form_field(data.items, "items", list) or [{}] * len(files)
        if len(items) != len(files) or not all(isinstance(i, dict) for i in items):
            raise BadInput("items", f"must be a JSON array of {len(files)} objects, one per file")
        uris = [i.get("uri") if isinstance(i.get("uri"), str) else None for i in items]
        metadata = [i.get("metadata") if isinstance(i.get("metadata"), dict) else {} for i in items]
        service = await to_thread.run_sync(_service, core, name)
        report = await to_thread.run_sync(lambda: _ingest(core, service, contents, uris=uris, metadata=metadata))
        return _index_result(report)

    @post(
        "/{name:str}/search", operation_id="search", guards=[read_guard], sync_to_thread=True, status_code=HTTP_200_OK
    )
    def search_json(self, core: Core, name: str, data: SearchRequest) -> SearchResult:
        """The k stored images nearest to a query image, a stored image, or a raw vector."""
        service = _service(core, name)
        given = [x for x in (data.image, data.image_id, data.vector) if x is not None]
        if len(given) != 1:
            raise BadInput("query", "give exactly one of image, image_id and vector")
        if data.vector is not None:
            queries = np.asarray([data.vector], dtype=np.float32)
        elif data.image_id is not None:
            with core.engine.connect() as conn:
                queries = store.image_vector(conn, service.id, data.image_id)[None, :]
        else:
            queries = _ingest(core, service, [str(data.image)], write=False).predictions[0].vector[None, :]
        return _search(core, service, queries, data.k, data.filter, nprobe=data.nprobe, ef_search=data.ef_search)

    @post("/{name:str}/search/upload", operation_id="searchUpload", guards=[read_guard], status_code=HTTP_200_OK)
    async def search_upload(
        self, core: Core, name: str, data: Annotated[SearchUploadForm, Body(media_type=RequestEncodingType.MULTI_PART)]
    ) -> SearchResult:
        """The k stored images nearest to an uploaded image (multipart: `file`, optional `k`, `filter`)."""
        if not 1 <= data.k <= 1000:
            raise BadInput("k", f"must be between 1 and 1000, got {data.k}")
        where = _json_form_field(data.filter, "filter", dict)
        content = await data.file.read()

        def run() -> SearchResult:
            service = _service(core, name)
            vector = _ingest(core, service, [content], write=False).predictions[0].vector
            return _search(core, service, vector[None, :], data.k, where)

        return await to_thread.run_sync(run)

    @post(
        "/{name:str}/builds",
        operation_id="startBuild",
        guards=[admin_guard],
        sync_to_thread=True,
        status_code=HTTP_201_CREATED,
    )
    def start_build(self, core: Core, name: str, data: BuildRequest | None = None) -> BuildOut:
        """Build a new index generation from Postgres and swap it in (answers when it is ready)."""
        service = _service(core, name)
        index_type = data.index_type if data is not None else None
        return _build_out(build_generation(core.engine, service, core.settings.index_dir, index_type=index_type))

    @get("/{name:str}/builds", operation_id="listBuilds", guards=[read_guard], sync_to_thread=True)
    def list_builds(self, core: Core, name: str) -> list[BuildOut]:
        """Every generation of the service's index, newest first (building, ready, failed, retired)."""
        service = _service(core, name)
        with core.engine.connect() as conn:
            return [_build_out(b) for b in store.list_builds(conn, service.id)]


class ImageController(Controller):
    path = "/api/v1/images"
    tags = ["images"]  # noqa: RUF012 - Litestar reads these class attributes
    dependencies = {"core": Provide(_core, sync_to_thread=False)}  # noqa: RUF012

    @get("/", operation_id="listImages", guards=[read_guard], sync_to_thread=True)
    def list_images(
        self,
        core: Core,
        service: str | None = None,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Parameter(description="next_cursor of the previous page")] = None,
    ) -> ImagePage:
        """Images in id order, a page at a time (keyset pagination); `service` keeps those it indexed."""
        after = 0
        if cursor is not None:
            if not cursor.isdigit() or len(cursor) > 18:
                raise BadInput("cursor", "not a cursor this API gave out; pass next_cursor unchanged")
            after = int(cursor)
        service_id = _service(core, service).id if service is not None else None
        with core.engine.connect() as conn:
            page = store.list_images(conn, service_id=service_id, after_id=after, limit=limit)
        next_cursor = str(page[-1].id) if len(page) == limit else None
        return ImagePage(items=[_image_out(i) for i in page], next_cursor=next_cursor)

    @get("/{image_id:int}", operation_id="getImage", guards=[read_guard], sync_to_thread=True)
    def get_image(self, core: Core, image_id: int) -> ImageOut:
        """One stored image and its metadata."""
        with core.engine.connect() as conn:
            return _image_out(store.get_image(conn, image_id))

    @patch("/{image_id:int}", operation_id="updateImage", guards=[admin_guard], sync_to_thread=True)
    def update_image(self, core: Core, image_id: int, data: ImagePatch) -> ImageOut:
        """Merge (or with replace=true, replace) the image's metadata."""
        with core.engine.begin() as conn:
            return _image_out(store.update_metadata(conn, image_id, data.metadata, replace=data.replace))

    @delete(
        "/{image_id:int}",
        operation_id="deleteImage",
        guards=[admin_guard],
        sync_to_thread=True,
        status_code=HTTP_204_NO_CONTENT,
    )
    def delete_image(self, core: Core, image_id: int) -> None:
        """Delete the image with its objects and vectors in every service: gone from search at once."""
        with core.engine.begin() as conn:
            if store.delete_images(conn, [image_id]) == 0:
                store.get_image(conn, image_id)  # raises NotFound


@get("/api/v1/health", operation_id="health", tags=["health"], sync_to_thread=True)
def health(request: Request[Any, Any, Any]) -> Health:
    """The database answers, and which index generation each service has current and loaded."""
    core = core_of(request)
    with core.engine.connect() as conn:
        listed = store.list_services(conn)
        current = {s.id: store.current_build(conn, s.id) for s in listed}
    generations = {sid: build.id for sid, build in current.items() if build is not None}
    loaded = core.indexes.loaded()
    return Health(
        status="ok",
        database=True,
        services=[
            ServiceHealth(name=s.name, generation=generations.get(s.id), loaded=loaded.get(s.id)) for s in listed
        ],
    )


ROUTES: list[type[Controller] | HTTPRouteHandler] = [ServiceController, ImageController, health]
