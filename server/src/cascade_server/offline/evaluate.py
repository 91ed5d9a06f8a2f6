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

from cascade_server.errors import FieldViolation, InvalidArgumentError


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
