"""Candidates held in columns, the way the stages exchange them.

Building a ``Candidate`` and its ``SourceHit``s for each of 500 items costs about as
much as a candidate source's whole search, and most of them are only converted again
(to wire columns, to item ids). A ``CandidateTable`` keeps the arrays and builds a
``Candidate`` only when one is read; a ``ScoredTable`` does the same for ranking's
answer, so blending reads ids, scores and source ranks as arrays and builds objects
only for the page it returns.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar, overload

import numpy as np
import numpy.typing as npt

from cascade_server.features.engagement import Csr, FloatArray, IntArray
from cascade_server.features.id_positions import id_positions
from cascade_server.pipeline.types import Candidate, ScoredCandidate, SourceHit, SourceKind

T = TypeVar("T")

CodeArray = npt.NDArray[np.int8]
SOURCE_KINDS: tuple[SourceKind, ...] = tuple(SourceKind)
"""The sources by code: a table holds each hit's source as its position here."""
SOURCE_CODES: Mapping[SourceKind, int] = {kind: code for code, kind in enumerate(SOURCE_KINDS)}


def source_codes(kinds: Iterable[SourceKind]) -> CodeArray:
    """The codes of ``kinds`` (see ``SOURCE_KINDS``)."""
    return np.array([SOURCE_CODES[kind] for kind in kinds], dtype=np.int8)


class _Rows(Sequence[T]):
    """A read-only sequence whose elements are built from columns when read: subclasses
    give ``__len__``, ``__iter__`` (all rows at once) and ``_row`` (one row)."""

    __slots__ = ()

    def _row(self, index: int) -> T:
        raise NotImplementedError

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> list[T]: ...

    def __getitem__(self, index: int | slice) -> T | list[T]:
        if isinstance(index, slice):
            return list(self)[index]
        return self._row(range(len(self))[index])  # negative indices; IndexError past the end

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self)!r})"


class CandidateTable(_Rows[Candidate]):
    """Candidates as columns: ``item_ids``, and every candidate's source hits one
    candidate after another (``hit_counts[i]`` of them for candidate ``i``). A hit's
    source is held as its code (``SOURCE_KINDS``), so that hits are gathered, compared
    and sent as arrays.

    ``item_rows``, when known, holds each item's row in the catalog snapshot of the
    stage that found it: a hint that spares the next stage looking the ids up
    (``EngagementSnapshot.lookup_items`` checks it; -1 where unknown).

    A read-only sequence of ``Candidate``: indexing or iterating builds the objects.
    """

    __slots__ = ("hit_counts", "hit_ranks", "hit_scores", "hit_sources", "item_ids", "item_rows")

    def __init__(
        self,
        item_ids: Sequence[str],
        hit_counts: IntArray,
        hit_sources: CodeArray,
        hit_ranks: IntArray,
        hit_scores: FloatArray,
        item_rows: IntArray | None = None,
    ) -> None:
        if len(hit_counts) != len(item_ids) or not (
            int(hit_counts.sum()) == len(hit_sources) == len(hit_ranks) == len(hit_scores)
        ):
            raise ValueError("candidate columns of different lengths")
        if item_rows is not None and len(item_rows) != len(item_ids):
            raise ValueError("candidate ids and rows of different lengths")
        self.item_ids = item_ids
        self.hit_counts = hit_counts
        self.hit_sources = hit_sources
        self.hit_ranks = hit_ranks
        self.hit_scores = hit_scores
        self.item_rows = item_rows

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
            source_codes(h.source for h in hits),
            np.array([h.rank for h in hits], dtype=np.int64),
            np.array([h.score for h in hits], dtype=np.float64),
        )

    @classmethod
    def bare(cls, item_ids: Sequence[str]) -> CandidateTable:
        """``item_ids`` with no source hits."""
        counts = np.zeros(len(item_ids), dtype=np.int64)
        return cls(item_ids, counts, np.zeros(0, np.int8), np.zeros(0, dtype=np.int64), np.zeros(0))

    def sources(self) -> list[tuple[SourceHit, ...]]:
        """Each candidate's source hits."""
        # tuple.__new__ makes the named tuples without their Python-level __new__: half
        # the cost, for hundreds of hits per request.
        kinds = map(SOURCE_KINDS.__getitem__, self.hit_sources.tolist())
        ranks, scores = self.hit_ranks.tolist(), self.hit_scores.tolist()
        fields = zip(kinds, ranks, scores, strict=True)
        hits = list(map(tuple.__new__, itertools.repeat(SourceHit), fields))
        ends = np.cumsum(self.hit_counts).tolist()
        return [tuple(hits[start:end]) for start, end in zip([0, *ends][:-1], ends, strict=True)]

    def take(self, positions: IntArray, item_ids: Sequence[str] | None = None) -> CandidateTable:
        """The candidates at ``positions``, in their order. With ``item_ids`` (one per
        position) the rows get those ids, and a position of -1 a row with no hits (and
        row -1)."""
        if item_ids is None:
            item_ids = [self.item_ids[p] for p in positions.tolist()]
        taken = self._hits().take(positions)
        hits = taken.indices
        rows = None
        if self.item_rows is not None:
            rows = np.full(len(positions), -1, dtype=np.int64)
            known = positions >= 0
            rows[known] = self.item_rows[positions[known]]
        return CandidateTable(
            item_ids,
            np.diff(taken.indptr),
            self.hit_sources[hits],
            self.hit_ranks[hits],
            self.hit_scores[hits],
            rows,
        )

    def best_rank(self, kind: SourceKind) -> FloatArray:
        """Each candidate's best (lowest) rank from source ``kind``; inf where it has none."""
        best = np.full(len(self), np.inf)
        mine = self.hit_sources == SOURCE_CODES[kind]
        if mine.any():
            owner = self._hits().entry_rows()
            np.minimum.at(best, owner[mine], self.hit_ranks[mine].astype(np.float64))
        return best

    def _hits(self) -> Csr:
        """Row ``i``: the positions of candidate ``i``'s hits in the hit columns."""
        indptr = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(self.hit_counts, out=indptr[1:])
        return Csr(indptr, np.arange(indptr[-1]), self.hit_scores)

    def __len__(self) -> int:
        return len(self.item_ids)

    def __iter__(self) -> Iterator[Candidate]:
        for item_id, hits in zip(self.item_ids, self.sources(), strict=True):
            yield Candidate(item_id, list(hits))

    def _row(self, index: int) -> Candidate:
        hits = self._hits().row(index)[0].tolist()
        return Candidate(
            self.item_ids[index],
            [
                SourceHit(
                    SOURCE_KINDS[self.hit_sources[h]],
                    int(self.hit_ranks[h]),
                    float(self.hit_scores[h]),
                )
                for h in hits
            ],
        )


class ScoredTable(_Rows[ScoredCandidate]):
    """Ranked candidates as columns: ``item_ids``, their ``scores`` and their source hits
    (``hits``, aligned with them). No stage or head scores: the callers that need those
    ask ranking for them and get ``ScoredCandidate``s.

    A read-only sequence of ``ScoredCandidate``: indexing or iterating builds the objects.
    """

    __slots__ = ("hits", "item_ids", "scores")

    def __init__(self, scores: FloatArray, hits: CandidateTable) -> None:
        if len(scores) != len(hits):
            raise ValueError("scored columns of different lengths")
        self.item_ids = hits.item_ids
        self.scores = scores
        self.hits = hits

    @classmethod
    def ranked(
        cls, item_ids: Sequence[str], scores: FloatArray, sources: CandidateTable
    ) -> ScoredTable:
        """Ranking's answer (``item_ids`` with ``scores``) with each item's source hits
        from ``sources`` (none for an item it does not hold)."""
        return cls(scores, sources.take(id_positions(item_ids, sources.item_ids), item_ids))

    def take(self, positions: IntArray) -> ScoredTable:
        """The candidates at ``positions``, in their order."""
        return ScoredTable(self.scores[positions], self.hits.take(positions))

    def __len__(self) -> int:
        return len(self.item_ids)

    def __iter__(self) -> Iterator[ScoredCandidate]:
        scores = self.scores.tolist()
        for item_id, score, hits in zip(self.item_ids, scores, self.hits.sources(), strict=True):
            yield ScoredCandidate(item_id, score, sources=hits)

    def _row(self, index: int) -> ScoredCandidate:
        hits = tuple(self.hits[index].sources)
        return ScoredCandidate(self.item_ids[index], float(self.scores[index]), sources=hits)
