"""Request and response bodies of the native face (/api/v1), as msgspec Structs: typed in OpenAPI,
validated by Litestar before a handler runs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar.datastructures import UploadFile

# the core's own types, re-exported: a request decodes straight into them (the OpenAPI component is "Crop")
from simsearch.input import Crop as Crop
from simsearch.store import Score as Score

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$", examples=["photos"])]
PositiveInt = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
MAX_ID = 2**53 - 1  # ids above cannot be exact in a JSON number (nor in OpenAPI's maximum, a float)
RowId = Annotated[int, msgspec.Meta(ge=1, le=MAX_ID, description="A stored image id", examples=[17])]
K = Annotated[int, msgspec.Meta(ge=1, le=1000, description="How many neighbours to return")]
Metadata = Annotated[dict[str, Any], msgspec.Meta(examples=[{"label": "cat", "sku": "A-17"}])]
Filter = Annotated[
    dict[str, Any], msgspec.Meta(description="jsonb containment on image metadata", examples=[{"label": "cat"}])
]
Limit = Annotated[int, msgspec.Meta(ge=1, le=1000, description="How many images to return")]
Category = Annotated[str, msgspec.Meta(min_length=1, max_length=200, examples=["face"])]
Categories = Annotated[list[Category], msgspec.Meta(min_length=1, max_length=1000)]
Threshold = Annotated[
    float, msgspec.Meta(ge=0, le=1, description="Keep only the detected boxes of at least this probability")
]
Detector = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="A detector service: it finds the objects, and the service of the path embeds each crop. "
        "Left out: the service of the path must be a detector itself (its own box vectors)",
        examples=["faces"],
    ),
]
Box = Annotated[
    list[float],
    msgspec.Meta(min_length=4, max_length=4, description="xmin, ymin, xmax, ymax in source pixels (ymin = top)"),
]
CropForm = Annotated[
    str,
    msgspec.Meta(
        description="JSON object: padding_ratio, fixed_width, fixed_height, min_width, min_height, force_square",
        examples=['{"padding_ratio": 0.1}'],
    ),
]
CategoriesForm = Annotated[str, msgspec.Meta(description="JSON array of category names", examples=['["face"]'])]


class ServiceCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    model: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=100,
            description="An extractor (a torchvision classification model, dlib:face_descriptor) or a detector "
            "(a torchvision detection model, ssd_mobilenet_v2_coco, dlib:frontal_face, opencv:<cascade>)",
            examples=["resnet50", "dlib:frontal_face", "fasterrcnn_mobilenet_v3_large_320_fpn"],
        ),
    ]
    weights: Annotated[str, msgspec.Meta(min_length=1, max_length=4096, examples=["DEFAULT", "none"])] = "DEFAULT"
    layer: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    size: (
        Annotated[
            int,
            msgspec.Meta(
                ge=0,
                le=4096,
                description="Input width and height in pixels (16 to 4096). Left out: 224 for extractors, the "
                "model's own size for detectors (also 0); a detector's images are fitted to this longer side",
            ),
        ]
        | None
    ) = None
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
    kind: Literal["extractor", "detector"]  # a detector finds objects (and, with dimension > 0, embeds them)
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


class IndexOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Objects instead of whole images: which detector finds them, how they are cropped, which are kept."""

    detector: Detector | None = None
    crop: Crop | None = None
    confidence_threshold: Threshold = 0.0
    categories: (
        Annotated[Categories, msgspec.Meta(description="Keep only the detected objects of these categories")] | None
    ) = None


class IndexRequest(IndexOptions, forbid_unknown_fields=True, kw_only=True):
    """Whole images, or with `detector` (or a detector service in the path) the objects found in them."""

    items: Annotated[list[ImageItem], msgspec.Meta(min_length=1)]


class FoundObject(msgspec.Struct):
    """An object a detector found in an image."""

    bbox: Box
    category: str
    prob: float


class StoredImage(msgspec.Struct, omit_defaults=True):
    position: int  # which item (or upload) it came from
    id: int | None  # null: nothing stored for it (objects were asked for and none was found)
    uri: str
    objects: list[FoundObject] | None = None  # object indexing only: the objects stored for it


class IndexResult(msgspec.Struct, omit_defaults=True):
    images: list[StoredImage]
    indexed: int  # images stored
    skipped: int
    skipped_uris: list[str]
    objects: int | None = None  # object indexing only: objects stored


@dataclass
class UploadForm:
    """multipart/form-data: one or more `files`; `items` (optional) is a JSON array, one object per
    file, with `uri` and `metadata`; `detector`, `crop` (a JSON object), `confidence_threshold` and
    `categories` (a JSON array) as in the JSON body."""

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
    detector: Detector | None = None
    crop: CropForm | None = None
    confidence_threshold: Threshold = 0.0
    categories: CategoriesForm | None = None


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
    filter: Filter | None = None
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


class ObjectOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How the objects of a query image are found, and how far their neighbours are looked for."""

    detector: Detector | None = None
    crop: Crop | None = None
    confidence_threshold: Threshold = 0.0
    query_categories: (
        Annotated[Categories, msgspec.Meta(description="Query with only the detected objects of these categories")]
        | None
    ) = None
    k: K = 10
    categories: Annotated[Categories, msgspec.Meta(description="Only stored objects of these categories")] | None = None
    filter: Filter | None = None
    nprobe: PositiveInt | None = None
    ef_search: PositiveInt | None = None
    search_k: PositiveInt | None = None


QueryImage = Annotated[str, msgspec.Meta(min_length=1, description="The query image: path, base64 bytes or URL")]


class ObjectSearchRequest(ObjectOptions, forbid_unknown_fields=True, kw_only=True):
    """Detect the objects of a query image and find each one's k nearest stored objects."""

    image: QueryImage


class RankOptions(ObjectOptions, forbid_unknown_fields=True, kw_only=True):
    """As an object search (k neighbours per query object), then the images ranked by those hits:
    mean (mean distance, ascending), min (smallest distance, ascending), count (distinct query objects
    that hit the image, descending), sum_similarity (sum of 1 / (1 + distance), descending); ties by
    mean distance, then image id."""

    score: Score = "mean"
    limit: Limit = 10


class SimilarObjectsRequest(RankOptions, forbid_unknown_fields=True, kw_only=True):
    """The images ranked by how similar their objects are to the objects of a query image."""

    image: QueryImage


@dataclass
class ObjectSearchForm:
    """multipart/form-data: the query image as `file`; the other fields as in the JSON body, with
    `crop` and `filter` as JSON objects and the category lists as JSON arrays."""

    file: UploadFile
    detector: Detector | None = None
    crop: CropForm | None = None
    confidence_threshold: Threshold = 0.0
    query_categories: CategoriesForm | None = None
    k: K = 10
    categories: CategoriesForm | None = None
    filter: (
        Annotated[str, msgspec.Meta(description="JSON object: jsonb containment", examples=['{"label": "cat"}'])] | None
    ) = None


@dataclass
class SimilarObjectsForm(ObjectSearchForm):
    """multipart/form-data: as the object search upload, plus `score` and `limit`."""

    score: Score = "mean"
    limit: Limit = 10


class Neighbour(msgspec.Struct):
    """A stored object near a query object."""

    image_id: int
    uri: str
    dist: float
    roi_id: int | None
    embedding_id: int
    bbox: Box | None
    category: str | None
    prob: float | None
    width: int
    height: int
    metadata: dict[str, Any]


class QueryObjectHits(msgspec.Struct):
    """A query object (index i of `query_objects`) with its nearest stored objects, nearest first."""

    bbox: Box
    category: str
    prob: float
    neighbours: list[Neighbour]


class ObjectSearchResult(msgspec.Struct):
    query_objects: list[QueryObjectHits]
    generation: int | None  # the index generation that answered (None: exact search only)


class Match(msgspec.Struct):
    """A hit of a query object on an object of a ranked image."""

    query: int  # index in query_objects
    roi_id: int | None
    embedding_id: int
    dist: float
    bbox: Box | None
    category: str | None
    prob: float | None


class RankedImageOut(msgspec.Struct):
    image_id: int
    uri: str
    score: float
    hit_count: int  # hits on the image's objects
    query_count: int  # distinct query objects among them
    mean_dist: float
    min_dist: float
    width: int
    height: int
    sha256: str
    metadata: dict[str, Any]
    matches: list[Match]  # by query object, then distance


class SimilarObjectsResult(msgspec.Struct):
    query_objects: list[FoundObject]
    images: list[RankedImageOut]  # best first
    generation: int | None


class StoredObject(msgspec.Struct):
    """A box stored for an image, by the detector service that found it."""

    roi_id: int
    image_id: int
    bbox: Box
    category: str | None
    prob: float
    detector: str
    embedded_by: list[str]  # services that store a vector of it
    created_at: datetime


class HitOut(msgspec.Struct):
    image_id: int
    uri: str
    dist: float = msgspec.field(name="distance")  # `distance` on the wire; named as Hit names it, so a hit converts
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
    status: Literal["ok", "unavailable"]
    database: bool
    services: list[ServiceHealth]


ReadinessState = Literal["current", "degraded", "loading", "exact", "on_first_use"]


class ServiceReadiness(msgspec.Struct):
    name: str
    generation: int | None  # the newest ready generation in Postgres
    loaded: int | None  # the generation this process searches with (None: exact search through Postgres)
    # current: loaded; degraded: the current one cannot be loaded (reason), answers come from `loaded` or
    # exactly from Postgres; loading: a newer one is being fetched, `loaded` answers meanwhile; exact: never
    # built; on_first_use: built after this process started and not searched here yet (loaded when it is)
    state: ReadinessState
    reason: str | None  # why degraded: store unreachable, missing file, checksum mismatch, unreadable index
    lag_s: float  # seconds since `generation` was made ready while this process does not hold it


class Readiness(msgspec.Struct):
    """Whether this replica should get traffic: 503 while the database does not answer or the generations
    are still being loaded at start; 200 `ready`, or 200 `degraded` (correct answers, slower: the reason and
    the lag are per service)."""

    status: Literal["ready", "degraded", "starting", "unavailable"]
    database: bool
    services: list[ServiceReadiness]


class Liveness(msgspec.Struct):
    status: Literal["alive"]


class Problem(msgspec.Struct, omit_defaults=True):
    """Every error of /api/v1: RFC 9457 problem details (media type application/problem+json)."""

    type: str
    title: str
    status: int
    detail: str
    field: str | None = None  # the request field at fault, for 400s
