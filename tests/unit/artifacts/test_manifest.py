import dataclasses

import pytest

from cascade_server.artifacts.manifest import (
    MANIFEST,
    CorruptReleaseError,
    DataSnapshot,
    Manifest,
    checksum,
    describe,
    read_verified,
)


def manifest_for(root):
    (root / "dir").mkdir()
    (root / "dir" / "a.bin").write_bytes(b"a" * 10)
    (root / "file.txt").write_text("hello")
    return Manifest(
        release_id="r1",
        created_at="2026-01-01T00:00:00+00:00",
        data=DataSnapshot("fp", 1, 2, 3, None),
        artifacts={"dir": describe(root, "k", "dir"), "file": describe(root, "k", "file.txt")},
    )


def test_manifest_round_trips_through_json(tmp_path):
    manifest = manifest_for(tmp_path)
    assert Manifest.from_json(manifest.to_json()) == manifest


def test_directory_checksums_cover_names_and_contents(tmp_path):
    manifest_for(tmp_path)
    before = checksum(tmp_path / "dir")
    (tmp_path / "dir" / "a.bin").rename(tmp_path / "dir" / "b.bin")
    assert checksum(tmp_path / "dir") != before
    assert checksum(tmp_path / "dir")[1] == before[1]


def test_read_verified_accepts_an_intact_release(tmp_path):
    (tmp_path / MANIFEST).write_text(manifest_for(tmp_path).to_json())
    assert read_verified(tmp_path).release_id == "r1"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda root: (root / "file.txt").write_text("hellO"), "does not match"),
        (lambda root: (root / "dir" / "a.bin").write_bytes(b"a" * 9), "does not match"),
        (lambda root: (root / "file.txt").unlink(), "missing"),
        (lambda root: (root / "dir" / "extra").write_text("x"), "does not match"),
        (lambda root: (root / MANIFEST).write_text("{not json"), "malformed"),
        (lambda root: (root / MANIFEST).unlink(), "cannot read"),
    ],
)
def test_read_verified_rejects_damaged_releases(tmp_path, damage, message):
    (tmp_path / MANIFEST).write_text(manifest_for(tmp_path).to_json())
    damage(tmp_path)
    with pytest.raises(CorruptReleaseError, match=message):
        read_verified(tmp_path)


def test_unknown_manifest_versions_are_rejected(tmp_path):
    text = manifest_for(tmp_path).to_json().replace('"format_version": 1', '"format_version": 9')
    with pytest.raises(CorruptReleaseError, match="format 9"):
        Manifest.from_json(text)


def test_a_server_hashes_what_it_reads_and_checks_the_size_of_the_rest(tmp_path):
    (tmp_path / MANIFEST).write_text(manifest_for(tmp_path).to_json())
    (tmp_path / "file.txt").write_text("hellO")  # same size, other bytes
    assert read_verified(tmp_path, hashed={"dir"}).release_id == "r1"
    with pytest.raises(CorruptReleaseError, match="'file' does not match"):
        read_verified(tmp_path, hashed={"file"})
    (tmp_path / "file.txt").write_text("hello!")  # another size: every reader refuses
    with pytest.raises(CorruptReleaseError, match="'file' does not match"):
        read_verified(tmp_path, hashed={"dir"})
    (tmp_path / "file.txt").unlink()
    with pytest.raises(CorruptReleaseError, match="'file' is missing"):
        read_verified(tmp_path, hashed=set())


def test_inputs_cover_the_read_artifacts_config_and_metrics_only(tmp_path):
    manifest = manifest_for(tmp_path)
    reads_dir = manifest.inputs(["dir"])
    other_file = dataclasses.replace(
        manifest,
        release_id="r2",
        artifacts={**manifest.artifacts, "file": describe(tmp_path, "k", "dir")},
    )
    assert other_file.inputs(["dir"]) == reads_dir
    assert other_file.inputs(["dir", "file"]) != manifest.inputs(["dir", "file"])
    assert dataclasses.replace(manifest, config={"index": {"search_k": 9}}).inputs(["dir"]) != (
        reads_dir
    )
    assert dataclasses.replace(manifest, metrics={"ranker": {}}).inputs(["dir"]) != reads_dir
