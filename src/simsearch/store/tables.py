"""The tables, as typed SQLAlchemy models. The schema itself is created by Alembic (migrations/)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# advanced-alchemy's naming convention: stable, predictable constraint names (errors map on them).
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSONB}


class Service(Base):
    """A named pipeline: which model makes the vectors, and how they are indexed."""

    __tablename__ = "service"
    __table_args__ = (
        CheckConstraint("kind IN ('extractor', 'detector')", name="kind"),
        CheckConstraint("metric IN ('l2', 'cosine')", name="metric"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    kind: Mapped[str] = mapped_column(Text, server_default="extractor")
    model: Mapped[str] = mapped_column(Text)
    weights: Mapped[str] = mapped_column(Text)  # resolved: "none", a torchvision weights name, or a file
    layer: Mapped[str] = mapped_column(Text)
    input_size: Mapped[int] = mapped_column(Integer)  # the input width (and height when input_height is NULL)
    input_height: Mapped[int | None] = mapped_column(Integer)  # set when it differs from the width
    metric: Mapped[str] = mapped_column(Text)
    dim: Mapped[int] = mapped_column(Integer)
    index_settings: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    description: Mapped[str] = mapped_column(Text, server_default="")
    params: Mapped[dict[str, Any]] = mapped_column(server_default="{}")  # as the user gave them
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # set when removed from the API with DeepDetect's clear=mem: vectors and index files stay, and
    # creating the service again with the same model re-attaches them
    detached_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Image(Base):
    __tablename__ = "image"
    __table_args__ = (
        Index("ix_image_sha256", "sha256"),
        # metadata filters (@>): a filter few rows pass is searched through it (migration 0006)
        Index("ix_image_metadata", "metadata", postgresql_using="gin", postgresql_ops={"metadata": "jsonb_path_ops"}),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    uri: Mapped[str] = mapped_column(Text, unique=True)
    sha256: Mapped[str] = mapped_column(Text)  # hex digest of the encoded bytes
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", server_default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Category(Base):
    __tablename__ = "category"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)


class Roi(Base):
    """A detected object: a box in source-image pixels (ymin is the top edge). The columns carry a bbox_
    prefix because Postgres reserves xmin and xmax."""

    __tablename__ = "roi"
    __table_args__ = (
        Index("ix_roi_image_id", "image_id"),
        Index("ix_roi_service_id_image_id", "service_id", "image_id"),
        Index("ix_roi_category_id", "category_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"))
    service_id: Mapped[int] = mapped_column(ForeignKey("service.id", ondelete="CASCADE"))
    category_id: Mapped[int | None] = mapped_column(ForeignKey("category.id", ondelete="SET NULL"))
    prob: Mapped[float] = mapped_column(Float)
    bbox_xmin: Mapped[float] = mapped_column(Float)
    bbox_ymin: Mapped[float] = mapped_column(Float)
    bbox_xmax: Mapped[float] = mapped_column(Float)
    bbox_ymax: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Embedding(Base):
    """One vector of a service: of a whole image (roi_id null) or of one object."""

    __tablename__ = "embedding"
    __table_args__ = (
        UniqueConstraint("service_id", "image_id", "roi_id", postgresql_nulls_not_distinct=True),
        Index("ix_embedding_service_id_id", "service_id", "id"),
        Index("ix_embedding_image_id", "image_id"),
        Index("ix_embedding_service_id_image_id", "service_id", "image_id"),
        Index("ix_embedding_roi_id", "roi_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("service.id", ondelete="CASCADE"))
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"))
    roi_id: Mapped[int | None] = mapped_column(ForeignKey("roi.id", ondelete="CASCADE"))
    vector: Mapped[Any] = mapped_column(Vector())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class IndexBuild(Base):
    """One generation of a service's ANN index; the newest `ready` one is current."""

    __tablename__ = "index_build"
    __table_args__ = (
        CheckConstraint("status IN ('building', 'ready', 'failed', 'retired')", name="status"),
        Index("ix_index_build_service_id_status", "service_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("service.id", ondelete="CASCADE"))
    backend: Mapped[str] = mapped_column(Text)
    index_type: Mapped[str] = mapped_column(Text)
    params: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    vector_count: Mapped[int] = mapped_column(BigInteger, server_default="0")
    watermark: Mapped[int] = mapped_column(BigInteger, server_default="0")  # highest embedding.id included
    path: Mapped[str | None] = mapped_column(Text)  # the builder's folder (informative; old rows load from it)
    # where the files are in the artefact store (migration 0005): key prefix, bytes, digest, name -> {size, sha256}
    artefact_key: Mapped[str | None] = mapped_column(Text)
    artefact_size: Mapped[int | None] = mapped_column(BigInteger)
    artefact_sha256: Mapped[str | None] = mapped_column(Text)
    artefact_files: Mapped[dict[str, Any] | None] = mapped_column()
    status: Mapped[str] = mapped_column(Text, server_default="building")
    timings: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
