"""ANN indexes derived from the store: FAISS files, one folder per generation."""

from simsearch.index.faiss_index import reported_distance
from simsearch.index.generations import (
    IndexCache,
    LoadedIndex,
    build_generation,
    check_settings,
    load_current,
    remove_index_files,
    search_loaded,
    service_index_dir,
)
from simsearch.index.settings import INDEX_KEYS, IndexSettings, index_settings, stored_settings

__all__ = [
    "INDEX_KEYS",
    "IndexCache",
    "IndexSettings",
    "LoadedIndex",
    "build_generation",
    "check_settings",
    "index_settings",
    "load_current",
    "remove_index_files",
    "reported_distance",
    "search_loaded",
    "service_index_dir",
    "stored_settings",
]
