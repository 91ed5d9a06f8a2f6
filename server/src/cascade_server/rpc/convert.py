"""Protobuf ↔ domain conversions shared by the servicers, and request validation helpers.

Limits here are the ones the protos document; a request that breaks any of them is
rejected with every violation listed, before any work is done.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

import numpy as np
from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

from cascade.common.v1 import candidate_pb2, context_pb2, trace_pb2
from cascade_server.errors import FieldViolation, InvalidArgumentError
from cascade_server.features.engagement import IntArray
from cascade_server.pipeline.table import SOURCE_CODES, SOURCE_KINDS, CandidateTable, ScoredTable
from cascade_server.pipeline.types import (
    BlendAction,
    Candidate,
    ComponentReport,
    Degradation,
    DegradationKind,
    ReleaseInfo,
    RequestContext,
    ScoredCandidate,
    SourceHit,
    SourceKind,
    StageName,
    Surface,
)

MAX_ID_LENGTH = 128
MAX_IDS = 2000

SURFACES: Mapping[context_pb2.Surface.ValueType, Surface | None] = {
    context_pb2.SURFACE_UNSPECIFIED: None,
    context_pb2.SURFACE_HOME_FEED: Surface.HOME_FEED,
    context_pb2.SURFACE_RELATED_ITEMS: Surface.RELATED_ITEMS,
    context_pb2.SURFACE_CATEGORY_FEED: Surface.CATEGORY_FEED,
}
SURFACE_TO_PROTO = {surface: number for number, surface in SURFACES.items() if surface}
SOURCES: Mapping[candidate_pb2.CandidateSource.ValueType, SourceKind] = {
    candidate_pb2.CANDIDATE_SOURCE_POPULAR: SourceKind.POPULAR,
    candidate_pb2.CANDIDATE_SOURCE_CO_ENGAGEMENT: SourceKind.CO_ENGAGEMENT,
    candidate_pb2.CANDIDATE_SOURCE_CALLER: SourceKind.CALLER,
    candidate_pb2.CANDIDATE_SOURCE_ANN: SourceKind.ANN,
    candidate_pb2.CANDIDATE_SOURCE_RANDOM_WALK: SourceKind.RANDOM_WALK,
    candidate_pb2.CANDIDATE_SOURCE_TRENDING: SourceKind.TRENDING,
    candidate_pb2.CANDIDATE_SOURCE_CATEGORY_POPULAR: SourceKind.CATEGORY_POPULAR,
    candidate_pb2.CANDIDATE_SOURCE_FRESH: SourceKind.FRESH,
}
SOURCE_TO_PROTO = {kind: number for number, kind in SOURCES.items()}
_STAGES = {
    StageName.RETRIEVAL: trace_pb2.STAGE_RETRIEVAL,
    StageName.RANKING: trace_pb2.STAGE_RANKING,
    StageName.BLENDING: trace_pb2.STAGE_BLENDING,
}
_REASONS = {
    DegradationKind.DEADLINE_EXCEEDED: trace_pb2.DEGRADATION_REASON_DEADLINE_EXCEEDED,
    DegradationKind.UNAVAILABLE: trace_pb2.DEGRADATION_REASON_UNAVAILABLE,
    DegradationKind.ERROR: trace_pb2.DEGRADATION_REASON_ERROR,
}
_BLEND_ACTIONS = {
    BlendAction.PLACED: trace_pb2.BLEND_ACTION_PLACED,
    BlendAction.REMOVED: trace_pb2.BLEND_ACTION_REMOVED,
    BlendAction.CAPPED: trace_pb2.BLEND_ACTION_CAPPED,
    BlendAction.BELOW_PAGE: trace_pb2.BLEND_ACTION_BELOW_PAGE,
    BlendAction.DEMOTED: trace_pb2.BLEND_ACTION_DEMOTED,
}


class Violations:
    """Collects field violations; ``raise_if_any`` reports them all at once."""

    def __init__(self) -> None:
        self.found: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        """Record one violation."""
        self.found.append(FieldViolation(field, description))

    def text(self, value: str, field: str, *, max_length: int, required: bool = False) -> None:
        """A string that must be at most ``max_length`` characters (and non-empty if required)."""
        if required and not value:
            self.add(field, "is required")
        elif len(value) > max_length:
            self.add(field, f"must be at most {max_length} characters, got {len(value)}")

    def ids(
        self, values: Sequence[str], field: str, *, max_count: int, required: bool = False
    ) -> None:
        """A list of 1..128-character ids, at most ``max_count`` of them."""
        if required and not values:
            self.add(field, "at least one id is required")
        if len(values) > max_count:
            self.add(field, f"at most {max_count} ids are allowed, got {len(values)}")
            return
        lengths = list(map(len, values))
        if not lengths or (min(lengths) > 0 and max(lengths) <= MAX_ID_LENGTH):
            return  # the usual case, without a call per id
        for i, value in enumerate(values):
            self.text(value, f"{field}[{i}]", max_length=MAX_ID_LENGTH, required=True)

    def bounded(self, value: int, field: str, *, low: int, high: int) -> None:
        """An integer in ``[low, high]``."""
        if not low <= value <= high:
            self.add(field, f"must be between {low} and {high}, got {value}")

    def enum(self, value: int, known: Iterable[int], field: str) -> None:
        """An enum number this server knows."""
        if value not in set(known):
            self.add(field, f"unknown value {value}")

    def finite(self, value: float, field: str) -> None:
        """A finite float."""
        if not math.isfinite(value):
            self.add(field, "must be a finite number")

    def raise_if_any(self) -> None:
        """Raise INVALID_ARGUMENT listing every violation, if there were any."""
        if self.found:
            raise InvalidArgumentError(self.found)


def context_from_proto(
    message: context_pb2.RequestContext, violations: Violations, field: str = "context"
) -> RequestContext:
    """Validate and convert a request context."""
    violations.text(message.user_id, f"{field}.user_id", max_length=MAX_ID_LENGTH)
    violations.enum(message.surface, SURFACES, f"{field}.surface")
    violations.text(message.locale, f"{field}.locale", max_length=35)
    violations.bounded(len(message.experiment_ids), f"{field}.experiment_ids", low=0, high=16)
    for i, experiment in enumerate(message.experiment_ids):
        violations.text(experiment, f"{field}.experiment_ids[{i}]", max_length=64, required=True)
    violations.text(message.request_id, f"{field}.request_id", max_length=64)
    return RequestContext(
        user_id=message.user_id,
        surface=SURFACES.get(message.surface),
        locale=message.locale,
        experiment_ids=tuple(message.experiment_ids),
        debug=message.debug,
        request_id=message.request_id,
    )


def context_to_proto(context: RequestContext) -> context_pb2.RequestContext:
    """The wire form of a request context, for calls to other stages."""
    return context_pb2.RequestContext(
        user_id=context.user_id,
        surface=SURFACE_TO_PROTO[context.surface]
        if context.surface
        else context_pb2.SURFACE_UNSPECIFIED,
        locale=context.locale,
        experiment_ids=context.experiment_ids,
        debug=context.debug,
        request_id=context.request_id,
    )


def add_hits(
    field: RepeatedCompositeFieldContainer[candidate_pb2.SourceHit], hits: Iterable[SourceHit]
) -> None:
    """Source hits on the wire, appended to a repeated field: each built in place, which
    costs half of building messages and copying them in."""
    add = field.add
    for hit in hits:
        add(source=SOURCE_TO_PROTO[hit.source], rank=hit.rank, score=hit.score)


def add_candidates(
    field: RepeatedCompositeFieldContainer[candidate_pb2.Candidate],
    candidates: Iterable[Candidate],
) -> None:
    """Append candidates with their source hits to a repeated field."""
    add = field.add
    for candidate in candidates:
        add_hits(add(item_id=candidate.item_id).sources, candidate.sources)


_SOURCE_BY_NUMBER: list[SourceKind | None] = [
    SOURCES.get(candidate_pb2.CandidateSource.ValueType(number))
    for number in range(max(SOURCES) + 1)
]
_NUMBER_OF_CODE = np.array([SOURCE_TO_PROTO[kind] for kind in SOURCE_KINDS], dtype=np.int64)
"""A table's source codes (``SOURCE_KINDS``) → the wire's numbers."""
_CODE_OF_NUMBER = np.array(
    [-1 if kind is None else SOURCE_CODES[kind] for kind in _SOURCE_BY_NUMBER], dtype=np.int8
)
"""The wire's numbers → a table's source codes (-1: a source this server does not know)."""


def hits_from_proto(hits: Iterable[candidate_pb2.SourceHit]) -> tuple[SourceHit, ...]:
    """Source hits from the wire; unknown sources are dropped."""
    converted = []
    for hit in hits:
        number = hit.source
        kind = _SOURCE_BY_NUMBER[number] if 0 <= number < len(_SOURCE_BY_NUMBER) else None
        if kind is not None:
            converted.append(SourceHit(kind, hit.rank, hit.score))
    return tuple(converted)


def fill_candidate_columns(
    columns: candidate_pb2.CandidateColumns, candidates: Sequence[Candidate]
) -> None:
    """Write ``candidates`` in the compact column form into ``columns`` (empty; a
    response's own field, so that no copy of the columns is made)."""
    table = CandidateTable.of(candidates)
    columns.item_ids.extend(table.item_ids)
    columns.hit_counts.extend(table.hit_counts.tolist())
    columns.hit_sources.extend(_NUMBER_OF_CODE[table.hit_sources].tolist())
    columns.hit_ranks.extend(table.hit_ranks.tolist())
    columns.hit_scores.extend(table.hit_scores.tolist())
    if table.item_rows is not None:
        columns.item_rows.extend(table.item_rows.tolist())


def candidates_from_columns(columns: candidate_pb2.CandidateColumns) -> CandidateTable:
    """Candidates from the column form (with the sender's rows, when it sent them);
    unknown sources are dropped. Raises ValueError when the columns do not line up."""
    counts = np.array(columns.hit_counts, dtype=np.int64)
    numbers = np.array(columns.hit_sources, dtype=np.int64)
    ranks = np.array(columns.hit_ranks, dtype=np.int64)
    scores = np.array(columns.hit_scores, dtype=np.float64)
    if len(counts) != len(columns.item_ids) or not (
        int(counts.sum()) == len(numbers) == len(ranks) == len(scores)
    ):
        raise ValueError("candidate columns of different lengths")
    sources = np.full(len(numbers), -1, dtype=np.int8)
    listed = (numbers >= 0) & (numbers < len(_CODE_OF_NUMBER))
    sources[listed] = _CODE_OF_NUMBER[numbers[listed]]
    known = sources >= 0
    if not known.all():
        owner = np.repeat(np.arange(len(counts)), counts)
        counts = np.bincount(owner[known], minlength=len(counts))
        sources, ranks, scores = sources[known], ranks[known], scores[known]
    rows = np.array(columns.item_rows, dtype=np.int64) if columns.item_rows else None
    return CandidateTable(list(columns.item_ids), counts, sources, ranks, scores, rows)


def fill_scored_columns(
    columns: candidate_pb2.ScoredColumns,
    candidates: Sequence[ScoredCandidate],
    request_positions: IntArray | None = None,
) -> None:
    """Write scored candidates in the compact column form (final scores only, and each
    one's position in the request when known) into ``columns`` (empty; a response's own
    field)."""
    if isinstance(candidates, ScoredTable):
        columns.item_ids.extend(candidates.item_ids)
        columns.scores.extend(candidates.scores.tolist())
    else:
        columns.item_ids.extend([c.item_id for c in candidates])
        columns.scores.extend([c.score for c in candidates])
    if request_positions is not None:
        columns.request_positions.extend(request_positions.tolist())


def scored_from_columns(
    columns: candidate_pb2.ScoredColumns, sources: CandidateTable
) -> ScoredTable:
    """Scored candidates from the column form, with their source hits from ``sources``
    (the candidates the request sent, joined by ``request_positions`` when the answer has
    them, else by id). Raises ValueError when the columns do not line up or a position
    is not one of the request's."""
    n = len(columns.scores)
    if len(columns.item_ids) != n:
        raise ValueError("scored columns of different lengths")
    scores = np.array(columns.scores, dtype=np.float64)
    if not columns.request_positions:
        return ScoredTable.ranked(list(columns.item_ids), scores, sources)
    positions = np.array(columns.request_positions, dtype=np.int64)
    if len(positions) != n:
        raise ValueError("scored columns of different lengths")
    if n and int(positions.max()) >= len(sources):
        raise ValueError(f"a request position past the {len(sources)} candidates sent")
    return ScoredTable(scores, sources.take(positions))


def add_scored(
    field: RepeatedCompositeFieldContainer[candidate_pb2.ScoredCandidate],
    candidates: Iterable[ScoredCandidate],
) -> None:
    """Append scored candidates to a repeated field (empty fields left unset: it is
    cheaper)."""
    add = field.add
    for candidate in candidates:
        message = add(item_id=candidate.item_id, score=candidate.score)
        if candidate.stage_scores:
            message.stage_scores.update(candidate.stage_scores)
        if candidate.head_scores:
            message.head_scores.update(candidate.head_scores)
        if candidate.sources:
            add_hits(message.sources, candidate.sources)


def scored_from_proto(
    message: candidate_pb2.ScoredCandidate, sources: tuple[SourceHit, ...] | None = None
) -> ScoredCandidate:
    """A scored candidate from the wire, with ``sources`` instead of the message's own when
    given. The score maps are the message's own (read-only by convention, not copied: a
    request holds hundreds of them)."""
    if sources is None:
        sources = hits_from_proto(message.sources) if message.sources else ()
    return ScoredCandidate(
        item_id=message.item_id,
        score=message.score,
        stage_scores=message.stage_scores,
        head_scores=message.head_scores,
        sources=sources,
    )


def degradations_to_proto(items: Iterable[Degradation]) -> list[trace_pb2.Degradation]:
    """Degradations on the wire."""
    return [
        trace_pb2.Degradation(
            stage=_STAGES[d.stage],
            component=d.component,
            reason=_REASONS[d.reason],
            message=d.message,
            fallback=d.fallback,
        )
        for d in items
    ]


def degradations_from_proto(items: Iterable[trace_pb2.Degradation]) -> list[Degradation]:
    """Degradations from the wire (reported by a downstream stage)."""
    stages = {number: stage for stage, number in _STAGES.items()}
    reasons = {number: reason for reason, number in _REASONS.items()}
    return [
        Degradation(
            stage=stages.get(d.stage, StageName.RETRIEVAL),
            reason=reasons.get(d.reason, DegradationKind.ERROR),
            message=d.message,
            component=d.component,
            fallback=d.fallback,
        )
        for d in items
    ]


def release_to_proto(release: ReleaseInfo | None) -> trace_pb2.ReleaseInfo:
    """Release info on the wire."""
    if release is None:
        return trace_pb2.ReleaseInfo()
    message = trace_pb2.ReleaseInfo(release_id=release.release_id, scorer=release.scorer)
    if release.data_as_of is not None:
        message.data_as_of.CopyFrom(timestamp(release.data_as_of))
    return message


def stage_trace(
    stage: StageName,
    release: ReleaseInfo | None,
    duration_s: float,
    input_count: int,
    output_count: int,
    components: Iterable[ComponentReport],
) -> trace_pb2.StageTrace:
    """One stage's trace."""
    return trace_pb2.StageTrace(
        stage=_STAGES[stage],
        release=release_to_proto(release),
        duration=duration(duration_s),
        input_count=input_count,
        output_count=output_count,
        components=[
            trace_pb2.ComponentTrace(
                name=c.name,
                duration=duration(c.duration_s),
                output_count=c.output_count,
                removed_count=c.removed_count,
            )
            for c in components
        ],
    )


def blend_action_to_proto(action: BlendAction) -> trace_pb2.BlendAction.ValueType:
    """A blend action on the wire."""
    return _BLEND_ACTIONS[action]


def duration(seconds: float) -> duration_pb2.Duration:
    """A Duration from seconds."""
    message = duration_pb2.Duration()
    message.FromNanoseconds(round(seconds * 1e9))
    return message


def timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    """A Timestamp from an aware datetime."""
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(moment)
    return message
