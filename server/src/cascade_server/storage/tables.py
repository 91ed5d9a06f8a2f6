"""The ORM tables. The schema changes only through Alembic revisions in ``migrations/``.

Rows carry an internal ``id`` (bigint) and, for items and users, the caller's
external id (``external_id``, unique). Events reference items and users by internal
id. Constraint names follow one naming convention so migrations can name them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    MetaData,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ITEM_STATUSES = ("active", "hidden", "deleted")
EVENT_KINDS = ("impression", "click", "save", "like", "share", "hide", "rate")
RELEASE_STATUSES = ("staged", "active", "retired", "rejected")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    """Declarative base whose metadata carries the naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Item(Base):
    """A recommendable item."""

    __tablename__ = "items"
    __table_args__ = (
        CheckConstraint(_one_of("status", ITEM_STATUSES), name="status"),
        Index("ix_items_status_id", "status", "id"),
        # Servers poll for status changes since a time, and the newest change.
        Index("ix_items_updated_at", "updated_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    external_id: Mapped[str] = mapped_column(String(128, collation="C"), unique=True)
    creator_id: Mapped[str] = mapped_column(String(128), server_default="")
    categories: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    title: Mapped[str] = mapped_column(Text, server_default="")
    status: Mapped[str] = mapped_column(String(16), server_default="active")
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class User(Base):
    """A user recommendations are made for."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    external_id: Mapped[str] = mapped_column(String(128, collation="C"), unique=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Event(Base):
    """One engagement of a user with an item. Append-only; ``event_id`` makes writes idempotent."""

    __tablename__ = "events"
    __table_args__ = (
        CheckConstraint(_one_of("kind", EVENT_KINDS), name="kind"),
        Index("ix_events_user_id_occurred_at", "user_id", "occurred_at"),
        Index("ix_events_item_id", "item_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(128), unique=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"))
    item_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("items.id"))
    kind: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    surface: Mapped[str] = mapped_column(String(32), server_default="")
    request_id: Mapped[str] = mapped_column(String(64), server_default="")
    value: Mapped[float] = mapped_column(Double, server_default="0")
    experiments: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class Artifact(Base):
    """A built file or directory (model, index, id map) with its checksum and metrics."""

    __tablename__ = "artifacts"
    __table_args__ = (Index("uq_artifacts_kind_version", "kind", "version", unique=True),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(128))
    uri: Mapped[str] = mapped_column(Text)
    checksum: Mapped[str] = mapped_column(String(128))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Release(Base):
    """A set of artifacts published together. At most one is active per environment."""

    __tablename__ = "releases"
    __table_args__ = (
        CheckConstraint(_one_of("status", RELEASE_STATUSES), name="status"),
        Index(
            "uq_releases_environment_active",
            "environment",
            unique=True,
            postgresql_where=text("status = 'active'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    release_id: Mapped[str] = mapped_column(String(128), unique=True)
    environment: Mapped[str] = mapped_column(String(64), server_default="default")
    status: Mapped[str] = mapped_column(String(16), server_default="staged")
    manifest: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    activated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ReleaseArtifact(Base):
    """Which artifacts a release holds."""

    __tablename__ = "release_artifacts"

    release_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("releases.id", ondelete="CASCADE"), primary_key=True
    )
    artifact_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("artifacts.id"), primary_key=True
    )


class ReleaseRejection(Base):
    """A server component that refused to load a release, and why."""

    __tablename__ = "release_rejections"
    __table_args__ = (Index("ix_release_rejections_release_id", "release_id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    release_id: Mapped[str] = mapped_column(String(128))
    component: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    rejected_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
