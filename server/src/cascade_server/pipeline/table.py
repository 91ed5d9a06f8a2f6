"""Candidates held in columns, the way the stages exchange them.

Building a ``Candidate`` and its ``SourceHit``s for each of 500 items costs about as
much as a candidate source's whole search, and most of them are only converted again
(to wire columns, to item ids). A ``CandidateTable`` keeps the arrays and builds a
``Candidate`` only when one is read.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from cascade_server.pipeline.types import Candidate, SourceHit, SourceKind

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


class CandidateTable(Sequence[Candidate]):
    """Candidates as columns: ``item_ids``, and every candidate's source hits one
    candidate after another (``hit_counts[i]`` of them for candidate ``i``).

    A read-only sequence of ``Candidate``: indexing or iterating builds the objects.
    """

    __slots__ = ("hit_counts", "hit_ranks", "hit_scores", "hit_sources", "item_ids")

    def __init__(
        self,
        item_ids: Sequence[str],
        hit_counts: IntArray,
        hit_sources: Sequence[SourceKind],
        hit_ranks: IntArray,
        hit_scores: FloatArray,
    ) -> None:
        if len(hit_counts) != len(item_ids) or not (
            int(hit_counts.sum()) == len(hit_sources) == len(hit_ranks) == len(hit_scores)
        ):
            raise ValueError("candidate columns of different lengths")
        self.item_ids = item_ids
        self.hit_counts = hit_counts
        self.hit_sources = hit_sources
        self.hit_ranks = hit_ranks
        self.hit_scores = hit_scores

    @classmethod
    def of(cls, candidates: Iterable[Candidate]) -> CandidateTable:
        """The table of ``candidates`` (``candidates`` itself when it is a table)."""
        if isinstance(candidates, CandidateTable):
            return candidates
        candidates = list(candidates)
        hits = [hit for c in candidates for hit in c.sources]
        return cls(
            [c.item_id for c in candidates],
            np.array([len(c.sources) for c in candidates], dtype=np.int64),
            [h.source for h in hits],
            np.array([h.rank for h in hits], dtype=np.int64),
            np.array([h.score for h in hits], dtype=np.float64),
        )

    def sources(self) -> list[tuple[SourceHit, ...]]:
        """Each candidate's source hits."""
        # tuple.__new__ makes the named tuples without their Python-level __new__: half
        # the cost, for hundreds of hits per request.
        ranks, scores = self.hit_ranks.tolist(), self.hit_scores.tolist()
        fields = zip(self.hit_sources, ranks, scores, strict=True)
        hits = list(map(tuple.__new__, itertools.repeat(SourceHit), fields))
        ends = np.cumsum(self.hit_counts).tolist()
        return [tuple(hits[start:end]) for start, end in zip([0, *ends][:-1], ends, strict=True)]

    def __len__(self) -> int:
        return len(self.item_ids)

    def __iter__(self) -> Iterator[Candidate]:
        for item_id, hits in zip(self.item_ids, self.sources(), strict=True):
            yield Candidate(item_id, list(hits))

    @overload
    def __getitem__(self, index: int) -> Candidate: ...

    @overload
    def __getitem__(self, index: slice) -> list[Candidate]: ...

    def __getitem__(self, index: int | slice) -> Candidate | list[Candidate]:
        if isinstance(index, slice):
            return list(self)[index]
        index = range(len(self))[index]  # negative indices; IndexError past the end
        start = int(self.hit_counts[:index].sum())
        end = start + int(self.hit_counts[index])
        return Candidate(
            self.item_ids[index],
            [
                SourceHit(self.hit_sources[h], int(self.hit_ranks[h]), float(self.hit_scores[h]))
                for h in range(start, end)
            ],
        )

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"CandidateTable({list(self)!r})"
