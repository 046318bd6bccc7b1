"""Services: register a named pipeline (model + index settings) and load its model once per process."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import Engine

from simsearch import store
from simsearch.errors import BadInput
from simsearch.index import faiss_index
from simsearch.models import Extractor, ModelSpec, load_extractor, resolve_weights
from simsearch.models.spec import METRICS
from simsearch.store import ServiceRecord


@lru_cache(maxsize=8)
def _cached_extractor(spec: ModelSpec) -> Extractor:
    return load_extractor(spec)


def extractor_for(service: ServiceRecord) -> Extractor:
    """The service's loaded model, shared by every caller in this process."""
    return _cached_extractor(service.spec)


def create_service(
    engine: Engine,
    name: str,
    *,
    model: str,
    weights: str = "DEFAULT",
    layer: str | None = None,
    size: int = 224,
    metric: str = "l2",
    index_type: str = "Flat",
    description: str = "",
    params: dict[str, Any] | None = None,
) -> ServiceRecord:
    """Validate everything (model, weights, layer, metric, index type), then insert the service row."""
    name = name.strip().lower()
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise BadInput("name", f"{name!r}: use letters, digits, '-' and '_'")
    if metric not in METRICS:
        raise BadInput("metric", f"{metric!r}: choose one of {', '.join(METRICS)}")
    if not 16 <= size <= 4096:
        raise BadInput("size", f"{size}: must be between 16 and 4096 pixels")
    spec = ModelSpec(
        model=model,
        weights=resolve_weights(model, weights),
        layer=layer,
        size=size,
        metric="cosine" if metric == "cosine" else "l2",
    )
    extractor = _cached_extractor(spec)
    faiss_index.new_index(extractor.dim, metric, index_type)  # a bad index string is refused now, not at build
    with engine.begin() as conn:
        return store.create_service(
            conn,
            name=name,
            kind="extractor",
            model=model,
            weights=spec.weights,
            layer=extractor.layer,
            input_size=size,
            metric=metric,
            dim=extractor.dim,
            description=description,
            index_settings={"backend": "faiss", "index_type": index_type},
            params=params
            or {
                "model": model,
                "weights": weights,
                "layer": layer,
                "size": size,
                "metric": metric,
                "index_type": index_type,
            },
        )
