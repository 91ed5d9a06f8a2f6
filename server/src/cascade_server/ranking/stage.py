"""The ranking stage: resolve ids, score in one batch, sort best first."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from cascade_server.artifacts.watcher import ReleaseWatcher
from cascade_server.features.engagement import EngagementSnapshot, FloatArray, IntArray
from cascade_server.features.refresh import SnapshotSource
from cascade_server.pipeline.deadline import Deadline
from cascade_server.pipeline.table import CandidateTable, ScoredTable
from cascade_server.pipeline.types import (
    Degradation,
    ReleaseInfo,
    RequestContext,
    ScoredCandidate,
)
from cascade_server.ranking.models import LearnedRanker
from cascade_server.ranking.scorers import Scorer


@dataclass(frozen=True)
class RankRequest:
    """A validated ranking request."""

    context: RequestContext
    item_ids: Sequence[str]
    max_results: int = 0
    seed_item_ids: Sequence[str] = ()
    heavy_top_n: int = 0
    """How many light-ranked candidates the heavy ranker re-scores; 0: the server's."""
    details: bool = True
    """Whether candidates carry their stage and head scores (or only the final score)."""
    item_rows: IntArray | None = None
    """A guess at each of ``item_ids``' snapshot rows (see ``lookup_items``), or None."""


@dataclass(frozen=True)
class RankResult:
    """Scored candidates, best first, and the ids that could not be scored."""

    candidates: Sequence[ScoredCandidate]
    unknown_item_ids: list[str]
    release: ReleaseInfo
    degraded: list[Degradation] = field(default_factory=list)
    request_positions: IntArray | None = None
    """Each candidate's position in the request's ``item_ids`` (an id given twice: its
    first), for the column form; None with the candidates as objects."""


class RankingStage:
    """Scores every known candidate with the configured scorer and sorts them.

    Ties are broken by item id so the order is deterministic. Inactive items are
    scored like any other: filtering is blending's job.
    """

    def __init__(
        self,
        holder: SnapshotSource,
        baseline: Scorer,
        models: ReleaseWatcher[LearnedRanker | None] | None = None,
    ) -> None:
        self._holder = holder
        self._baseline = baseline
        self._models = models

    def warm(self) -> None:
        """Fill the ranker's per-snapshot caches (index maps) with one request for a user
        with history over popular items."""
        snapshot = self._holder.current()
        user_id = snapshot.user_with_history()
        items = snapshot.item_ids_of(snapshot.popular_items[:100])
        if items:
            self.rank(RankRequest(RequestContext(user_id=user_id), items), Deadline.after(5.0))

    def rank(self, request: RankRequest, deadline: Deadline) -> RankResult:
        """The scored candidates for ``request``."""
        snapshot = self._holder.current()
        loaded = self._models.current() if self._models else None
        scorer: Scorer = self._baseline
        release_id = snapshot.snapshot_id
        if loaded is not None and loaded.value is not None and loaded.release_id:
            scorer, release_id = loaded.value, loaded.release_id
        item_ids = list(dict.fromkeys(request.item_ids))
        repeated = len(item_ids) != len(request.item_ids)
        hint = None if repeated else request.item_rows
        indices = snapshot.lookup_items(item_ids, hint)
        known = indices >= 0
        flags = known.tolist()
        unknown = [item for item, ok in zip(item_ids, flags, strict=True) if not ok]
        items = indices[known]
        deadline.check("ranking")
        seeds = snapshot.lookup_items(request.seed_item_ids)
        user = snapshot.user_row(request.context.user_id)
        scores = scorer.score(
            snapshot, user, seeds[seeds >= 0], items, heavy_top_n=request.heavy_top_n
        )
        name = scorer.name
        # The known ids are the snapshot's own (looked up or checked): no catalog reads.
        names = [i for i, ok in zip(item_ids, flags, strict=True) if ok] if unknown else item_ids
        order = np.argsort(-scores.final, kind="stable")
        ordered = scores.final[order]
        if np.any(ordered[1:] == ordered[:-1]):  # ties: by id (sorting ids costs more)
            order = np.lexsort((_sortable_ids(snapshot, items, names), -scores.final))
        if request.max_results:
            order = order[: request.max_results]
        ids = [names[position] for position in order.tolist()]
        candidates: Sequence[ScoredCandidate]
        positions = None
        if request.details or request.context.debug:
            finals = scores.final[order].tolist()
            stages = _finite(scores.stages, order)
            heads = _finite(scores.heads, order)
            candidates = [
                ScoredCandidate(item_id, final, stage, head)
                for item_id, final, stage, head in zip(ids, finals, stages, heads, strict=True)
            ]
        else:
            candidates = ScoredTable(scores.final[order], CandidateTable.bare(ids))
            positions = np.flatnonzero(known)[order]
            if repeated:  # positions among the distinct ids → in the request
                first = {item_id: i for i, item_id in reversed(list(enumerate(request.item_ids)))}
                positions = np.array([first[item_ids[p]] for p in positions.tolist()], np.int64)
        return RankResult(
            candidates=candidates,
            unknown_item_ids=unknown,
            release=ReleaseInfo(release_id, name, snapshot.data_as_of),
            request_positions=positions,
        )


def _sortable_ids(
    snapshot: EngagementSnapshot, rows: IntArray, ids: list[str]
) -> npt.NDArray[np.bytes_ | np.str_]:
    """``ids`` (at ``rows``) as an array that sorts in their order: the snapshot's UTF-8
    bytes at the rows where it has them (UTF-8 bytes sort as their strings do, and with
    no trailing NUL no id is cut short), which needs no conversion of the strings."""
    if len(snapshot.item_id_bytes):
        return snapshot.item_id_bytes[rows]
    return np.array(ids, dtype=str)


def _finite(values: dict[str, FloatArray], order: IntArray) -> list[dict[str, float]]:
    """Per position of ``order``, each array's value there, leaving out NaN (not scored)."""
    columns = [(name, array[order]) for name, array in values.items()]
    rows: list[dict[str, float]] = [{} for _ in range(len(order))]
    for name, column in columns:
        for position in np.flatnonzero(np.isfinite(column)).tolist():
            rows[position][name] = float(column[position])
    return rows
