"""The two-tower model's query tower as served: a user's embedding from their recent items.

Retrieval searches the item index with it; ranking scores candidates against it. Both
load it from a release through this class, so both see the same embedding for a user.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from cascade_server.features.model_inputs import history_matrix

TWO_TOWER_DIR = "two_tower"
USERS_FILE = "users.json"
USER_FEATURES_FILE = "user_features.npy"

IntArray = npt.NDArray[np.int64]
Embeddings = npt.NDArray[np.float32]


class QueryTower:
    """The ``query`` signature of a two-tower SavedModel with the users it was trained on."""

    def __init__(
        self,
        model_dir: Path,
        user_features: npt.NDArray[np.int64],
        history_length: int,
        user_ids: Sequence[str] = (),
    ) -> None:
        """``user_features`` and ``user_ids`` (for ``users``) are in the model's user order."""
        import tensorflow as tf

        self.user_index = {user: i for i, user in enumerate(user_ids)}
        self.user_features = user_features
        self.history_length = history_length
        self._query = tf.saved_model.load(str(model_dir)).signatures["query"]

    @classmethod
    def of_release(cls, path: Path, history_length: int) -> QueryTower:
        """The query tower stored in the release (or build) directory ``path``."""
        return cls(
            path / TWO_TOWER_DIR,
            np.load(path / USER_FEATURES_FILE),
            history_length,
            json.loads((path / USERS_FILE).read_text()),
        )

    def users(self, user_ids: Sequence[str]) -> IntArray:
        """The model's user indices of ``user_ids`` (-1 for users it was not trained on)."""
        return np.fromiter((self.user_index.get(u, -1) for u in user_ids), np.int64, len(user_ids))

    def embeddings(self, users: IntArray, histories: Sequence[IntArray]) -> Embeddings:
        """One model call: embeddings of ``users`` (model indices, -1: unknown) given their
        histories (release item indices, oldest first)."""
        known = users[:, None] >= 0
        features = np.where(known, self.user_features[np.maximum(users, 0)], 0)
        out = self._query(
            user=users + 1,
            history=history_matrix(histories, self.history_length),
            user_features=features,
        )
        embeddings: Embeddings = out["embedding"].numpy()
        return embeddings
