"""ANN indexes derived from the store: FAISS/Annoy files, one folder per generation, published to an
artefact store and fetched by every replica."""

from simsearch.index.artefacts import (
    ArtefactError,
    ArtefactStore,
    DirectoryStore,
    Manifest,
    ObjectStore,
    S3Config,
)
from simsearch.index.cache import GenerationState, IndexCache
from simsearch.index.faiss_index import reported_distance
from simsearch.index.generations import (
    LoadedIndex,
    artefact_key,
    build_generation,
    check_settings,
    load_build,
    load_current,
    remove_index_files,
    search_loaded,
    service_index_dir,
)
from simsearch.index.settings import INDEX_KEYS, IndexSettings, index_settings, stored_settings

__all__ = [
    "INDEX_KEYS",
    "ArtefactError",
    "ArtefactStore",
    "DirectoryStore",
    "GenerationState",
    "IndexCache",
    "IndexSettings",
    "LoadedIndex",
    "Manifest",
    "ObjectStore",
    "S3Config",
    "artefact_key",
    "build_generation",
    "check_settings",
    "index_settings",
    "load_build",
    "load_current",
    "remove_index_files",
    "reported_distance",
    "search_loaded",
    "service_index_dir",
    "stored_settings",
]
