"""Locate the hand-written SQL (sql/) and the Alembic scripts (migrations/), installed or in a checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]


def _find(installed: str, checkout: str) -> Path:
    inside = _PACKAGE / installed  # a wheel carries them inside the package (pyproject force-include)
    return inside if inside.is_dir() else _PACKAGE.parents[1] / checkout


def sql_dir() -> Path:
    return _find("_sql", "sql")


def migrations_dir() -> Path:
    return _find("_migrations", "migrations")


def read_sql(name: str) -> str:
    """The text of sql/<name>, e.g. read_sql("views/image_objects.sql")."""
    return (sql_dir() / name).read_text(encoding="utf-8")
