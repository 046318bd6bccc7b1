"""A service's index settings (DeepDetect's output parameters), checked when they are given."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from simsearch.errors import BadInput

BACKENDS = ("faiss",)  # annoy arrives with the index engine (issue 5)
# The user-facing keys (DeepDetect's output parameters) that `index_settings` reads.
INDEX_KEYS = (
    "index_backend",
    "index_type",
    "train_samples",
    "nprobe",
    "ef_search",
    "ondisk",
    "index_gpu",
    "index_gpuid",
)


@dataclass(frozen=True, slots=True)
class IndexSettings:
    backend: str = "faiss"
    index_type: str = "Flat"
    train_samples: int | None = None  # vectors drawn at random to train IVF/PQ (None: all of them)
    nprobe: int | None = None  # IVF lists searched (None: lists / 20, at least 1)
    ef_search: int | None = None  # HNSW search depth (None: FAISS's default, 16)
    ondisk: bool = False
    gpu: bool = False
    gpuid: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _positive(values: dict[str, Any], key: str, *, allow_zero: bool = False) -> int | None:
    value = values.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        raise BadInput(key, f"must be a {'non-negative' if allow_zero else 'positive'} integer, got {value!r}")
    return value


def _flag(values: dict[str, Any], key: str) -> bool:
    value = values.get(key, False)
    if not isinstance(value, bool):
        raise BadInput(key, f"must be true or false, got {value!r}")
    return value


def index_settings(values: dict[str, Any], *, base: IndexSettings | None = None) -> IndexSettings:
    """Settings from user keys (`index_backend`, `index_type`, `train_samples`, `nprobe`, `ef_search`,
    `ondisk`, `index_gpu`, `index_gpuid`) over `base`; each bad value is a BadInput naming its key."""
    base = base or IndexSettings()
    backend = values.get("index_backend", base.backend)
    if backend not in BACKENDS:
        raise BadInput(
            "index_backend", f"{backend!r} is not available in this version: use 'faiss' (Annoy support is planned)"
        )
    index_type = values.get("index_type", base.index_type)
    if not isinstance(index_type, str) or not index_type.strip():
        raise BadInput(
            "index_type", f"must be a FAISS index_factory string such as Flat or IVF256,SQ8, got {index_type!r}"
        )
    train = _positive(values, "train_samples")
    nprobe = _positive(values, "nprobe")
    ef_search = _positive(values, "ef_search")
    gpuid = _positive(values, "index_gpuid", allow_zero=True)
    return IndexSettings(
        backend=backend,
        index_type=index_type.strip(),
        train_samples=train if "train_samples" in values else base.train_samples,
        nprobe=nprobe if "nprobe" in values else base.nprobe,
        ef_search=ef_search if "ef_search" in values else base.ef_search,
        ondisk=_flag(values, "ondisk") if "ondisk" in values else base.ondisk,
        gpu=_flag(values, "index_gpu") if "index_gpu" in values else base.gpu,
        gpuid=gpuid if gpuid is not None else base.gpuid,
    )


def stored_settings(values: dict[str, Any]) -> IndexSettings:
    """IndexSettings from a service row's `index_settings` (written by `to_dict`)."""
    known = set(IndexSettings.__dataclass_fields__)
    return IndexSettings(**{k: v for k, v in values.items() if k in known})
