"""The blending stage: filter ranked candidates, then place a page by the surface's policy.

Placement fills the page slot by slot. Most slots are "ranked": they take the
candidate with the best ``lambda * relevance - (1 - lambda) * similarity`` (MMR on
item embeddings; relevance alone when lambda is 1 or there are no embeddings),
preferring candidates that keep the category spacing, and never exceeding the
per-creator cap. The policy reserves a share of slots for fresh items (proposed by
the fresh source) and for exploration (a random candidate ranked below the page);
which positions they take and what exploration draws are seeded, so the same
request gets the same page.
"""

from __future__ import annotations

import functools
import hashlib
import random
import time
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from cascade_server.blending.filters import (
    CategoryFilter,
    DuplicateFilter,
    SeenItemsFilter,
    ServedItemsFilter,
    UnavailableItemFilter,
)
from cascade_server.blending.policy import SurfacePolicy
from cascade_server.blending.release import ItemVectors
from cascade_server.features.engagement import EngagementSnapshot, FloatArray, IntArray
from cascade_server.pipeline.components import Filter
from cascade_server.pipeline.table import ScoredTable
from cascade_server.pipeline.types import (
    BlendAction,
    ComponentReport,
    ScoredCandidate,
    SourceKind,
)


class Slot(StrEnum):
    """The kind of page slot an item was placed in."""

    RANKED = "ranked"
    FRESH = "fresh"
    EXPLORATION = "exploration"


class Demotion(StrEnum):
    """The rule that placed a candidate lower than its relevance alone would have."""

    DIVERSITY = "diversity"
    CATEGORY_SPACING = "category_spacing"
    CREATOR_CAP = "creator_cap"


_DEMOTIONS = [None, Demotion.DIVERSITY, Demotion.CATEGORY_SPACING, Demotion.CREATOR_CAP]
"""Demotions by code (0: none), as ``_Placement.demoted`` stores them."""
_CODE = {demotion: code for code, demotion in enumerate(_DEMOTIONS) if demotion}


@dataclass(frozen=True)
class BlendedItem:
    """One placed item of a page."""

    candidate: ScoredCandidate
    creator_id: str
    slot: Slot = Slot.RANKED


@dataclass(frozen=True)
class CandidateOutcome:
    """What blending did with one candidate (for traces)."""

    candidate: ScoredCandidate
    action: BlendAction
    removed_by: str = ""
    reason: str = ""
    position: int = -1
    slot: Slot | None = None
    blend_score: float | None = None
    demoted_by: Demotion | None = None


@dataclass(frozen=True)
class BlendResult:
    """A page, whether more candidates remain after it, and (when the request asked to
    explain, as traces do) what happened to each candidate and what each component did."""

    items: list[BlendedItem]
    has_more: bool
    outcomes: list[CandidateOutcome] = field(default_factory=list)
    components: list[ComponentReport] = field(default_factory=list)


@dataclass(frozen=True)
class BlendRequest:
    """One page to blend: for whom, how big, by which policy, after which pages."""

    policy: SurfacePolicy
    page_size: int
    user_id: str = ""
    served: Collection[int] = frozenset()
    random_key: str = ""
    """Seeds the reserved slots' randomness together with ``policy.seed``."""
    explain: bool = True
    """Whether to report an outcome for every candidate and each component's work
    (traces); off, only the page."""


class BlendingStage:
    """Applies the filters in order, then places candidates by the policy (see the module)."""

    def blend(
        self,
        snapshot: EngagementSnapshot,
        candidates: Sequence[ScoredCandidate],
        request: BlendRequest,
        vectors: ItemVectors | None = None,
    ) -> BlendResult:
        """One page from ``candidates`` (best first)."""
        policy = request.policy
        filters: list[Filter] = [
            UnavailableItemFilter(snapshot),
            CategoryFilter(snapshot, policy.exclude_categories),
            SeenItemsFilter(snapshot, request.user_id),
            ServedItemsFilter(request.served),
            DuplicateFilter(snapshot, policy.dedup_keys),
        ]
        hint = None
        if isinstance(candidates, ScoredTable):
            item_ids, hint = candidates.item_ids, candidates.hits.item_rows
        else:
            item_ids = [c.item_id for c in candidates]
        # What is left, as positions in ``candidates`` and as the items' snapshot rows.
        positions = np.arange(len(candidates))
        rows = snapshot.lookup_items(item_ids, hint)
        left = list(item_ids)  # the ids at ``positions``
        removed: list[tuple[int, str, str]] = []  # (position, filter, reason)
        reports: list[ComponentReport] = []
        for component in filters:
            started = time.perf_counter()
            found = component.removals(left, rows)
            if found:
                gone = np.fromiter(found, np.int64, len(found))
                removed += [(int(positions[at]), component.name, why) for at, why in found.items()]
                keep = np.ones(len(positions), np.bool_)
                keep[gone] = False
                positions, rows = positions[keep], rows[keep]
                left = [item_id for item_id, kept in zip(left, keep.tolist(), strict=True) if kept]
            reports.append(
                ComponentReport(
                    component.name, time.perf_counter() - started, len(positions), len(found)
                )
            )

        started = time.perf_counter()
        placement = _Placement(snapshot, candidates, positions, rows, request, vectors)
        page, placed_at = placement.run()
        has_more = len(page) < len(positions)
        if not request.explain:
            return BlendResult(page, has_more)
        reports.append(
            ComponentReport(
                "placement", time.perf_counter() - started, len(page), placement.capped_count()
            )
        )
        # Every candidate gets an outcome: build them all in one pass (a table builds a
        # row read alone from its columns).
        listed = list(candidates)
        outcomes = [
            (position, CandidateOutcome(listed[position], BlendAction.REMOVED, name, why))
            for position, name, why in removed
        ]
        outcomes += placement.outcomes(listed, page, placed_at)
        outcomes.sort(key=lambda pair: pair[0])
        return BlendResult(page, has_more, [outcome for _, outcome in outcomes], reports)


class _Placement:
    """The slot-by-slot placement of filtered candidates (see the module docstring).

    Arrays are indexed by the filtered candidates' order; ``positions`` maps that order
    back to the input's.

    A slot costs a few array operations: ``value`` (what a ranked slot maximises) and
    ``fresh_open`` (the fresh slots' ranks) hold -inf and inf for every candidate that
    is placed or held back by the creator cap, so choosing is one ``argmax`` or
    ``argmin``. Which rule demoted each candidate is worked out after the page, when
    asked (``demoted``), from what each ranked slot recorded.
    """

    def __init__(
        self,
        snapshot: EngagementSnapshot,
        candidates: Sequence[ScoredCandidate],
        positions: IntArray,
        rows: IntArray,
        request: BlendRequest,
        vectors: ItemVectors | None,
    ) -> None:
        self.candidates = candidates
        self.positions = positions
        self.request = request
        self.policy = request.policy
        n = len(positions)
        self.rows = rows
        self.snapshot = snapshot
        self.creator_code = snapshot.item_creator_codes[self.rows]
        # Indexed by creator code; the last entry (index -1) counts items with no creator.
        self.creator_count = np.zeros(int(self.creator_code.max(initial=-1)) + 2, np.int64)
        self.primary = snapshot.item_primary_category[self.rows]
        order = _relevance_order(candidates, positions, self.policy.head_weights)
        rank = np.empty(n, np.int64)
        rank[order] = np.arange(n)
        boosts = _boosts(snapshot, self.rows, self.policy)
        self.relevance: FloatArray = 1.0 - rank / max(n, 1) + boosts
        self.rank = np.empty(n, np.int64)
        self.rank[np.argsort(-self.relevance, kind="stable")] = np.arange(n)
        self.explore_window = (self.rank >= request.page_size) & (
            self.rank < self.policy.exploration_depth
        )
        lam = self.policy.diversity_lambda
        self.vectors = (
            vectors.of_items(snapshot, self.rows)
            if vectors is not None and lam < 1.0 and n
            else None
        )
        # value = lam * relevance - (1 - lam) * (largest similarity to a placed item, or
        # 0): kept up to date by ``_place``, the running minimum over placed items.
        self.lam_relevance = lam * self.relevance
        self.value = (
            self.lam_relevance.copy() if self.vectors is not None else self.relevance.copy()
        )
        self._scratch = np.empty(n)
        self.fresh_open = (
            _fresh_ranks(candidates)[positions]
            if self.policy.fresh_share > 0
            else np.full(n, np.inf)
        )
        # Slots are numbered from 0; page_size stands for "not (yet)".
        self.placed_at = np.full(n, request.page_size, np.int64)
        """The slot each candidate was placed in."""
        self.closed_at = np.full(n, request.page_size, np.int64)
        """The slot after whose placement each candidate could no longer be placed (-1:
        from the start)."""
        self.open = np.ones(n, np.bool_)
        """Neither placed nor held back by the creator cap (kept up to date by ``_close``)."""
        self._close(~self._under_cap(), -1)
        self.ranked: list[tuple[int, float, tuple[int, ...], bool]] = []
        """Each ranked slot: its index, the chosen candidate's relevance, the categories
        it kept apart from, whether it had to relax the spacing."""
        # The standard library's generator: seeding numpy's cost 27 µs a request, and its
        # draws of a few numbers each several times what these take.
        self.rng = random.Random(_seed(self.policy.seed, request.random_key))

    def run(self) -> tuple[list[BlendedItem], dict[int, int]]:
        """The page, and the page position of each placed candidate (by its index among
        the filtered candidates)."""
        chosen: list[tuple[int, Slot]] = []
        recent: deque[int] = deque(maxlen=max(self.policy.category_spacing, 1))
        for at, slot in enumerate(self._slots()):
            if not self.open.any():
                break
            choice, slot = self._choose(at, slot, recent)
            self._place(at, choice)
            if self.policy.category_spacing:
                recent.append(int(self.primary[choice]))
            chosen.append((choice, slot))
        choices = np.array([choice for choice, _ in chosen], dtype=np.int64)
        placed = _pick(self.candidates, self.positions[choices])
        page = [
            BlendedItem(candidate, self._creator(choice), slot)
            for candidate, (choice, slot) in zip(placed, chosen, strict=True)
        ]
        return page, {choice: position for position, (choice, _) in enumerate(chosen)}

    def _creator(self, i: int) -> str:
        return self.snapshot.item_creators[int(self.rows[i])]

    @property
    def placed(self) -> npt.NDArray[np.bool_]:
        return np.asarray(self.placed_at < self.request.page_size)

    def capped_count(self) -> int:
        """Candidates the creator cap held back."""
        return int((self._capped() & ~self.placed).sum())

    def _capped(self) -> npt.NDArray[np.bool_]:
        # Capped: passed over for the cap, or left when the cap blocked every candidate.
        capped = self.demoted == _CODE[Demotion.CREATOR_CAP]
        if int(self.placed.sum()) < self.request.page_size:
            capped |= ~self._under_cap()
        return np.asarray(capped)

    def _slots(self) -> list[Slot]:
        size = self.request.page_size
        slots = [Slot.RANKED] * size
        fresh = round(self.policy.fresh_share * size)
        explore = round(self.policy.exploration_share * size)
        kinds = ([Slot.FRESH] * fresh + [Slot.EXPLORATION] * explore)[: size - 1]
        if kinds:
            self.rng.shuffle(kinds)
            chosen = self.rng.sample(range(1, size), len(kinds))
            for position, kind in zip(sorted(chosen), kinds, strict=True):
                slots[position] = kind
        return slots

    def _under_cap(self) -> npt.NDArray[np.bool_]:
        cap = self.policy.max_items_per_creator
        counts = self.creator_count[self.creator_code]
        return np.asarray((self.creator_code < 0) | (counts < cap))

    def _choose(self, at: int, slot: Slot, recent: deque[int]) -> tuple[int, Slot]:
        if slot is Slot.FRESH:
            choice = int(np.argmin(self.fresh_open))
            if self.fresh_open[choice] < np.inf:
                return choice, slot
        if slot is Slot.EXPLORATION:
            pool = np.flatnonzero(self.open & self.explore_window)
            if len(pool):
                return int(pool[self.rng.randrange(len(pool))]), slot
        apart: tuple[int, ...] = ()
        if self.policy.category_spacing:
            apart = tuple(sorted({category for category in recent if category >= 0}))
        relaxed = False
        if apart:
            keeps = self.primary != apart[0]
            for category in apart[1:]:  # a few; np.isin costs more
                keeps &= self.primary != category
            spaced = np.where(keeps, self.value, -np.inf)
            choice = int(np.argmax(spaced))
            relaxed = bool(spaced[choice] == -np.inf)  # nothing keeps the spacing: relax it
        if not apart or relaxed:
            choice = int(np.argmax(self.value))
        self.ranked.append((at, float(self.relevance[choice]), apart, relaxed))
        return choice, Slot.RANKED

    def _place(self, at: int, choice: int) -> None:
        self.placed_at[choice] = at
        self._close(choice, at)
        code = self.creator_code[choice]
        self.creator_count[code] += 1
        if code >= 0 and self.creator_count[code] >= self.policy.max_items_per_creator:
            capped = self.open & (self.creator_code == code)
            self._close(capped, at)
        if self.vectors is not None:
            # Negative similarity counts as none: the running maximum starts at 0, so
            # the value only ever falls. In float64, as the relevance.
            penalty = np.multiply(
                self.vectors @ self.vectors[choice],
                -(1.0 - self.policy.diversity_lambda),
                out=self._scratch,
            )
            penalty += self.lam_relevance
            np.minimum(self.value, penalty, out=self.value)

    def _close(self, which: int | npt.NDArray[np.bool_], at: int) -> None:
        """No longer placeable after slot ``at``'s placement."""
        self.open[which] = False
        self.value[which] = -np.inf
        self.fresh_open[which] = np.inf
        self.closed_at[which] = at

    @functools.cached_property
    def demoted(self) -> npt.NDArray[np.int8]:
        """Each candidate's demotion code: the rule that kept it from the last ranked slot
        that passed it over (took a less relevant candidate while it was not placed),
        0 for none. Worked out when first asked: only traces need it."""
        n = len(self.positions)
        if not self.ranked or not n:
            return np.zeros(n, np.int8)
        at = np.array([slot for slot, _, _, _ in self.ranked])[:, None]
        threshold = np.array([relevance for _, relevance, _, _ in self.ranked])[:, None]
        passed = (self.placed_at >= at) & (self.relevance > threshold)
        width = max(len(apart) for _, _, apart, _ in self.ranked)
        # Categories each slot kept apart from, padded with -2 (no category is -1).
        apart = np.full((len(self.ranked), width), -2, np.int64)
        for k, (_, _, categories, relaxed) in enumerate(self.ranked):
            if not relaxed:
                apart[k, : len(categories)] = categories
        spaced = np.ones(passed.shape, np.bool_)
        for column in apart.T:
            spaced &= self.primary != column[:, None]
        why = np.where(
            self.closed_at >= at,
            np.where(spaced, _CODE[Demotion.DIVERSITY], _CODE[Demotion.CATEGORY_SPACING]),
            _CODE[Demotion.CREATOR_CAP],
        ).astype(np.int8)
        last = len(self.ranked) - 1 - np.argmax(passed[::-1], axis=0)
        demoted: npt.NDArray[np.int8] = why[last, np.arange(n)]
        demoted[~passed.any(axis=0)] = 0
        return demoted

    def outcomes(
        self,
        listed: Sequence[ScoredCandidate],
        page: list[BlendedItem],
        positions: dict[int, int],
    ) -> list[tuple[int, CandidateOutcome]]:
        """What happened to every candidate (``listed``: the input, as objects), with its
        position in the input."""
        capped = self._capped()
        outcomes = []
        cap = self.policy.max_items_per_creator
        for i, at in enumerate(self.positions.tolist()):
            candidate = listed[at]
            demoted = _DEMOTIONS[self.demoted[i]]
            score = float(self.relevance[i])
            if i in positions:
                position = positions[i]
                outcome = CandidateOutcome(
                    candidate,
                    BlendAction.PLACED,
                    position=position,
                    slot=page[position].slot,
                    blend_score=score,
                    demoted_by=demoted,
                )
            elif capped[i]:
                outcome = CandidateOutcome(
                    candidate,
                    BlendAction.CAPPED,
                    Demotion.CREATOR_CAP.value,
                    f"creator {self._creator(i)} already has {cap} items on the page",
                    blend_score=score,
                    demoted_by=Demotion.CREATOR_CAP,
                )
            elif self.rank[i] < self.request.page_size and demoted is not None:
                outcome = CandidateOutcome(
                    candidate, BlendAction.DEMOTED, blend_score=score, demoted_by=demoted
                )
            else:
                outcome = CandidateOutcome(candidate, BlendAction.BELOW_PAGE, blend_score=score)
            outcomes.append((at, outcome))
        return outcomes


def _relevance_order(
    candidates: Sequence[ScoredCandidate], positions: IntArray, weights: Mapping[str, float]
) -> IntArray:
    """The filtered candidates (``candidates`` at ``positions``) most relevant first, as
    indices into ``positions``: their order, except that candidates with every weighted
    head are re-ordered among themselves by the weighted sum."""
    order = np.arange(len(positions))
    if not weights:
        return order
    kept = [candidates[p] for p in positions.tolist()]
    headed = [i for i, c in enumerate(kept) if all(h in c.head_scores for h in weights)]
    combined = [sum(w * kept[i].head_scores[h] for h, w in weights.items()) for i in headed]
    ranked = [headed[k] for k in np.argsort(-np.asarray(combined), kind="stable").tolist()]
    order[headed] = ranked
    return order


def _boosts(snapshot: EngagementSnapshot, rows: IntArray, policy: SurfacePolicy) -> FloatArray:
    """Each candidate's category boost: the largest of its categories' boosts (0 for none)."""
    boosts = np.zeros(len(rows))
    if not policy.category_boosts:
        return boosts
    index = snapshot.category_index
    by_id = {index[name]: boost for name, boost in policy.category_boosts.items() if name in index}
    for i, row in enumerate(rows.tolist()):
        found = [by_id[c] for c in snapshot.item_categories.row(row)[0].tolist() if c in by_id]
        if found:
            boosts[i] = max(found, key=abs)
    return boosts


def _pick(candidates: Sequence[ScoredCandidate], positions: IntArray) -> list[ScoredCandidate]:
    """The candidates at ``positions`` (for a table, built in one step)."""
    if isinstance(candidates, ScoredTable):
        return list(candidates.take(positions))
    return [candidates[p] for p in positions.tolist()]


def _fresh_ranks(candidates: Sequence[ScoredCandidate]) -> FloatArray:
    """Each candidate's best rank from the fresh source (inf when it did not propose it)."""
    if isinstance(candidates, ScoredTable):
        return candidates.hits.best_rank(SourceKind.FRESH)
    return np.array(
        [
            min((h.rank for h in c.sources if h.source is SourceKind.FRESH), default=np.inf)
            for c in candidates
        ],
        np.float64,
    )


def _seed(policy_seed: int, key: str) -> int:
    digest = hashlib.blake2b(f"{policy_seed}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")
