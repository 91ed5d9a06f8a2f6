"""What is wrong in data files: one ``FileProblem``, the ``DataFileError`` that lists them,
and the collector every reader reports to (it lists the first ``MAX_LISTED_PROBLEMS``
and counts them all).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cascade_server.errors import CascadeError

MAX_LISTED_PROBLEMS = 20
"""Most problems a ``DataFileError`` lists; it counts them all."""


@dataclass(frozen=True)
class FileProblem:
    """One thing wrong in a data file; ``line`` and ``column`` are 1-based, None if unknown."""

    path: str
    line: int | None
    column: int | None
    field: str
    description: str

    def __str__(self) -> str:
        """``path:line:column: field: description``, leaving out what is unknown."""
        where = self.path
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        what = f"{self.field}: {self.description}" if self.field else self.description
        return f"{where}: {what}"


class DataFileError(CascadeError):
    """A data file is unreadable or has bad rows; nothing was imported.

    ``problems`` holds the first ``MAX_LISTED_PROBLEMS`` problems in file and line
    order; ``count`` is how many were found in all.
    """

    status = "INVALID_ARGUMENT"
    reason = "BAD_DATA_FILE"

    def __init__(self, problems: Sequence[FileProblem], count: int | None = None) -> None:
        if not problems:
            raise ValueError("a DataFileError needs at least one problem")
        self.problems = tuple(problems)
        self.count = max(count or 0, len(self.problems))
        noun = "problem" if self.count == 1 else "problems"
        lines = [f"{self.count} {noun} in the data files; nothing was imported"]
        lines += [f"  {problem}" for problem in self.problems]
        if self.count > len(self.problems):
            lines.append(f"  ... and {self.count - len(self.problems)} more")
        super().__init__(
            "\n".join(lines),
            metadata={"problem": str(self.problems[0]), "problemCount": str(self.count)},
        )


class Problems:
    """Collects problems: lists the first ``MAX_LISTED_PROBLEMS``, counts them all."""

    def __init__(self) -> None:
        self.listed: list[FileProblem] = []
        self.count = 0

    def add(
        self, path: str, line: int | None, column: int | None, name: str, description: str
    ) -> None:
        self.count += 1
        if len(self.listed) < MAX_LISTED_PROBLEMS:
            self.listed.append(FileProblem(path, line, column, name, description))

    def raise_if_any(self, paths: Sequence[str]) -> None:
        if not self.count:
            return
        order = {path: index for index, path in reversed(list(enumerate(paths)))}
        listed = sorted(
            self.listed,
            key=lambda p: (order.get(p.path, -1), p.line or 0, p.column or 0),
        )
        raise DataFileError(listed, self.count)


def shown(value: object, limit: int = 40) -> str:
    """``value``'s repr, cut to ``limit`` characters with ``...``, for a problem's text."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
