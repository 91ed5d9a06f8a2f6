"""The release registry: release directories under ``HOME/releases`` and their rows in Postgres.

Publishing is atomic twice over. On disk, a release is built in a staging directory,
verified against its manifest, flushed (fsync), then renamed into place — a reader
never sees a half-written release. In Postgres, one transaction records the release
and its artifacts and makes it the active one, retiring the previous. Servers follow
the active row, so a release serves only once both steps succeeded.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from cascade_server.artifacts.manifest import (
    CorruptReleaseError,
    Manifest,
    fsync_path,
    fsync_tree,
    read_verified,
)
from cascade_server.errors import CascadeError, NotFoundError
from cascade_server.storage.tables import Artifact, Release, ReleaseArtifact, ReleaseRejection

ENVIRONMENT = "default"
_STAGING = ".staging"


class ReleaseStateError(CascadeError):
    """The requested release change is not possible in the registry's current state."""

    status = "FAILED_PRECONDITION"
    reason = "RELEASE_STATE"


@dataclass(frozen=True)
class ReleaseRow:
    """A release as the registry lists it."""

    release_id: str
    status: str
    created_at: datetime
    activated_at: datetime | None
    metrics: dict[str, Any]
    path: Path
    rejections: tuple[str, ...] = ()
    """``component: reason`` for each server component that refused to load it."""


class ReleaseRegistry:
    """Publishes, lists, activates and rolls back releases."""

    def __init__(self, engine: sa.Engine, root: Path) -> None:
        self._engine = engine
        self.root = root

    def staging_dir(self) -> Path:
        """A fresh path (not yet created) to assemble a release in, on the releases' disk."""
        parent = self.root / _STAGING
        parent.mkdir(parents=True, exist_ok=True)
        return parent / uuid.uuid4().hex

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh staging path to assemble a release in; removed when the block fails, so
        a failed publish (a full disk, say) leaves nothing behind and changes nothing."""
        path = self.staging_dir()
        try:
            yield path
        except OSError as error:
            shutil.rmtree(path, ignore_errors=True)
            raise ReleaseStateError(
                f"could not write the release under {self.root} ({error.strerror or error}); "
                "nothing was published: free space there and publish again"
            ) from error
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise

    def path_of(self, release_id: str) -> Path:
        """Where a published release lives."""
        return self.root / release_id

    def publish(
        self, staging: Path, *, activate: bool = True, hashed: Collection[str] | None = None
    ) -> Manifest:
        """Verify, flush and move ``staging`` into place, record it, and (by default) activate it.

        A release that does not match its manifest is rejected and nothing changes.
        ``hashed``: the artifacts whose checksums are checked (all when None; every
        artifact's size is checked whatever it says).
        """
        manifest = read_verified(staging, hashed)
        target = self.path_of(manifest.release_id)
        if target.exists():
            raise ReleaseStateError(f"release {manifest.release_id} already exists at {target}")
        fsync_tree(staging)
        os.rename(staging, target)
        fsync_path(self.root)
        with self._engine.begin() as connection:
            release_pk = connection.execute(
                insert(Release)
                .values(
                    release_id=manifest.release_id,
                    environment=ENVIRONMENT,
                    status="staged",
                    manifest=_manifest_json(manifest),
                )
                .returning(Release.id)
            ).scalar_one()
            for name, entry in manifest.artifacts.items():
                artifact_pk = connection.execute(
                    insert(Artifact)
                    .values(
                        kind=entry.kind,
                        version=f"{manifest.release_id}/{name}",
                        uri=str(target / entry.path),
                        checksum=entry.sha256,
                        metrics=dict(manifest.metrics.get(name, {})),
                    )
                    .returning(Artifact.id)
                ).scalar_one()
                connection.execute(
                    insert(ReleaseArtifact).values(release_id=release_pk, artifact_id=artifact_pk)
                )
            if activate:
                _activate(connection, manifest.release_id)
        return manifest

    def activate(self, release_id: str) -> Manifest:
        """Make a published release the active one, after verifying its files."""
        manifest = self._verified(release_id)
        with self._engine.begin() as connection:
            _activate(connection, release_id)
        return manifest

    def rollback(self) -> Manifest:
        """Re-activate the release that was active before the current one."""
        with self._engine.connect() as connection:
            previous = connection.execute(
                sa.select(Release.release_id)
                .where(Release.environment == ENVIRONMENT, Release.status == "retired")
                .order_by(Release.activated_at.desc().nulls_last(), Release.id.desc())
                .limit(1)
            ).scalar_one_or_none()
        if previous is None:
            raise ReleaseStateError("there is no earlier release to roll back to")
        return self.activate(previous)

    def active(self) -> str | None:
        """The id of the active release, or None before the first publish."""
        with self._engine.connect() as connection:
            return connection.execute(
                sa.select(Release.release_id).where(
                    Release.environment == ENVIRONMENT, Release.status == "active"
                )
            ).scalar_one_or_none()

    def record_rejection(self, release_id: str, component: str, reason: str) -> None:
        """Remember that ``component`` refused to load ``release_id`` (once per reason)."""
        with self._engine.begin() as connection:
            seen = connection.execute(
                sa.select(ReleaseRejection.id).where(
                    ReleaseRejection.release_id == release_id,
                    ReleaseRejection.component == component,
                    ReleaseRejection.reason == reason,
                )
            ).first()
            if seen is None:
                connection.execute(
                    insert(ReleaseRejection).values(
                        release_id=release_id, component=component, reason=reason[:4000]
                    )
                )

    def list(self) -> list[ReleaseRow]:
        """Every release, newest first, with the rejections servers recorded."""
        with self._engine.connect() as connection:
            rejected: dict[str, list[str]] = {}
            for rejection in connection.execute(
                sa.select(
                    ReleaseRejection.release_id, ReleaseRejection.component, ReleaseRejection.reason
                ).order_by(ReleaseRejection.id)
            ):
                rejected.setdefault(rejection.release_id, []).append(
                    f"{rejection.component}: {rejection.reason}"
                )
            rows = connection.execute(
                sa.select(
                    Release.release_id,
                    Release.status,
                    Release.created_at,
                    Release.activated_at,
                    Release.manifest,
                )
                .where(Release.environment == ENVIRONMENT)
                .order_by(Release.id.desc())
            ).all()
        return [
            ReleaseRow(
                release_id=row.release_id,
                status=row.status,
                created_at=row.created_at,
                activated_at=row.activated_at,
                metrics=dict(row.manifest.get("metrics", {})),
                path=self.path_of(row.release_id),
                rejections=tuple(rejected.get(row.release_id, ())),
            )
            for row in rows
        ]

    def _verified(self, release_id: str) -> Manifest:
        with self._engine.connect() as connection:
            known = connection.execute(
                sa.select(Release.id).where(Release.release_id == release_id)
            ).scalar_one_or_none()
        if known is None:
            raise NotFoundError("release", release_id)
        # One thread: an operator's command, on a machine whose servers are serving.
        manifest = read_verified(self.path_of(release_id), threads=1)
        if manifest.release_id != release_id:
            raise CorruptReleaseError(
                f"{self.path_of(release_id)} holds release {manifest.release_id}, not {release_id}"
            )
        return manifest


def _activate(connection: sa.Connection, release_id: str) -> None:
    connection.execute(
        sa.update(Release)
        .where(Release.environment == ENVIRONMENT, Release.status == "active")
        .values(status="retired")
    )
    connection.execute(
        sa.update(Release)
        .where(Release.release_id == release_id)
        .values(status="active", activated_at=sa.func.now())
    )


def _manifest_json(manifest: Manifest) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(manifest.to_json())
    return parsed
