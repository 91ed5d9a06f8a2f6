"""Publishing, listing, activating and rolling back releases, with real files and Postgres."""

import json

import pytest

from cascade_server.artifacts.manifest import (
    MANIFEST,
    CorruptReleaseError,
    DataSnapshot,
    Manifest,
    describe,
)
from cascade_server.artifacts.registry import ReleaseRegistry, ReleaseStateError
from cascade_server.errors import NotFoundError

pytestmark = pytest.mark.db


def stage_release(registry, release_id, payload=b"weights"):
    """A small release in a staging directory: one file and one directory artifact."""
    path = registry.staging_dir()
    (path / "model").mkdir(parents=True)
    (path / "model" / "weights.bin").write_bytes(payload)
    (path / "items.json").write_text(json.dumps(["a", "b"]))
    manifest = Manifest(
        release_id=release_id,
        created_at="2026-11-25T00:00:00+00:00",
        data=DataSnapshot("fp", users=1, items=2, events=3, data_as_of=None),
        artifacts={
            "model": describe(path, "tensorflow_saved_model", "model"),
            "items.json": describe(path, "id_map", "items.json"),
        },
        metrics={"offline": {"hr@10": 0.5}},
    )
    (path / MANIFEST).write_text(manifest.to_json())
    return path


@pytest.fixture
def registry(engine, tmp_path):
    return ReleaseRegistry(engine, tmp_path / "releases")


def test_publish_moves_the_release_into_place_and_activates_it(registry):
    assert registry.active() is None
    staging = stage_release(registry, "r1")
    manifest = registry.publish(staging)
    assert manifest.release_id == "r1"
    assert not staging.exists()
    assert (registry.path_of("r1") / "model" / "weights.bin").read_bytes() == b"weights"
    assert registry.active() == "r1"
    [row] = registry.list()
    assert (row.release_id, row.status) == ("r1", "active")
    assert row.metrics == {"offline": {"hr@10": 0.5}}


def test_a_new_release_retires_the_previous_and_rollback_restores_it(registry):
    registry.publish(stage_release(registry, "r1"))
    registry.publish(stage_release(registry, "r2", b"better"))
    assert registry.active() == "r2"
    assert {r.release_id: r.status for r in registry.list()} == {"r1": "retired", "r2": "active"}
    registry.rollback()
    assert registry.active() == "r1"
    registry.activate("r2")
    assert registry.active() == "r2"


def test_rollback_without_an_earlier_release_is_refused(registry):
    registry.publish(stage_release(registry, "r1"))
    with pytest.raises(ReleaseStateError):
        registry.rollback()


def test_a_corrupt_release_is_rejected_and_changes_nothing(registry):
    registry.publish(stage_release(registry, "r1"))
    staging = stage_release(registry, "r2")
    (staging / "model" / "weights.bin").write_bytes(b"tampered")
    with pytest.raises(CorruptReleaseError, match="model"):
        registry.publish(staging)
    assert registry.active() == "r1"
    assert [r.release_id for r in registry.list()] == ["r1"]
    assert not registry.path_of("r2").exists()


def test_a_publish_hashing_only_some_artifacts_still_checks_those_and_every_size(registry):
    staging = stage_release(registry, "r1")
    (staging / "items.json").write_text(json.dumps(["a", "c"]))  # same size, other bytes
    with pytest.raises(CorruptReleaseError, match=r"items\.json"):
        registry.publish(staging, hashed={"items.json"})
    staging = stage_release(registry, "r2")
    (staging / "model" / "weights.bin").write_bytes(b"longer weights")
    with pytest.raises(CorruptReleaseError, match="bytes"):
        registry.publish(staging, hashed={"items.json"})
    assert registry.active() is None
    assert registry.publish(stage_release(registry, "r3"), hashed={"items.json"})
    assert registry.active() == "r3"


def test_a_missing_artifact_is_rejected(registry):
    staging = stage_release(registry, "r1")
    (staging / "items.json").unlink()
    with pytest.raises(CorruptReleaseError, match="missing"):
        registry.publish(staging)
    assert registry.active() is None


def test_activation_verifies_the_files_on_disk(registry):
    registry.publish(stage_release(registry, "r1"))
    registry.publish(stage_release(registry, "r2"))
    (registry.path_of("r1") / "items.json").write_text("[]")
    with pytest.raises(CorruptReleaseError):
        registry.activate("r1")
    assert registry.active() == "r2"
    with pytest.raises(NotFoundError):
        registry.activate("nope")


def test_the_same_release_cannot_be_published_twice(registry):
    registry.publish(stage_release(registry, "r1"))
    with pytest.raises(ReleaseStateError):
        registry.publish(stage_release(registry, "r1"))
