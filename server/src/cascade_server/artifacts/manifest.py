"""A release's manifest: what it holds, with checksums, the data it came from, its metrics.

A release is a directory: ``manifest.json`` plus one file or directory per artifact.
Checksums are SHA-256 over a file's bytes, or over a directory's sorted relative
paths and file bytes, so a truncated, altered or missing file is always detected.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cascade_server.errors import CascadeError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_CHUNK = 1 << 20


class CorruptReleaseError(CascadeError):
    """A release directory does not match its manifest (missing, truncated or altered)."""

    status = "FAILED_PRECONDITION"
    reason = "CORRUPT_RELEASE"


@dataclass(frozen=True)
class ArtifactEntry:
    """One artifact of a release: where it is and what its bytes must hash to."""

    kind: str
    path: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class DataSnapshot:
    """The database state a release was trained on."""

    fingerprint: str
    users: int
    items: int
    events: int
    data_as_of: str | None


@dataclass(frozen=True)
class Manifest:
    """Everything a server needs to trust and load a release."""

    release_id: str
    created_at: str
    data: DataSnapshot
    artifacts: Mapping[str, ArtifactEntry]
    metrics: Mapping[str, Any] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        """The manifest as stable, readable JSON."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    def inputs(self, artifacts: Collection[str]) -> str:
        """What a component that reads ``artifacts`` takes from this release: their
        checksums and sizes, the config and the metrics, as one string. Two releases with
        equal inputs load into the same thing."""
        read = {
            name: [entry.sha256, entry.size_bytes]
            for name, entry in self.artifacts.items()
            if name in artifacts
        }
        return json.dumps(
            {"artifacts": read, "config": self.config, "metrics": self.metrics}, sort_keys=True
        )

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse a manifest; CorruptReleaseError when it is not one."""
        try:
            raw = json.loads(text)
            if raw["format_version"] != FORMAT_VERSION:
                raise CorruptReleaseError(
                    f"manifest format {raw['format_version']} is not supported "
                    f"(this Cascade reads {FORMAT_VERSION})"
                )
            return cls(
                release_id=raw["release_id"],
                created_at=raw["created_at"],
                data=DataSnapshot(**raw["data"]),
                artifacts={k: ArtifactEntry(**v) for k, v in raw["artifacts"].items()},
                metrics=raw.get("metrics", {}),
                config=raw.get("config", {}),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise CorruptReleaseError(f"the manifest is malformed: {error!r}") from error


def checksum(path: Path) -> tuple[str, int]:
    """SHA-256 and total size of a file, or of a directory's files and their paths."""
    digest = hashlib.sha256()
    total = 0
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if file is not path:
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                total += len(chunk)
    return digest.hexdigest(), total


def describe(root: Path, kind: str, relative: str) -> ArtifactEntry:
    """The manifest entry for the artifact at ``root / relative``."""
    sha, size = checksum(root / relative)
    return ArtifactEntry(kind=kind, path=relative, sha256=sha, size_bytes=size)


def read_manifest(root: Path) -> Manifest:
    """The manifest of the release at ``root``, without checking the artifacts (for a
    caller that verified them already)."""
    try:
        return Manifest.from_json((root / MANIFEST).read_text())
    except OSError as error:
        raise CorruptReleaseError(f"cannot read {root / MANIFEST}: {error}") from error


def read_verified(
    root: Path, hashed: Collection[str] | None = None, *, threads: int = 2
) -> Manifest:
    """The manifest of the release at ``root``, after checking every artifact against it:
    each must be there with its recorded size, and those named in ``hashed`` (all, when
    None) must match their SHA-256 too.

    A server hashes only what it loads: at a million items a release holds gigabytes,
    most of it another stage's. Files are hashed on ``threads`` threads (hashing releases
    the GIL).
    """
    manifest = read_manifest(root)
    for name, entry in manifest.artifacts.items():
        target = root / entry.path
        if not target.exists():
            raise CorruptReleaseError(f"artifact {name!r} is missing ({target})")
        size = _size(target)
        if size != entry.size_bytes:
            raise CorruptReleaseError(
                f"artifact {name!r} does not match the manifest ({size} bytes; expected "
                f"{entry.size_bytes} bytes)"
            )
    checked = [
        (name, entry)
        for name, entry in manifest.artifacts.items()
        if hashed is None or name in hashed
    ]
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="checksum") as pool:
        sums = pool.map(lambda item: checksum(root / item[1].path)[0], checked)
        for (name, entry), sha in zip(checked, sums, strict=True):
            if sha != entry.sha256:
                raise CorruptReleaseError(
                    f"artifact {name!r} does not match the manifest (sha256 {sha[:12]}…; "
                    f"expected {entry.sha256[:12]}…)"
                )
    return manifest


def _size(path: Path) -> int:
    """The size of a file, or the total of a directory's files."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def fsync_tree(root: Path) -> None:
    """Flush every file and directory under ``root`` (and ``root`` itself) to disk."""
    for path in sorted(root.rglob("*"), reverse=True):
        fsync_path(path)
    fsync_path(root)


def fsync_path(path: Path) -> None:
    """Flush one file or directory entry to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
