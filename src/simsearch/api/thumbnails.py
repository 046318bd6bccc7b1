"""GET /api/v1/images/{id}/thumbnail: a stored image (or one of its boxes, `roi`) as a small JPEG, made from
its source file under the data roots and cached under SIMSEARCH_HOME/thumbnails, with an ETag (304 on a
matching If-None-Match) and the read token's authentication."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency, Provide
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import QueryParameter

from simsearch import store
from simsearch.api.context import read_guard
from simsearch.api.native_common import READS, ImageId, core_dependency
from simsearch.api.schemas import MAX_ID
from simsearch.core import Core
from simsearch.errors import NotFound
from simsearch.input.thumbnail import cached_thumbnail, read_source, render_thumbnail, source_file, thumbnail_key

MIN_SIZE, MAX_SIZE, DEFAULT_SIZE = 16, 1024, 256
# Revalidated on every use: an image re-indexed or deleted shows at once, and a 304 costs one stat.
_CACHE_CONTROL = "private, no-cache"

Size = Annotated[
    int,
    QueryParameter(ge=MIN_SIZE, le=MAX_SIZE, description="Longest side in pixels (never enlarged past the source's)"),
]
RoiId = Annotated[
    int | None,
    QueryParameter(ge=1, le=MAX_ID, description="One of the image's objects (roi_id): its box, cropped"),
]

_RESPONSES: dict[int, ResponseSpec] = {
    200: ResponseSpec(bytes, description="The thumbnail, a JPEG", media_type="image/jpeg", generate_examples=False),
    304: ResponseSpec(None, description="Not modified: If-None-Match holds the current ETag", generate_examples=False),
    **READS,
}


def _box(core: Core, image_id: int, roi: int | None) -> tuple[str, str, list[float] | None]:
    """The image's uri and sha256, and the box of its object `roi` (None: the whole image)."""
    with core.engine.connect() as conn:
        image = store.get_image(conn, image_id)
        if roi is None:
            return image.uri, image.sha256, None
        boxes = {o.roi_id: list(o.bbox) for o in store.image_objects(conn, image_id)}
    if roi not in boxes:
        raise NotFound(f"image {image_id} has no object {roi}: see GET /api/v1/images/{image_id}/objects")
    return image.uri, image.sha256, boxes[roi]


def _matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names `etag` (weak comparison, as RFC 9110 asks for it)."""
    if if_none_match is None:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


class ThumbnailController(Controller):
    path = "/api/v1/images"
    tags = ["images"]  # noqa: RUF012 - Litestar reads these class attributes
    security = [{"bearer": []}]  # noqa: RUF012
    dependencies = {"core": Provide(core_dependency, sync_to_thread=False)}  # noqa: RUF012

    @get(
        "/{image_id:int}/thumbnail",
        operation_id="getThumbnail",
        guards=[read_guard],
        sync_to_thread=True,
        media_type="image/jpeg",
        responses=_RESPONSES,
    )
    def thumbnail(
        self,
        core: NamedDependency[Core],
        request: Request[Any, Any, Any],
        image_id: ImageId,
        size: Size = DEFAULT_SIZE,
        roi: RoiId = None,
    ) -> Response[bytes]:
        """A JPEG of the stored image, or of one of its objects' boxes (`roi`), at most `size` pixels on its
        longer side; made from the file the image was indexed from, which must lie under the data roots and
        be unchanged (404 otherwise, with the reason). `ETag` names what it shows: send it back as
        If-None-Match for a 304."""
        uri, sha256, box = _box(core, image_id, roi)
        path = source_file(uri, core.intake.roots)  # checked on every call: a source gone is a 404, not a cache hit
        key = thumbnail_key(sha256, size, box)
        headers = {"ETag": f'"{key}"', "Cache-Control": _CACHE_CONTROL}
        if _matches(request.headers.get("if-none-match"), f'"{key}"'):
            return Response(b"", status_code=304, headers=headers)

        def make() -> bytes:
            raw = read_source(path, uri, sha256)
            return render_thumbnail(raw, size=size, max_pixels=core.intake.max_pixels, box=box)

        return Response(cached_thumbnail(core.home / "thumbnails", key, make), media_type="image/jpeg", headers=headers)


ROUTES: list[type[Controller] | HTTPRouteHandler] = [ThumbnailController]
