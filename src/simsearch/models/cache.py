"""ModelCache: each model loaded once per process, shared by every caller, unloadable (as IndexCache holds
the index generations). Importing it loads no torch: a process that only opens the database stays fast."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from simsearch.models.spec import ModelSpec

if TYPE_CHECKING:
    from simsearch.models.boxes import Detector
    from simsearch.models.extract import Extractor

_Model = TypeVar("_Model", "Extractor", "Detector")


class ModelCache:
    """The loaded extractors and detectors of one process, the `size` most recently used of each kind."""

    def __init__(self, size: int = 8) -> None:
        self._size = size
        self._extractors: OrderedDict[ModelSpec, Extractor] = OrderedDict()
        self._detectors: OrderedDict[ModelSpec, Detector] = OrderedDict()
        # torch.fx tracing (create_feature_extractor) is not thread-safe, and two requests may load the same
        # model at once: one loader at a time; a hit costs only the lock.
        self._lock = threading.Lock()

    def extractor(self, spec: ModelSpec) -> Extractor:
        from simsearch.models.extract import load_extractor  # torch: imported on the first load, not with the cache

        return self._get(self._extractors, spec, load_extractor)

    def detector(self, spec: ModelSpec) -> Detector:
        from simsearch.models.detect import load_detector

        return self._get(self._detectors, spec, load_detector)

    def unload(self) -> None:
        """Drop every loaded model (their memory is freed once no call still holds one)."""
        with self._lock:
            self._extractors.clear()
            self._detectors.clear()

    def loaded(self) -> list[ModelSpec]:
        with self._lock:
            return [*self._extractors, *self._detectors]

    def _get(
        self, held: OrderedDict[ModelSpec, _Model], spec: ModelSpec, load: Callable[[ModelSpec], _Model]
    ) -> _Model:
        with self._lock:
            if spec in held:
                held.move_to_end(spec)
                return held[spec]
            model = load(spec)
            held[spec] = model
            if len(held) > self._size:
                held.popitem(last=False)
            return model
