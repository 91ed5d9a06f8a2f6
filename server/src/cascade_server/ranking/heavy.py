"""The heavy ranker of a release: a network scoring candidates per head.

Releases store it as a TensorFlow SavedModel and, since the numpy path, also as arrays
(``weights.npz``: feature normalisation, the ReLU layers and one linear head per kind
of engagement), which serving evaluates with numpy — the same function without a
TensorFlow call (and without importing TensorFlow) per request. Releases without the
file use the SavedModel's ``score`` signature.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from cascade_server.artifacts.manifest import CorruptReleaseError

HEAVY_RANKER_DIR = "heavy_ranker"
HEAVY_WEIGHTS_FILE = "weights.npz"
"""The network as arrays, inside the heavy ranker's directory."""


class HeavyRanker:
    """Loads the network; ``predict`` returns one score per head and their mean."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        weights = path / HEAVY_WEIGHTS_FILE
        self._weights: dict[str, npt.NDArray[np.float32]] | None = None
        if weights.exists():
            try:
                with np.load(weights) as arrays:
                    self._weights = {name: arrays[name] for name in arrays.files}
            except (OSError, ValueError) as error:
                raise CorruptReleaseError(f"the heavy ranker cannot be loaded: {error}") from error
            model_columns = [str(c) for c in self._weights.pop("columns")]
            self.heads = [str(h) for h in self._weights.pop("heads")]
        else:
            model_columns = self._load_saved_model(path)
        if model_columns != columns:
            raise CorruptReleaseError(
                f"the heavy ranker expects features {model_columns}, the release has {columns}"
            )

    def _load_saved_model(self, path: Path) -> list[str]:
        import tensorflow as tf

        try:
            loaded = tf.saved_model.load(str(path))
            self._score = loaded.signatures["score"]
            columns = [c.decode() for c in loaded.columns.numpy()]
            self.heads = [h.decode() for h in loaded.heads.numpy()]
        except (OSError, ValueError, KeyError, AttributeError, tf.errors.OpError) as error:
            raise CorruptReleaseError(f"the heavy ranker cannot be loaded: {error}") from error
        self._loaded = loaded  # the signature needs its module alive
        return columns

    def predict(
        self, features: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], dict[str, npt.NDArray[np.float64]]]:
        """The mean of the heads' scores and each head's scores, for rows of ``features``."""
        if self._weights is not None:
            heads = _forward(self._weights, self.heads, features.astype(np.float32))
        else:
            out = self._score(features=features.astype(np.float32))
            heads = {name: out[name].numpy().astype(np.float64) for name in self.heads}
        return np.mean(list(heads.values()), axis=0), heads


def save_weights(
    path: Path,
    *,
    mean: npt.NDArray[np.float64],
    std: npt.NDArray[np.float64],
    hidden: Sequence[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]],
    heads: dict[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]],
    columns: Sequence[str],
) -> None:
    """Write the network as arrays (see the module docstring)."""
    arrays: dict[str, npt.NDArray[Any]] = {
        "mean": mean.astype(np.float32),
        "std": std.astype(np.float32),
        "columns": np.array(list(columns)),
        "heads": np.array(list(heads)),
    }
    for i, (kernel, bias) in enumerate(hidden):
        arrays[f"hidden_{i}_kernel"], arrays[f"hidden_{i}_bias"] = kernel, bias
    for name, (kernel, bias) in heads.items():
        arrays[f"head_{name}_kernel"], arrays[f"head_{name}_bias"] = kernel, bias
    cast(Any, np.savez)(path, **arrays)  # the names are data: numpy's stub cannot type them


def _forward(
    w: dict[str, npt.NDArray[np.float32]], heads: list[str], features: npt.NDArray[np.float32]
) -> dict[str, npt.NDArray[np.float64]]:
    hidden = (features - w["mean"]) / w["std"]
    layer = 0
    while f"hidden_{layer}_kernel" in w:
        hidden = np.maximum(hidden @ w[f"hidden_{layer}_kernel"] + w[f"hidden_{layer}_bias"], 0)
        layer += 1
    return {
        name: (hidden @ w[f"head_{name}_kernel"] + w[f"head_{name}_bias"])[:, 0].astype(np.float64)
        for name in heads
    }
