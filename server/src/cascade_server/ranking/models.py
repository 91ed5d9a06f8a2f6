"""The ranking half of a release: feature arrays and the LightGBM light ranker.

Loaded once per release, validated (feature columns match the booster, scores of a
golden query are finite) and warmed up before it serves.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import lightgbm as lgb
import numpy as np

from cascade_server.artifacts.manifest import CorruptReleaseError, Manifest
from cascade_server.features.engagement import EngagementSnapshot, IntArray
from cascade_server.ranking.features import FeatureSet, Users
from cascade_server.ranking.scorers import Scores

FEATURES_FILE = "ranking_features.npz"
LIGHT_RANKER_FILE = "light_ranker.txt"
ITEMS_FILE = "items.json"
UNKNOWN_ITEM_SCORE = -1e9
"""Score of items the release does not know (added after training): ranked last."""


class LightRanker:
    """Scores candidates with the release's features and LightGBM booster."""

    name = "light_ranker"

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.release_id = manifest.release_id
        item_ids: list[str] = json.loads((path / ITEMS_FILE).read_text())
        self._release_index = {item: i for i, item in enumerate(item_ids)}
        self.n_items = len(item_ids)
        try:
            self.features = FeatureSet.load(path / FEATURES_FILE)
            self.booster = lgb.Booster(model_file=str(path / LIGHT_RANKER_FILE))
        except (OSError, ValueError, lgb.basic.LightGBMError) as error:
            raise CorruptReleaseError(f"the ranker cannot be loaded: {error}") from error
        if self.booster.feature_name() != self.features.columns:
            raise CorruptReleaseError(
                f"the light ranker expects features {self.booster.feature_name()}, "
                f"the release stores {self.features.columns}"
            )
        self._maps: tuple[str, IntArray] | None = None
        self._lock = threading.Lock()
        self._warm_up()

    def to_release(self, snapshot: EngagementSnapshot) -> IntArray:
        """[live items] → release item index (-1 for items the release does not know)."""
        cached = self._maps
        if cached is not None and cached[0] == snapshot.snapshot_id:
            return cached[1]
        with self._lock:
            mapping = np.fromiter(
                (self._release_index.get(item, -1) for item in snapshot.item_ids),
                np.int64,
                snapshot.item_count,
            )
            self._maps = (snapshot.snapshot_id, mapping)
            return mapping

    def score(
        self, snapshot: EngagementSnapshot, user: int, seeds: IntArray, items: IntArray
    ) -> Scores:
        """LightGBM scores for ``items`` (live indices) relative to the user's items or seeds."""
        mapping = self.to_release(snapshot)
        anchors = seeds if len(seeds) else snapshot.engaged.row(user)[0]
        history = mapping[anchors]
        candidates = mapping[items]
        known = candidates >= 0
        final = np.full(len(items), UNKNOWN_ITEM_SCORE)
        if known.any():
            final[known] = self.predict(history[history >= 0], candidates[known])
        return Scores(final=final, heads={self.name: final})

    def predict(self, history: IntArray, candidates: IntArray) -> np.ndarray:
        """Booster scores of release-index ``candidates`` for a user with ``history``."""
        values = self.features.compute(Users.of([history], self.n_items), candidates[None, :])[0]
        return np.asarray(self.booster.predict(values, num_threads=1), dtype=np.float64)

    def _warm_up(self) -> None:
        probe = np.arange(min(10, self.n_items), dtype=np.int64)
        scores = self.predict(probe[:3], probe)
        if not np.isfinite(scores).all():
            raise CorruptReleaseError("the light ranker returns non-finite scores")
