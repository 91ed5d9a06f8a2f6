"""A release build: a directory that the offline steps fill, then publish as one release.

``cascade train retrieval`` starts a build from the data in Postgres (and records the
data's fingerprint in ``build.json``); ``cascade build-index`` and
``cascade train ranker`` add to it, refusing if the data changed in between, so every
artifact of a release comes from the same snapshot; ``cascade release publish``
writes the manifest with checksums and publishes it. ``cascade train all`` runs all
of them in a fresh build.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cascade_server.artifacts.manifest import (
    MANIFEST,
    ArtifactEntry,
    DataSnapshot,
    Manifest,
    describe,
)
from cascade_server.errors import CascadeError

if TYPE_CHECKING:  # only its type: the reader imports numpy, which publishing needs not
    from cascade_server.storage.engagement_reader import EngagementData

BUILD_FILE = "build.json"

ARTIFACT_KINDS = {
    "items.json": "id_map",
    "users.json": "id_map",
    "user_features.npy": "features",
    "item_embeddings.npy": "embeddings",
    "two_tower": "tensorflow_saved_model",
    "items.ann": "annoy_index",
    "items.clusters.npz": "clustered_index",
    "ranking_features": "features",
    "ranking_features.npz": "features",  # releases before the directory form
    "light_ranker.txt": "lightgbm_model",
    "heavy_ranker": "tensorflow_saved_model",
    "policy.yaml": "blending_policy",
}
"""Every file a release may hold, by name, with its kind."""


class BuildError(CascadeError):
    """A build step cannot run; the message says which step to run first."""

    status = "FAILED_PRECONDITION"
    reason = "BUILD_STATE"


@dataclass
class BuildInfo:
    """What ``build.json`` records: the data snapshot, each step's config and metrics."""

    data: DataSnapshot
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


class Build:
    """A build directory and its ``build.json``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def start(cls, path: Path, data: EngagementData) -> Build:
        """A fresh, empty build for ``data`` (an earlier build at ``path`` is replaced)."""
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        build = cls(path)
        build.save(BuildInfo(snapshot_of(data)))
        return build

    def info(self) -> BuildInfo:
        """The build's record; BuildError when there is no build yet."""
        try:
            raw = json.loads((self.path / BUILD_FILE).read_text())
        except FileNotFoundError:
            raise BuildError(
                f"there is no build in {self.path}; run `cascade train retrieval` first"
            ) from None
        return BuildInfo(DataSnapshot(**raw["data"]), raw["config"], raw["metrics"])

    def save(self, info: BuildInfo) -> None:
        """Write ``build.json``."""
        (self.path / BUILD_FILE).write_text(json.dumps(asdict(info), indent=2, sort_keys=True))

    def record(self, step: str, config: Any, metrics: Any) -> None:
        """Remember a step's config and metrics (dataclasses or plain values)."""
        info = self.info()
        info.config[step] = _plain(config)
        info.metrics[step] = _plain(metrics)
        self.save(info)

    def require(self, *names: str, step: str) -> None:
        """BuildError unless the artifacts ``names`` exist; ``step`` says what makes them."""
        missing = [name for name in names if not (self.path / name).exists()]
        if missing:
            raise BuildError(f"the build lacks {', '.join(missing)}; run `{step}` first")

    def require_same_data(self, data: EngagementData) -> None:
        """BuildError when the database changed since the build started."""
        if self.info().data.fingerprint != data.fingerprint:
            raise BuildError(
                "the data changed since this build started; run `cascade train all` "
                "(or start again with `cascade train retrieval`)"
            )

    def manifest(
        self, release_id: str, known: Mapping[str, ArtifactEntry] | None = None
    ) -> Manifest:
        """A manifest over every artifact in the build, with checksums, written to the build.
        ``known``: entries to take as they are, not hashed again (for files linked from a
        release verified a moment ago)."""
        info = self.info()
        known = known or {}
        artifacts = {
            name: known[name]
            if name in known and known[name].kind == kind and known[name].path == name
            else describe(self.path, kind, name)
            for name, kind in ARTIFACT_KINDS.items()
            if (self.path / name).exists()
        }
        manifest = Manifest(
            release_id=release_id,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            data=info.data,
            artifacts=artifacts,
            metrics=info.metrics,
            config=info.config,
        )
        (self.path / MANIFEST).write_text(manifest.to_json())
        return manifest


def new_release_id(now: datetime | None = None) -> str:
    """A sortable, unique release id such as ``r20261125-231502-3f9a``."""
    import secrets

    moment = now or datetime.now(UTC)
    return f"r{moment:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def snapshot_of(data: EngagementData) -> DataSnapshot:
    """The data-snapshot record of ``data``."""
    newest = float(data.timestamps.max()) if len(data.timestamps) else None
    return DataSnapshot(
        fingerprint=data.fingerprint,
        users=len(data.user_ids),
        items=len(data.item_ids),
        events=len(data.kinds),
        data_as_of=datetime.fromtimestamp(newest, UTC).isoformat() if newest else None,
    )


def _plain(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return {k: _plain(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
