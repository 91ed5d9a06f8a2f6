"""Reading a release's large arrays: mapped from their files, checked a slice at a time."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

_MAPPED_MEMBER_BYTES = 1 << 20
"""Members of an ``.npz`` file at least this large are mapped; smaller ones are read."""
_LOCAL_HEADER = struct.Struct("<4s22xHH")
"""A zip member's local header: its signature, then (after 22 bytes) the lengths of the
name and of the extra field that come before the member's data."""


def load_mapped(path: Path) -> npt.NDArray[Any]:
    """The ``.npy`` array at ``path``, mapped read-only (not read): a process holds no
    private copy, processes mapping the same file share the page cache's pages, and
    rows are read when used. A plain array view of the map (indexing a ``memmap``
    costs a Python call more each time)."""
    return np.asarray(np.load(path, mmap_mode="r"))


def all_finite(array: npt.NDArray[Any], rows_per_pass: int = 16_384) -> bool:
    """Whether every value is finite, checked a few megabytes at a time: no temporary the
    size of the array, and one pass over a mapped file brings its pages in before
    requests need them."""
    return all(
        bool(np.isfinite(array[start : start + rows_per_pass]).all())
        for start in range(0, len(array), rows_per_pass)
    )


def load_npz_mapped(path: Path) -> dict[str, npt.NDArray[Any]]:
    """The arrays of the ``.npz`` file at ``path`` (as ``np.savez`` writes it, members
    stored uncompressed): each large member mapped read-only where it lies in the file,
    like ``load_mapped``, so a process does not copy hundreds of megabytes into its own
    memory; small and compressed members are read. Nothing here checks the members'
    CRCs: a release's checksums cover its files."""
    arrays: dict[str, npt.NDArray[Any]] = {}
    with zipfile.ZipFile(path) as archive, path.open("rb") as raw:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            mapped = None
            if info.compress_type == zipfile.ZIP_STORED and info.file_size >= _MAPPED_MEMBER_BYTES:
                mapped = _mapped_member(path, raw, info)
            if mapped is None:
                with archive.open(info) as member:
                    mapped = np.lib.format.read_array(member, allow_pickle=False)
            arrays[name] = mapped
    return arrays


def _mapped_member(path: Path, raw: BinaryIO, info: zipfile.ZipInfo) -> npt.NDArray[Any] | None:
    """The stored member ``info``'s array mapped in place, or None when its header is of a
    kind read only by reading the member (a ``.npy`` format version numpy keeps private,
    or objects)."""
    raw.seek(info.header_offset)
    signature, name_length, extra_length = _LOCAL_HEADER.unpack(raw.read(_LOCAL_HEADER.size))
    if signature != b"PK\x03\x04":
        raise ValueError(f"{path}: {info.filename} has no local header where the index says")
    raw.seek(info.header_offset + _LOCAL_HEADER.size + name_length + extra_length)
    version = np.lib.format.read_magic(raw)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(raw)
    elif version == (2, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(raw)
    else:
        return None
    if dtype.hasobject or 0 in shape:
        return None
    return np.asarray(
        np.memmap(
            path,
            dtype=dtype,
            mode="r",
            offset=raw.tell(),
            shape=shape,
            order="F" if fortran_order else "C",
        )
    )
