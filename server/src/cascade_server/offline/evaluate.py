"""Offline evaluation: the NCF leave-one-out protocol (HR@10, NDCG@10) and full-catalog recall.

The NCF protocol (He et al., WWW 2017) ranks each user's held-out item among 100
candidates: the item and 99 sampled items the user never interacted with. As in the
reference evaluator, a candidate list is de-duplicated (some users' held-out item
also appears among their negatives). Items the ranker does not know are ranked after
every known item, so an unknown held-out item is a miss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from cascade_server.artifacts.manifest import read_verified
from cascade_server.artifacts.registry import ReleaseRegistry
from cascade_server.artifacts.watcher import ReleaseWatcher
from cascade_server.errors import FieldViolation, InvalidArgumentError
from cascade_server.features.engagement import SignalConfig
from cascade_server.features.refresh import SnapshotHolder
from cascade_server.pipeline.deadline import Deadline
from cascade_server.pipeline.types import RequestContext
from cascade_server.ranking.models import LightRanker
from cascade_server.ranking.scorers import BaselineScorer
from cascade_server.ranking.stage import RankingStage, RankRequest
from cascade_server.storage.engagement_reader import read_engagement, read_fingerprint


@dataclass(frozen=True)
class RankingCase:
    """One user's held-out item and the candidates it is ranked among."""

    user_id: str
    positive: str
    candidates: tuple[str, ...]


@dataclass(frozen=True)
class CaseResult:
    """Where the held-out item landed (0-based; -1 when it was not ranked at all)."""

    user_id: str
    rank: int


@dataclass
class Metrics:
    """HR@k and NDCG@k averaged over the cases."""

    k: int
    cases: int = 0
    hits: float = 0.0
    ndcg_sum: float = 0.0
    ranks: list[int] = field(default_factory=list)

    def add(self, rank: int) -> None:
        """Count one case whose held-out item landed at ``rank``."""
        self.cases += 1
        self.ranks.append(rank)
        if 0 <= rank < self.k:
            self.hits += 1
            self.ndcg_sum += math.log(2) / math.log(rank + 2)

    @property
    def hit_rate(self) -> float:
        """HR@k."""
        return self.hits / self.cases if self.cases else 0.0

    @property
    def ndcg(self) -> float:
        """NDCG@k."""
        return self.ndcg_sum / self.cases if self.cases else 0.0

    def summary(self) -> dict[str, float | int]:
        """The metrics as a plain dict for manifests and reports."""
        return {
            f"hr@{self.k}": round(self.hit_rate, 4),
            f"ndcg@{self.k}": round(self.ndcg, 4),
            "users": self.cases,
        }


def read_ncf_cases(test_rating: Path, test_negative: Path) -> list[RankingCase]:
    """The cases of an NCF ``*.test.rating`` / ``*.test.negative`` pair of files.

    Ids are kept as written (decimal strings), matching ``cascade import --format ncf``.
    """
    ratings = _lines(test_rating)
    negatives = _lines(test_negative)
    if len(ratings) != len(negatives):
        raise _bad(
            "test_negative",
            f"{test_negative} has {len(negatives)} lines but {test_rating} has {len(ratings)}",
        )
    cases = []
    for number, (rating, negative) in enumerate(zip(ratings, negatives, strict=True), start=1):
        fields = rating.split("\t")
        parts = negative.split("\t")
        if len(fields) < 2 or not parts or not parts[0].startswith("("):
            raise _bad("test_rating", f"line {number} is not an NCF test line")
        user, positive = fields[0], fields[1]
        if parts[0] != f"({user},{positive})":
            raise _bad(
                "test_negative",
                f"{test_negative}:{number} is for {parts[0]}, not ({user},{positive})",
            )
        candidates = tuple(dict.fromkeys([*parts[1:], positive]))
        cases.append(RankingCase(user, positive, candidates))
    return cases


def rank_of(ranked: Sequence[str], positive: str) -> int:
    """0-based position of ``positive`` in ``ranked``; -1 when absent."""
    try:
        return list(ranked).index(positive)
    except ValueError:
        return -1


def evaluate(
    cases: Iterable[RankingCase],
    rank: Callable[[RankingCase], Sequence[str]],
    k: int = 10,
    on_case: Callable[[int], None] | None = None,
) -> tuple[Metrics, list[CaseResult]]:
    """HR@k and NDCG@k of ``rank`` (which orders a case's known candidates, best first)."""
    metrics = Metrics(k)
    results = []
    for done, case in enumerate(cases, start=1):
        position = rank_of(rank(case), case.positive)
        metrics.add(position)
        results.append(CaseResult(case.user_id, position))
        if on_case is not None:
            on_case(done)
    return metrics, results


def _lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text().splitlines() if line.strip()]
    except OSError as error:
        raise _bad("path", f"cannot read {path}: {error.strerror}") from error


def _bad(field_name: str, description: str) -> InvalidArgumentError:
    return InvalidArgumentError([FieldViolation(field_name, description)])


def ranked_ids(ordered: Sequence[str], case: RankingCase) -> list[str]:
    """A case's candidates in ``ordered`` order, the ones the ranker did not return last."""
    returned = list(dict.fromkeys(i for i in ordered if i in set(case.candidates)))
    missing = [i for i in case.candidates if i not in set(returned)]
    return returned + missing


@dataclass(frozen=True)
class Comparison:
    """Served versus offline ranks of the same cases."""

    served: Metrics
    offline: Metrics
    same_rank: int
    cases: int

    @property
    def agreement(self) -> float:
        """Share of cases whose held-out item got the same rank both ways."""
        return self.same_rank / self.cases if self.cases else 1.0


def compare(served: Sequence[CaseResult], offline: Sequence[CaseResult], k: int = 10) -> Comparison:
    """Metrics of both runs and how often they agree, case by case."""
    served_metrics, offline_metrics = Metrics(k), Metrics(k)
    same = 0
    for a, b in zip(served, offline, strict=True):
        served_metrics.add(a.rank)
        offline_metrics.add(b.rank)
        same += a.rank == b.rank
    return Comparison(served_metrics, offline_metrics, same, len(served))


def in_process_ranker(
    engine: sa.Engine, releases: Path, config: SignalConfig
) -> tuple[str, Callable[[RankingCase], list[str]]]:
    """The ranking stage exactly as the server builds it, over the database and the active
    release, as a function of a case; also the id of the release it serves."""
    holder = SnapshotHolder(
        read_data=lambda: read_engagement(engine),
        read_fingerprint=lambda: read_fingerprint(engine),
        config=config,
    )
    holder.refresh()
    registry = ReleaseRegistry(engine, releases)

    def load(release_id: str) -> LightRanker:
        path = registry.path_of(release_id)
        return LightRanker(path, read_verified(path))

    watcher: ReleaseWatcher[LightRanker | None] = ReleaseWatcher(
        read_active=registry.active, load=load, baseline=None, name="evaluate"
    )
    watcher.refresh()
    stage = RankingStage(holder, BaselineScorer(), watcher)
    release_id = watcher.current().release_id or holder.current().snapshot_id

    def rank(case: RankingCase) -> list[str]:
        request = RankRequest(RequestContext(user_id=case.user_id), list(case.candidates))
        result = stage.rank(request, Deadline.after(60.0))
        return ranked_ids([c.item_id for c in result.candidates], case)

    return release_id, rank
