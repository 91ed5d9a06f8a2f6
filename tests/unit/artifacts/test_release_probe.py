"""The child-process check of a release: checksums of what a server reads, then the
native loads (none for blending)."""

import pytest

from cascade_server.artifacts.manifest import (
    MANIFEST,
    CorruptReleaseError,
    DataSnapshot,
    Manifest,
    describe,
)
from cascade_server.release_probe import probe


@pytest.fixture
def release(tmp_path):
    (tmp_path / "read.txt").write_text("what the server reads")
    (tmp_path / "other.txt").write_text("another server's file")
    manifest = Manifest(
        release_id="r1",
        created_at="2026-01-01T00:00:00+00:00",
        data=DataSnapshot("fp", 1, 2, 3, None),
        artifacts={
            "read": describe(tmp_path, "k", "read.txt"),
            "other": describe(tmp_path, "k", "other.txt"),
        },
    )
    (tmp_path / MANIFEST).write_text(manifest.to_json())
    return tmp_path


def test_an_intact_release_passes(release):
    probe(release, "blending", ["read", "other"])


def test_the_child_checks_the_named_artifacts_checksums(release):
    (release / "other.txt").write_text("another server's filE")  # same size, other bytes
    probe(release, "blending", ["read"])  # not named: not hashed
    with pytest.raises(CorruptReleaseError, match=r"child process.*'other' does not match"):
        probe(release, "blending", ["read", "other"])
