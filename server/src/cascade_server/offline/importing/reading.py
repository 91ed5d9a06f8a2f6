"""Reading a data file: its bytes (gunzipped when compressed), the text they decode to, and
its lines; every failure becomes a problem that names the line where it happened.
"""

from __future__ import annotations

import zlib
from pathlib import Path

from cascade_server.offline.importing.problems import Problems

_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_CHUNK = 1 << 20


def read(path: Path, problems: Problems) -> bytes | None:
    """The file's bytes, gunzipped when compressed; None (and a problem) when unreadable."""
    source = str(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        problems.add(source, None, None, "", f"cannot be read: {error.strerror or error}")
        return None
    if path.suffix.lower() == ".gz" or data[:2] == _GZIP_MAGIC:
        return _gunzip(source, data, problems)
    return data


def _gunzip(source: str, data: bytes, problems: Problems) -> bytes | None:
    """Decompress every gzip member of ``data``; a problem names the line it broke at."""
    out: list[bytes] = []
    pending = data
    while True:
        decompressor = zlib.decompressobj(wbits=31)
        position = 0
        try:
            while position < len(pending) and not decompressor.eof:
                out.append(decompressor.decompress(pending[position : position + _GZIP_CHUNK]))
                position += _GZIP_CHUNK
        except zlib.error as error:
            line = sum(chunk.count(b"\n") for chunk in out) + 1
            problems.add(source, line, None, "", f"is not valid gzip data ({error})")
            return None
        if not decompressor.eof:
            line = sum(chunk.count(b"\n") for chunk in out) + 1
            problems.add(source, line, None, "", "the gzip data ends early (truncated file?)")
            return None
        pending = decompressor.unused_data + pending[position:]
        if not pending.strip(b"\x00"):
            return b"".join(out)


def decode(
    source: str,
    data: bytes,
    encoding: str,
    problems: Problems,
    *,
    separator: bytes | None = None,
    what: str = "",
) -> str | None:
    """``data`` as text; a problem names the line (and field) of the first bad byte."""
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = None
        if separator is not None:
            start = data.rfind(b"\n", 0, error.start) + 1
            column = data.count(separator, start, error.start) + 1
        problems.add(
            source,
            line,
            column,
            "",
            f"byte 0x{data[error.start]:02X} is not valid {encoding}{what}",
        )
        return None
    return text.removeprefix("\ufeff")


def split_lines(text: str) -> list[str]:
    """Lines without their ends (LF or CRLF); a final line end adds no empty line."""
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    if lines and not lines[-1]:
        lines.pop()
    return lines
