"""Intake: what a call may read (the data roots, URLs) and how much (pixels, items), held once per process
instead of travelling as keywords into every core call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from simsearch.errors import BadInput
from simsearch.input.fetch import UrlPolicy


@dataclass(frozen=True, slots=True)
class Intake:
    """The input limits and roots of one process (the app's or a CLI command's)."""

    roots: tuple[Path, ...]
    max_pixels: int
    batch_size: int = 32
    max_items: int | None = None  # per call; None: unbounded (the CLI streams and commits per batch)
    urls: UrlPolicy | None = None  # None: URLs are refused

    def check_count(self, data: Sequence[object], field: str = "data") -> None:
        """A call's item count within the limit (an API request's transaction and memory stay bounded)."""
        if self.max_items is not None and len(data) > self.max_items:
            raise BadInput(field, f"{len(data)} items; at most {self.max_items} per call (SIMSEARCH_MAX_ITEMS)")
