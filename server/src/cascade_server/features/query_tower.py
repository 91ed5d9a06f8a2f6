"""The two-tower model's query tower as served: a user's embedding from their recent items.

Retrieval searches the item index with it; ranking scores candidates against it. Both
load it from a release through this class, so both see the same embedding for a user.

Releases store the tower's weights as arrays too (``query_tower.npz``): the tower is
embedding lookups, masked means and a two-layer MLP, which numpy evaluates in tens of
microseconds, where a call into the TensorFlow signature costs about a millisecond.
The arrays are mapped from the file, not read (at a million items the item table alone
is 256 MB, which each server would otherwise copy). Releases without the file use the
SavedModel's ``query`` signature.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cascade_server.artifacts.arrays import load_npz_mapped
from cascade_server.features.model_inputs import history_matrix

TWO_TOWER_DIR = "two_tower"
QUERY_WEIGHTS_FILE = "query_tower.npz"
"""The query tower's weights as arrays, inside the two-tower SavedModel's directory."""
USERS_FILE = "users.json"
USER_FEATURES_FILE = "user_features.npy"
QUERY_TOWER_ARTIFACTS = (TWO_TOWER_DIR, USERS_FILE, USER_FEATURES_FILE)
"""The release artifacts the query tower reads."""

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
        self.user_index = {user: i for i, user in enumerate(user_ids)}
        self.user_features = user_features
        self.history_length = history_length
        weights = model_dir / QUERY_WEIGHTS_FILE
        self._weights: dict[str, npt.NDArray[np.float32]] | None = None
        self._query: Any = None
        if weights.exists():
            self._weights = load_npz_mapped(weights)
        else:
            import tensorflow as tf

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
        history = history_matrix(histories, self.history_length)
        if self._weights is not None:
            return _query_tower(self._weights, users + 1, history, features)
        out = self._query(user=users + 1, history=history, user_features=features)
        embeddings: Embeddings = out["embedding"].numpy()
        return embeddings


def _query_tower(
    w: dict[str, npt.NDArray[np.float32]], users: IntArray, history: IntArray, features: IntArray
) -> Embeddings:
    """The query tower of ``offline.two_tower`` in numpy (float32, like the model)."""
    parts = [
        w["user_embedding"][users],
        _masked_mean(w["item_embedding"], history),
        _masked_mean(w["user_feature_embedding"], features),
    ]
    hidden = np.maximum(np.concatenate(parts, axis=-1) @ w["hidden_kernel"] + w["hidden_bias"], 0)
    out = hidden @ w["output_kernel"] + w["output_bias"]
    norm = np.sqrt(np.maximum((out * out).sum(axis=-1, keepdims=True), np.float32(1e-12)))
    embeddings: Embeddings = (out / norm).astype(np.float32)
    return embeddings


def _masked_mean(table: npt.NDArray[np.float32], ids: IntArray) -> npt.NDArray[np.float32]:
    mask = (ids > 0)[..., None].astype(np.float32)
    total = (table[ids] * mask).sum(axis=1)
    mean: npt.NDArray[np.float32] = total / np.maximum(mask.sum(axis=1), np.float32(1.0))
    return mean
