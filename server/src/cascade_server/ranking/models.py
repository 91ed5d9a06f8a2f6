"""The ranking half of a release: feature arrays, the LightGBM light ranker, the heavy ranker.

Loaded once per release, validated (feature columns match both models, scores of a
golden query are finite) and warmed up before it serves. The light ranker scores
every candidate; the heavy ranker re-scores the light ranker's top ``heavy_top_n``
(``RankingMode.LIGHT_HEAVY``). Either can also run alone. By default
(``RankingMode.AUTO``) the release's own validation decides: light+heavy when the
heavy ranker improved NDCG@10 on the held-out groups, else the light ranker alone.
"""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np

from cascade_server.artifacts.manifest import CorruptReleaseError, Manifest
from cascade_server.features.engagement import EngagementSnapshot, FloatArray, IntArray
from cascade_server.features.id_positions import id_positions
from cascade_server.features.query_tower import QUERY_TOWER_ARTIFACTS, QueryTower
from cascade_server.features.release_items import ITEMS_FILE, read_item_ids
from cascade_server.features.snapshot_cache import SnapshotCache
from cascade_server.ranking.features import FeatureSet, FloatMatrix, Users
from cascade_server.ranking.heavy import HEAVY_RANKER_DIR, HeavyRanker
from cascade_server.ranking.scorers import Scores
from cascade_server.settings import RankingMode

FEATURES_DIR = "ranking_features"
LEGACY_FEATURES_FILE = "ranking_features.npz"
"""Where releases made before the directory form keep their features."""
LIGHT_RANKER_FILE = "light_ranker.txt"
RANKING_ARTIFACTS = (
    ITEMS_FILE,
    FEATURES_DIR,
    LEGACY_FEATURES_FILE,
    LIGHT_RANKER_FILE,
    HEAVY_RANKER_DIR,
    *QUERY_TOWER_ARTIFACTS,
)
"""The release artifacts ranking reads."""
UNKNOWN_ITEM_SCORE = -1e9
"""Score of items the release does not know (added after training): ranked last."""


class LearnedRanker:
    """Scores candidates with the release's features, light ranker and heavy ranker."""

    def __init__(
        self,
        path: Path,
        manifest: Manifest,
        *,
        mode: RankingMode = RankingMode.AUTO,
        heavy_top_n: int = 50,
    ) -> None:
        self.release_id = manifest.release_id
        self.item_ids = read_item_ids(path)
        self.n_items = len(self.item_ids)
        try:
            features = path / FEATURES_DIR
            self.features = FeatureSet.load(
                features if features.exists() else path / LEGACY_FEATURES_FILE
            )
            self.booster = lgb.Booster(model_file=str(path / LIGHT_RANKER_FILE))
        except (OSError, ValueError, lgb.basic.LightGBMError) as error:
            raise CorruptReleaseError(f"the ranker cannot be loaded: {error}") from error
        if self.booster.feature_name() != self.features.columns:
            raise CorruptReleaseError(
                f"the light ranker expects features {self.booster.feature_name()}, "
                f"the release stores {self.features.columns}"
            )
        self.query_tower = (
            QueryTower.of_release(path, int(manifest.config["two_tower"]["history_length"]))
            if self.features.needs_queries
            else None
        )
        heavy_path = path / HEAVY_RANKER_DIR
        self.heavy = HeavyRanker(heavy_path, self.features.columns) if heavy_path.exists() else None
        if mode is RankingMode.AUTO:
            mode = validated_mode(manifest)
        self.mode = mode if self.heavy is not None else RankingMode.LIGHT
        self.heavy_top_n = heavy_top_n
        self.name = {
            RankingMode.LIGHT_HEAVY: "light+heavy",
            RankingMode.LIGHT: "light",
            RankingMode.HEAVY: "heavy",
        }[self.mode]
        self._maps = SnapshotCache[IntArray]()
        self._user_maps = SnapshotCache[IntArray]()
        self._warm_up()

    def prepare(self, snapshot: EngagementSnapshot) -> None:
        """Build the maps between ``snapshot`` and the release now, so that the first
        requests after a swap do not (at a million items each map takes tens of ms)."""
        self.to_release(snapshot)
        if self.query_tower is not None:
            self._model_users(snapshot)

    def to_release(self, snapshot: EngagementSnapshot) -> IntArray:
        """[live items] → release item index (-1 for items the release does not know)."""
        return self._maps.get(snapshot, lambda live: id_positions(live.item_ids, self.item_ids))

    def query(self, snapshot: EngagementSnapshot, user: int, seeds: IntArray) -> FloatMatrix | None:
        """[1, dim]: the query tower's embedding of the user's recent items (or of the
        seeds); None when no feature needs it."""
        if self.query_tower is None:
            return None
        mapping = self.to_release(snapshot)
        recent = mapping[seeds if len(seeds) else snapshot.history.row(user)[0][::-1]]
        model_user = self._model_users(snapshot)[user] if user >= 0 else -1
        embedding = self.query_tower.embeddings(
            np.array([model_user], dtype=np.int64), [recent[recent >= 0]]
        )
        return embedding.astype(np.float64)

    def _model_users(self, snapshot: EngagementSnapshot) -> IntArray:
        """[live users] → the query tower's user index (-1 for users it was not trained on)."""
        return self._user_maps.get(snapshot, self._model_users_of)

    def _model_users_of(self, snapshot: EngagementSnapshot) -> IntArray:
        assert self.query_tower is not None
        mapping = np.full(len(snapshot.user_index), -1, dtype=np.int64)
        rows = np.fromiter(snapshot.user_index.values(), np.int64, len(snapshot.user_index))
        mapping[rows] = self.query_tower.users(list(snapshot.user_index))
        return mapping

    def score(
        self,
        snapshot: EngagementSnapshot,
        user: int,
        seeds: IntArray,
        items: IntArray,
        *,
        heavy_top_n: int = 0,
    ) -> Scores:
        """Scores for ``items`` (live indices) relative to the user's items or seeds; the
        heavy ranker re-scores the light top ``heavy_top_n`` (0: the configured cut-off)."""
        mapping = self.to_release(snapshot)
        anchors = seeds if len(seeds) else snapshot.engaged.row(user)[0]
        history = mapping[anchors]
        candidates = mapping[items]
        known = candidates >= 0
        n = len(items)
        final = np.full(n, UNKNOWN_ITEM_SCORE)
        stages = {"light": np.full(n, np.nan), "heavy": np.full(n, np.nan)}
        heads: dict[str, FloatArray] = {}
        if known.any():
            query = self.query(snapshot, user, seeds)
            scored = self.predict(
                history[history >= 0], candidates[known], query, heavy_top_n=heavy_top_n
            )
            final[known] = scored.final
            for name, values in scored.stages.items():
                stages[name][known] = values
            for name, values in scored.heads.items():
                heads.setdefault(name, np.full(n, np.nan))[known] = values
        return Scores(final=final, heads=heads, stages=stages)

    def predict(
        self,
        history: IntArray,
        candidates: IntArray,
        query: FloatMatrix | None = None,
        *,
        heavy_top_n: int = 0,
    ) -> Scores:
        """Scores of release-index ``candidates`` for a user with ``history`` (and, when a
        feature needs it, the user's [1, dim] ``query`` embedding)."""
        users = Users.of([history], self.n_items, query)
        values = self.features.compute(users, candidates[None, :])[0]
        n = len(candidates)
        nan = np.full(n, np.nan)
        light = (
            np.asarray(self.booster.predict(values, num_threads=1), dtype=np.float64)
            if self.mode is not RankingMode.HEAVY
            else nan
        )
        if self.heavy is None or self.mode is RankingMode.LIGHT:
            return Scores(final=light, heads={}, stages={"light": light, "heavy": nan})
        chosen = (
            np.arange(n)
            if self.mode is RankingMode.HEAVY
            else np.argsort(-light, kind="stable")[: heavy_top_n or self.heavy_top_n]
        )
        combined, per_head = self.heavy.predict(values[chosen])
        heavy = nan.copy()
        heavy[chosen] = combined
        heads = {name: nan.copy() for name in per_head}
        for name, scores in per_head.items():
            heads[name][chosen] = scores
        final = after_heavy(light, heavy)
        return Scores(final=final, heads=heads, stages={"light": light, "heavy": heavy})

    def _warm_up(self) -> None:
        probe = np.arange(min(10, self.n_items), dtype=np.int64)
        query = None
        if self.query_tower is not None:
            query = self.query_tower.embeddings(np.array([-1]), [probe[:3]]).astype(np.float64)
        scores = self.predict(probe[:3], probe, query)
        if not np.isfinite(scores.final).all():
            raise CorruptReleaseError("the rankers return non-finite scores")


def validated_mode(manifest: Manifest) -> RankingMode:
    """light_heavy when the release's validation shows the heavy ranker helping, else light."""
    validation = manifest.metrics.get("ranker", {}).get("validation", {})
    light = validation.get("light_ranker", {}).get("ndcg@10")
    stacked = validation.get("light+heavy", {}).get("ndcg@10")
    if light is None or stacked is None:
        return RankingMode.LIGHT
    return RankingMode.LIGHT_HEAVY if stacked > light else RankingMode.LIGHT


def after_heavy(light: FloatArray, heavy: FloatArray) -> FloatArray:
    """One ordering: heavy-scored items by heavy score, then the rest in light order below."""
    scored = np.isfinite(heavy)
    if scored.all():
        return heavy
    final = heavy.copy()
    rest = light[~scored]
    floor = heavy[scored].min() if scored.any() else 0.0
    final[~scored] = floor - 1.0 - (rest.max() - rest)
    return final
