"""Plain records the store hands to the layers above (no ORM objects leave the store)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

from simsearch.models.spec import Metric, ModelSpec

# How images are ranked by their objects' hits (sql/functions/rank_images.sql): mean or min distance
# ascending, count of query objects hit or the sum of 1 / (1 + distance) descending.
Score = Literal["mean", "min", "count", "sum_similarity"]
SCORES: tuple[Score, ...] = get_args(Score)


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    id: int
    name: str
    kind: str
    model: str
    weights: str
    layer: str
    input_size: int
    metric: str
    dim: int
    index_settings: dict[str, Any]
    description: str
    params: dict[str, Any]
    created_at: datetime
    detached_at: datetime | None = None
    input_height: int | None = None  # None: the same as input_size (a square input)

    @property
    def spec(self) -> ModelSpec:
        """The model that makes this service's vectors."""
        metric: Metric = "cosine" if self.metric == "cosine" else "l2"
        return ModelSpec(
            model=self.model,
            weights=self.weights,
            layer=self.layer,
            size=self.input_size,
            metric=metric,
            height=self.input_height,
        )

    @property
    def input_shape(self) -> str:
        """The input size as a person writes it: "224px", or "300x200" (width x height)."""
        if self.input_height is None or self.input_height == self.input_size:
            return f"{self.input_size}px"
        return f"{self.input_size}x{self.input_height}"


@dataclass(frozen=True, slots=True)
class BuildRecord:
    id: int  # the generation
    service_id: int
    backend: str
    index_type: str
    params: dict[str, Any]
    vector_count: int
    watermark: int
    path: str | None
    status: str
    timings: dict[str, Any]
    error: str | None
    started_at: datetime
    finished_at: datetime | None
    # the generation's files in the artefact store (None: a build from before migration 0005, at `path`)
    artefact_key: str | None = None
    artefact_size: int | None = None
    artefact_sha256: str | None = None
    artefact_files: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class NewImage:
    uri: str
    sha256: str
    width: int
    height: int
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ImageRecord:
    id: int
    uri: str
    sha256: str
    width: int
    height: int
    metadata: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Hit:
    embedding_id: int
    dist: float
    image_id: int
    roi_id: int | None
    uri: str
    width: int
    height: int
    sha256: str
    metadata: dict[str, Any]
    # the stored object's box (xmin, ymin, xmax, ymax in source pixels), category and probability;
    # None for whole-image vectors
    category: str | None = None
    prob: float | None = None
    bbox: tuple[float, float, float, float] | None = None


@dataclass(frozen=True, slots=True)
class NewObject:
    """A detected box to store, with the vector a service made of it (None: the box only)."""

    image_id: int
    bbox: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax in source pixels, ymin = top
    prob: float
    category: str | None
    vector: Any = None  # np.ndarray (dim,) float32


@dataclass(frozen=True, slots=True)
class ObjectRecord:
    roi_id: int
    image_id: int
    category: str | None
    prob: float
    bbox: tuple[float, float, float, float]
    detector: str  # the service that found it
    embedded_by: list[str]  # services that store a vector of it
    created_at: datetime


@dataclass(frozen=True, slots=True)
class RankedImage:
    """An image ranked by its objects' hits (sql/functions/rank_images.sql)."""

    image_id: int
    uri: str
    width: int
    height: int
    sha256: str
    metadata: dict[str, Any]
    score: float
    hit_count: int
    query_count: int
    mean_dist: float
    min_dist: float
    # [{query, embedding_id, roi_id, dist, bbox, category, prob}] by query, then distance
    matches: list[dict[str, Any]]
