"""Which object pipeline a call asks for: the same rule for the native API and the CLI."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine

from simsearch import services, store
from simsearch.errors import BadInput
from simsearch.input import NO_CROP, Crop
from simsearch.models import ModelCache
from simsearch.objects.types import Detection, Plan
from simsearch.store import ServiceRecord


def _detector_named(engine: Engine, name: str, service: ServiceRecord) -> ServiceRecord:
    """The detector service `name` that finds the objects `service` (an extractor) embeds."""
    try:
        name = services.check_name(name)
    except BadInput as exc:
        raise BadInput("detector", exc.reason) from None
    with engine.connect() as conn:
        found = store.find_service(conn, name)
    if found is None or found.detached_at is not None:
        raise BadInput("detector", f"no service {name!r}; create a detector service first")
    if found.kind != "detector":
        raise BadInput("detector", f"{found.name} is an extractor service ({found.model}): it finds no objects")
    if service.kind == "detector":
        raise BadInput(
            "detector",
            f"{service.name} is a detector itself: leave the detector out to use its own box vectors, "
            "or name an extractor service to embed the crops",
        )
    return found


def plan(
    engine: Engine,
    models: ModelCache,
    service: ServiceRecord,
    detector: str | None,
    *,
    crop: Crop | None = None,
    confidence_threshold: float = 0.0,
    categories: Sequence[str] | None = None,
    search: bool = False,
) -> Plan | None:
    """The object pipeline a call asks for; None for whole images.

    With `detector` (a detector service's name), it finds the boxes and `service` (an extractor) embeds each
    crop. Without it, `service` must be a detector: its own box vectors are stored and searched (a detector
    that makes none stores the boxes only, and cannot be searched). Refusals name the field `detector`.
    """
    kept = tuple(categories) if categories is not None else None
    if detector is not None:
        found = _detector_named(engine, detector, service)
        how = Detection(
            detector=services.detector_for(found, models),
            extractor=services.extractor_for(service, models),
            confidence_threshold=confidence_threshold,
            categories=kept,
            crop=crop or NO_CROP,
        )
        return Plan(found, service, how)
    if service.kind != "detector":
        if search:
            raise BadInput("detector", f"{service.name} is an extractor: name the detector service that finds objects")
        return None
    if service.dim == 0 and search:
        raise BadInput(
            "detector",
            f"{service.name} ({service.model}) finds objects but makes no vectors of them: search an extractor "
            f"service and name {service.name} as its detector",
        )
    how = Detection(
        detector=services.detector_for(service, models),
        box_vectors=service.dim > 0,
        confidence_threshold=confidence_threshold,
        categories=kept,
    )
    return Plan(service, service if service.dim > 0 else None, how)
