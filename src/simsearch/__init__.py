"""simsearch: image and object similarity search with Postgres as the system of record."""

__version__ = "0.1.0"
