"""Models: torch and OpenCV only, no database and no HTTP.

The torch-backed names load on first use (PEP 562), so `ModelSpec` and the CLI's --help stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from simsearch.models.spec import ModelSpec

if TYPE_CHECKING:
    from simsearch.models.extract import Extractor, load_extractor
    from simsearch.models.weights import resolve_weights

__all__ = ["Extractor", "ModelSpec", "load_extractor", "resolve_weights"]

_LAZY = {"Extractor": "extract", "load_extractor": "extract", "resolve_weights": "weights"}


def __getattr__(name: str) -> Any:  # noqa: ANN401 - whatever the submodule defines
    if name in _LAZY:
        return getattr(importlib.import_module(f"simsearch.models.{_LAZY[name]}"), name)
    raise AttributeError(name)
