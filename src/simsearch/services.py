"""Services: register a named pipeline (model + index settings), detach/re-attach/delete it, and load
its model once per process."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine

from simsearch import store
from simsearch.errors import BadInput, Conflict
from simsearch.index import IndexSettings, check_settings, remove_index_files
from simsearch.input import under_roots
from simsearch.models import Detector, Extractor, ModelCache, ModelSpec, is_detector, resolve_weights
from simsearch.models.spec import METRICS
from simsearch.models.weights import is_file_weights
from simsearch.store import ServiceRecord
from simsearch.store.services import find_detached_by_repository


def extractor_for(service: ServiceRecord, models: ModelCache) -> Extractor:
    """The service's loaded model, shared by every caller in this process."""
    if service.kind == "detector":
        raise BadInput("service", f"{service.name} is a detector service: it finds objects, use it for object search")
    return models.extractor(service.spec)


def detector_for(service: ServiceRecord, models: ModelCache) -> Detector:
    """The detector service's loaded model, shared by every caller in this process."""
    if service.kind != "detector":
        raise BadInput(
            "service", f"{service.name} is an extractor service ({service.model}): it makes no boxes; use a detector"
        )
    return models.detector(service.spec)


def check_name(name: str) -> str:
    """The service name as stored: stripped and lowercased (DeepDetect lowercases names everywhere)."""
    name = name.strip().lower()
    if not name or len(name) > 100 or not name.replace("_", "").replace("-", "").isalnum() or not name.isascii():
        raise BadInput("name", f"{name[:100]!r}: use 1 to 100 ASCII letters, digits, '-' and '_'")
    return name


def create_service(
    engine: Engine,
    models: ModelCache,
    name: str,
    *,
    model: str,
    weights: str = "DEFAULT",
    layer: str | None = None,
    size: int | None = None,
    height: int | None = None,
    metric: str = "l2",
    index_type: str = "Flat",
    index: IndexSettings | None = None,
    repository: Path | None = None,
    description: str = "",
    params: dict[str, Any] | None = None,
    weights_roots: Sequence[Path] | None = None,
    reattach: ServiceRecord | None = None,
) -> ServiceRecord:
    """Validate everything (model, weights, layer, metric, index settings), then insert the service row.

    A detection model (`models.is_detector`) makes a detector service: its vectors, when the model has
    them, are one per detected box (`dim` 0 when it has none). `size` None: 224 for extractors, the
    model's own input size (0) for detectors. `height`: the input height where it differs from `size`
    (the width); images are then resized to exactly width x height.

    A service removed with `detach_service` (DeepDetect's clear=mem) is re-attached, with its stored
    vectors, when the model makes the same vectors (same model, weights, input size, layer, metric);
    otherwise `Conflict`. `reattach` (a detached service found by `detached_service`, e.g. by its
    repository) is the one re-attached, under `name`, when no service has that name.
    """
    name = check_name(name)
    for field, value in (("model", model), ("weights", weights), ("layer", layer), ("description", description)):
        store.check_storable(value, field)
    if weights_roots is not None and is_file_weights(weights) and not under_roots(weights, weights_roots):
        raise BadInput("weights", f"{weights} is outside the allowed data roots; set SIMSEARCH_DATA_ROOTS")
    if metric not in METRICS:
        raise BadInput("metric", f"{metric!r}: choose one of {', '.join(METRICS)}")
    spec = _spec(model, weights, layer, size, height, metric)
    detector = is_detector(model)
    made: Extractor | Detector = models.detector(spec) if detector else models.extractor(spec)
    made_layer = getattr(made, "layer", None) or ("box_head" if made.dim else "")
    settings = index or IndexSettings(index_type=index_type)
    if made.dim:  # a bad index string is refused now, not at the first build
        check_settings(settings, made.dim, metric)
    index_values = settings.to_dict() | ({"repository": str(repository)} if repository else {})
    given = params or {
        "model": model,
        "weights": weights,
        "layer": layer,
        "size": spec.size,
        "metric": metric,
        "index_type": settings.index_type,
    } | ({"height": spec.height} if spec.height is not None else {})
    with engine.begin() as conn:
        existing = store.find_service(conn, name)
        if existing is None and reattach is not None:
            existing = store.find_service(conn, reattach.name)  # still detached? (checked below)
        if existing is not None and existing.detached_at is not None:
            _check_same_vectors(existing, spec, model, metric, layer is None or made_layer == existing.layer)
            return store.reattach_service(
                conn, existing.id, name=name, description=description, params=given, index_settings=index_values
            )
        return store.create_service(
            conn,
            name=name,
            kind="detector" if detector else "extractor",
            model=model,
            weights=spec.weights,
            layer=made_layer,
            input_size=spec.size,
            input_height=spec.height,
            metric=metric,
            dim=made.dim,
            description=description,
            index_settings=index_values,
            params=given,
        )


def _spec(model: str, weights: str, layer: str | None, size: int | None, height: int | None, metric: str) -> ModelSpec:
    """The model a creation asks for, its input size checked (None: 224 for extractors, a detector's own)."""
    detector = is_detector(model)
    if size is None:
        size = 0 if detector else 224
    if not (16 <= size <= 4096 or (detector and size == 0)):
        raise BadInput("size", f"{size}: must be between 16 and 4096 pixels")
    if height == size:
        height = None  # square: one way to record it, so the same model is the same spec
    if height is not None and not (16 <= height <= 4096 and size > 0):
        raise BadInput("height", f"{height}: must be between 16 and 4096 pixels, with a width")
    return ModelSpec(
        model=model,
        weights=resolve_weights(model, weights),
        layer=layer,
        size=size,
        metric="cosine" if metric == "cosine" else "l2",
        height=height,
    )


def _check_same_vectors(existing: ServiceRecord, spec: ModelSpec, model: str, metric: str, same_layer: bool) -> None:
    """A detached service is re-attached only by the model that made its stored vectors."""
    made = (existing.model, existing.weights, existing.input_size, existing.input_height, existing.metric)
    if made == (model, spec.weights, spec.size, spec.height, metric) and same_layer:
        return
    shape = f"{spec.size}x{spec.height}" if spec.height is not None else f"{spec.size}px"
    raise Conflict(
        f"service {existing.name!r} was removed with clear=mem and its stored vectors come from "
        f"{existing.model} ({existing.weights}, {existing.input_shape}, {existing.metric}), not "
        f"{model} ({spec.weights}, {shape}, {metric}); delete them first "
        f"(DELETE /services/{existing.name}?clear=full) or use the same model settings"
    )


def detached_service(engine: Engine, name: str, repository: Path | None) -> ServiceRecord | None:
    """The detached service a creation without model settings takes them from, as DeepDetect reloads a
    model from its repository: the one of that name, else the one whose index files live in `repository`."""
    with engine.connect() as conn:
        found = store.find_service(conn, name.strip().lower())
        if found is not None and found.detached_at is None:  # a re-creation over a serving service
            raise Conflict(f"service {found.name!r} already exists; delete it first or pick another name")
        if found is None and repository is not None:
            found = find_detached_by_repository(conn, str(repository))
    return found if found is not None and found.detached_at is not None else None


def remove_service(engine: Engine, name: str, *, clear: Literal["mem", "full"], index_dir: Path) -> ServiceRecord:
    """clear="mem": detach (vectors and index files stay, re-attached by the same model);
    clear="full": delete the service, its vectors, ROIs, index files and the images only it used."""
    name = name.strip().lower()
    with engine.begin() as conn:
        if clear == "mem":
            return store.detach_service(conn, name)
        record = store.delete_service(conn, name)
    remove_index_files(index_dir, record)
    return record


def extractor_at(
    engine: Engine, models: ModelCache, service: ServiceRecord, layer: str | None, *, stored: bool
) -> tuple[ServiceRecord, Extractor]:
    """The service's model cut at `layer` (None: the service's own layer), and the service as that layer
    makes it (its `layer` and `dim`).

    `stored=True` (an index or search call, which meet the stored vectors): another layer is allowed only
    while the service stores none. A plain extraction (`stored=False`) may use any layer. Nothing is
    written here: `ingest` records a new layer in the transaction that writes the first vectors.
    """
    if service.kind == "detector":
        raise BadInput("service", f"{service.name} is a detector service; its vectors are per object (rois)")
    if layer is None or layer == service.layer:
        return service, extractor_for(service, models)
    extractor = models.extractor(replace(service.spec, layer=layer))
    if extractor.layer == service.layer:
        return service, extractor
    if stored:
        with engine.connect() as conn:
            if store.count_vectors(conn, service.id) > 0:
                raise BadInput(
                    "extract_layer",
                    f"{service.name} stores vectors of layer {service.layer!r} ({service.dim}-d); "
                    f"{layer!r} would make {extractor.dim}-d vectors. Use {service.layer!r}, or another service",
                )
    return replace(service, layer=extractor.layer, dim=extractor.dim), extractor
