"""ANN indexes derived from the store: FAISS files, one folder per generation."""

from simsearch.index.faiss_index import reported_distance
from simsearch.index.generations import LoadedIndex, build_generation, load_current

__all__ = ["LoadedIndex", "build_generation", "load_current", "reported_distance"]
