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

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from cascade_server.artifacts.manifest import read_verified
from cascade_server.artifacts.registry import ReleaseRegistry
from cascade_server.errors import FieldViolation, InvalidArgumentError
from cascade_server.features.engagement import SignalConfig
from cascade_server.ranking.models import LearnedRanker
from cascade_server.settings import RankingMode
from cascade_server.storage.engagement_reader import read_engagement


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


def agreement(served: Metrics, offline: Metrics) -> float:
    """Share of cases whose held-out item got the same rank served and offline."""
    same = sum(a == b for a, b in zip(served.ranks, offline.ranks, strict=True))
    return same / served.cases if served.cases else 1.0


def stage_metrics(
    engine: sa.Engine,
    releases: Path,
    cases: Sequence[RankingCase],
    config: SignalConfig,
    *,
    mode: RankingMode = RankingMode.AUTO,
    heavy_top_n: int = 50,
    batch: int = 512,
    on_progress: Callable[[str, float], None] | None = None,
) -> tuple[dict[str, Metrics], RankingMode]:
    """HR@10/NDCG@10 of each stage of the active release alone and stacked, on ``cases``.

    Rows: ``popularity`` (TopPop: decayed engagement counts), ``two_tower`` (dot product
    of the query and candidate towers), ``light`` (LightGBM), ``heavy`` (the heavy
    ranker on every candidate), ``light+heavy`` (the heavy ranker re-scoring the light
    top N). Computed in batches with the same feature code the servers run, and
    sorted as the servers sort (ties by item id). Also returns the mode the ranking server
    serves with these settings (``mode``, resolved for ``AUTO``).
    """
    from threadpoolctl import threadpool_limits

    from cascade_server.features.engagement import build_snapshot
    from cascade_server.ranking.features import Users
    from cascade_server.ranking.models import UNKNOWN_ITEM_SCORE, after_heavy
    from cascade_server.retrieval.models import RetrievalModels

    registry = ReleaseRegistry(engine, releases)
    active = registry.active()
    if active is None:
        raise _bad("release", "no release is active; run `cascade train all` first")
    path = registry.path_of(active)
    manifest = read_verified(path)
    ranker = LearnedRanker(path, manifest, mode=mode, heavy_top_n=heavy_top_n)
    retrieval = RetrievalModels(path, manifest)
    snapshot = build_snapshot(read_engagement(engine), config)
    live_to_release = ranker.to_release(snapshot)

    width = max(len(c.candidates) for c in cases)
    no_seeds = np.zeros(0, dtype=np.int64)
    rows = {
        name: Metrics(10) for name in ("popularity", "two_tower", "light", "heavy", "light+heavy")
    }
    with threadpool_limits(limits=1, user_api="blas"):
        for start in range(0, len(cases), batch):
            chunk = cases[start : start + batch]
            live = np.full((len(chunk), width), -1, dtype=np.int64)
            for r, case in enumerate(chunk):
                live[r, : len(case.candidates)] = snapshot.lookup_items(list(case.candidates))
            release = np.where(live >= 0, live_to_release[np.maximum(live, 0)], -1)
            users = [snapshot.user_row(c.user_id) for c in chunk]
            histories = [live_to_release[snapshot.engaged.row(u)[0]] for u in users]
            histories = [h[h >= 0] for h in histories]
            known = release >= 0
            in_catalog = live >= 0
            safe = np.maximum(release, 0)
            popularity = snapshot.popularity[np.maximum(live, 0)]
            recent = [live_to_release[snapshot.history.row(u)[0][::-1]] for u in users]
            queries = retrieval.user_embeddings(
                [c.user_id for c in chunk], [r[r >= 0] for r in recent]
            )
            two_tower = np.einsum("nk,nck->nc", queries, retrieval.item_embeddings[safe])
            # One query-tower call per user, as the server makes: the same bits.
            per_user = [q for u in users if (q := ranker.query(snapshot, u, no_seeds)) is not None]
            user_queries = np.concatenate(per_user) if per_user else None
            values = ranker.features.compute(
                Users.of(histories, ranker.n_items, user_queries), safe
            )
            light = np.asarray(
                ranker.booster.predict(values.reshape(-1, values.shape[2])), dtype=np.float64
            ).reshape(len(chunk), width)
            stacked, heavy_alone = light.copy(), light.copy()
            if ranker.heavy is not None:
                heavy_alone = ranker.heavy.predict(values.reshape(-1, values.shape[2]))[0].reshape(
                    len(chunk), width
                )
                ordered = np.argsort(-np.where(known, light, -np.inf), axis=1, kind="stable")
                top = ordered[:, :heavy_top_n]
                rows_of_top = np.take_along_axis(values, top[..., None], axis=1)
                combined = ranker.heavy.predict(rows_of_top.reshape(-1, values.shape[2]))[0]
                heavy = np.full((len(chunk), width), np.nan)
                np.put_along_axis(heavy, top, combined.reshape(top.shape), axis=1)
                for r in range(len(chunk)):
                    stacked[r] = after_heavy(light[r], heavy[r])
            for name, scores in (
                ("popularity", popularity),
                ("two_tower", two_tower),
                ("light", light),
                ("heavy", heavy_alone),
                ("light+heavy", stacked),
            ):
                # As served: items the release does not know rank last, by id.
                scores = np.where(known | (name == "popularity"), scores, UNKNOWN_ITEM_SCORE)
                for r, case in enumerate(chunk):
                    rows[name].add(_rank_in_row(scores[r], in_catalog[r], case))
            if on_progress is not None:
                on_progress("stages", min(1.0, (start + batch) / len(cases)))
    return rows, ranker.mode


def _rank_in_row(
    scores: npt.NDArray[np.float64], known: npt.NDArray[np.bool_], case: RankingCase
) -> int:
    """Where the case's positive lands when its candidates are sorted as the ranking server
    sorts them (score descending, then item id); -1 when the positive is not in the
    catalog, which the server reports as unknown instead of ranking."""
    n = len(case.candidates)
    positive = case.candidates.index(case.positive)
    if not known[positive]:
        return -1
    ids = np.array(case.candidates, dtype=object)
    others = np.delete(np.arange(n), positive)
    better = scores[others] > scores[positive]
    tied_before = (scores[others] == scores[positive]) & (ids[others] < case.positive)
    return int((known[others] & (better | tied_before)).sum())


@dataclass
class CatalogRecall:
    """Full-catalog ranking of held-out items through Recommend: recall@k and NDCG@k."""

    ks: tuple[int, ...] = (10, 50, 100)
    cases: int = 0
    hits: dict[int, int] = field(default_factory=dict)
    ndcg_sum: dict[int, float] = field(default_factory=dict)

    def add(self, page: Sequence[str], positive: str) -> None:
        """Count one user whose page (best first) should hold ``positive``."""
        self.cases += 1
        rank = rank_of(page, positive)
        for k in self.ks:
            if 0 <= rank < k:
                self.hits[k] = self.hits.get(k, 0) + 1
                self.ndcg_sum[k] = self.ndcg_sum.get(k, 0.0) + math.log(2) / math.log(rank + 2)

    def summary(self) -> dict[str, float]:
        """recall@k and ndcg@k for every k."""
        out: dict[str, float] = {}
        for k in self.ks:
            out[f"recall@{k}"] = self.hits.get(k, 0) / self.cases if self.cases else 0.0
            out[f"ndcg@{k}"] = self.ndcg_sum.get(k, 0.0) / self.cases if self.cases else 0.0
        return out
