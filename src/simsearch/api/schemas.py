"""Request and response bodies of the native face (/api/v1), as msgspec Structs: typed in OpenAPI,
validated by Litestar before a handler runs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar.datastructures import UploadFile

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$", examples=["photos"])]
PositiveInt = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
MAX_ID = 2**53 - 1  # ids above cannot be exact in a JSON number (nor in OpenAPI's maximum, a float)
RowId = Annotated[int, msgspec.Meta(ge=1, le=MAX_ID, description="A stored image id", examples=[17])]
K = Annotated[int, msgspec.Meta(ge=1, le=1000, description="How many neighbours to return")]
Metadata = Annotated[dict[str, Any], msgspec.Meta(examples=[{"label": "cat", "sku": "A-17"}])]


class ServiceCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=100, examples=["resnet50"])]
    weights: Annotated[str, msgspec.Meta(min_length=1, max_length=4096, examples=["DEFAULT", "none"])] = "DEFAULT"
    layer: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    size: Annotated[int, msgspec.Meta(ge=16, le=4096)] = 224
    metric: Literal["l2", "cosine"] = "l2"
    index_backend: Literal["faiss", "annoy"] = "faiss"
    index_type: Annotated[str, msgspec.Meta(min_length=1, max_length=200, examples=["Flat", "IVF256,SQ8"])] = "Flat"
    train_samples: PositiveInt | None = None
    nprobe: PositiveInt | None = None
    ef_search: PositiveInt | None = None
    n_trees: Annotated[int, msgspec.Meta(ge=1, le=10_000, description="Annoy: trees in the forest")] | None = None
    search_k: PositiveInt | None = None  # Annoy: nodes inspected per search
    ondisk: bool = False  # IVF only: inverted lists in a file beside the index, memory-mapped at search
    index_gpu: bool = False
    description: Annotated[str, msgspec.Meta(max_length=10_000)] = ""


class IndexInfo(msgspec.Struct):
    backend: str  # faiss or annoy
    index_type: str
    vectors: int
    generation: int | None
    built_at: datetime | None
    train_samples: int | None
    nprobe: int | None
    ef_search: int | None
    ondisk: bool
    n_trees: int | None
    search_k: int | None


class ServiceOut(msgspec.Struct):
    name: str
    description: str
    model: str
    weights: str
    layer: str
    size: int
    metric: str
    dimension: int
    index: IndexInfo
    created_at: datetime


class ImageItem(msgspec.Struct, forbid_unknown_fields=True):
    data: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            description="A path under SIMSEARCH_DATA_ROOTS, a directory, base64 image bytes, or an http(s) URL "
            "when SIMSEARCH_ALLOW_URLS=1",
            examples=["/srv/photos/cat.jpg"],
        ),
    ]
    uri: Annotated[str, msgspec.Meta(min_length=1, max_length=4096, examples=["sku-17"])] | None = None
    metadata: Metadata = msgspec.field(default_factory=dict)


class UploadItem(msgspec.Struct, forbid_unknown_fields=True):
    """One entry of an upload's `items` form field (a JSON array, one object per file)."""

    uri: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)] | None = None
    metadata: Metadata = msgspec.field(default_factory=dict)


class IndexRequest(msgspec.Struct, forbid_unknown_fields=True):
    items: Annotated[list[ImageItem], msgspec.Meta(min_length=1)]


class StoredImage(msgspec.Struct):
    position: int  # which item (or upload) it came from
    id: int
    uri: str


class IndexResult(msgspec.Struct):
    images: list[StoredImage]
    indexed: int
    skipped: int
    skipped_uris: list[str]


@dataclass
class UploadForm:
    """multipart/form-data: one or more `files`; `items` (optional) is a JSON array, one object per
    file, with `uri` and `metadata`."""

    files: list[UploadFile]
    items: (
        Annotated[
            str,
            msgspec.Meta(
                description="JSON array of {uri, metadata}, one object per file",
                examples=['[{"uri": "sku-17", "metadata": {"label": "cat"}}]'],
            ),
        ]
        | None
    ) = None


class ImageOut(msgspec.Struct):
    id: int
    uri: str
    sha256: str
    width: int
    height: int
    metadata: dict[str, Any]
    created_at: datetime


class ImagePage(msgspec.Struct):
    items: list[ImageOut]
    next_cursor: str | None


class ImagePatch(msgspec.Struct, forbid_unknown_fields=True):
    metadata: Metadata
    replace: bool = False  # false: merge (new keys win); true: replace the whole object


class SearchRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Give exactly one of `image`, `image_id` and `vector`."""

    image: Annotated[str, msgspec.Meta(min_length=1, description="path, base64 bytes or URL")] | None = None
    image_id: RowId | None = None
    vector: Annotated[list[float], msgspec.Meta(min_length=1, max_length=65536)] | None = None
    k: K = 10
    filter: (
        Annotated[
            dict[str, Any], msgspec.Meta(description="jsonb containment on image metadata", examples=[{"label": "cat"}])
        ]
        | None
    ) = None
    nprobe: PositiveInt | None = None
    ef_search: PositiveInt | None = None
    search_k: PositiveInt | None = None


@dataclass
class SearchUploadForm:
    """multipart/form-data: the query image as `file`; `k` and `filter` (a JSON object) optional."""

    file: UploadFile
    k: K = 10
    filter: (
        Annotated[str, msgspec.Meta(description="JSON object: jsonb containment", examples=['{"label": "cat"}'])] | None
    ) = None


class HitOut(msgspec.Struct):
    image_id: int
    uri: str
    distance: float
    width: int
    height: int
    sha256: str
    metadata: dict[str, Any]


class SearchResult(msgspec.Struct):
    results: list[HitOut]
    generation: int | None  # the index generation that answered (None: exact search only)


class BuildRequest(msgspec.Struct, forbid_unknown_fields=True):
    index_type: Annotated[str, msgspec.Meta(min_length=1, max_length=200, examples=["IVF256,SQ8"])] | None = None


class BuildOut(msgspec.Struct):
    id: int
    status: str
    backend: str
    index_type: str
    vector_count: int
    watermark: int
    started_at: datetime
    finished_at: datetime | None
    timings: dict[str, Any]
    error: str | None


class ServiceHealth(msgspec.Struct):
    name: str
    generation: int | None  # the newest ready generation in Postgres
    loaded: int | None  # the generation this process holds in memory


class Health(msgspec.Struct):
    status: Literal["ok"]
    database: bool
    services: list[ServiceHealth]


class Problem(msgspec.Struct, omit_defaults=True):
    """Every error of /api/v1: RFC 9457 problem details (media type application/problem+json)."""

    type: str
    title: str
    status: int
    detail: str
    field: str | None = None  # the request field at fault, for 400s
