"""Models: torch and OpenCV only, no database and no HTTP."""

from simsearch.models.extract import Extractor, load_extractor
from simsearch.models.spec import ModelSpec
from simsearch.models.weights import resolve_weights

__all__ = ["Extractor", "ModelSpec", "load_extractor", "resolve_weights"]
