"""A service's index settings (DeepDetect's output parameters), checked when they are given."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from simsearch.errors import BadInput

BACKENDS = ("faiss", "annoy")
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
    "n_trees",
    "search_k",
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
    n_trees: int | None = None  # Annoy: trees in the forest (None: 50)
    search_k: int | None = None  # Annoy: nodes inspected per search (None: n_trees x k)

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
    """Settings from the user's keys (INDEX_KEYS) over `base`; each bad value is a BadInput naming its key."""
    base = base or IndexSettings()
    backend = values.get("index_backend", base.backend)
    if backend not in BACKENDS:
        raise BadInput(
            "index_backend", f"{backend!r}: use 'faiss' (any index_factory string) or 'annoy' (n_trees, search_k)"
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
    n_trees = _positive(values, "n_trees")
    search_k = _positive(values, "search_k")
    if n_trees is not None and n_trees > 10_000:
        raise BadInput("n_trees", f"{n_trees}: at most 10000 trees")
    return IndexSettings(
        backend=backend,
        index_type=index_type.strip(),
        train_samples=train if "train_samples" in values else base.train_samples,
        nprobe=nprobe if "nprobe" in values else base.nprobe,
        ef_search=ef_search if "ef_search" in values else base.ef_search,
        ondisk=_flag(values, "ondisk") if "ondisk" in values else base.ondisk,
        gpu=_flag(values, "index_gpu") if "index_gpu" in values else base.gpu,
        gpuid=gpuid if gpuid is not None else base.gpuid,
        n_trees=n_trees if "n_trees" in values else base.n_trees,
        search_k=search_k if "search_k" in values else base.search_k,
    )


def stored_settings(values: dict[str, Any]) -> IndexSettings:
    """IndexSettings from a service row's `index_settings` (written by `to_dict`)."""
    known = set(IndexSettings.__dataclass_fields__)
    return IndexSettings(**{k: v for k, v in values.items() if k in known})
