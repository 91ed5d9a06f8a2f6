"""The heavy ranker of a release: a TensorFlow SavedModel scoring candidates per head."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from cascade_server.artifacts.manifest import CorruptReleaseError

HEAVY_RANKER_DIR = "heavy_ranker"


class HeavyRanker:
    """Loads the network; ``predict`` returns one score per head and their mean."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        import tensorflow as tf

        try:
            loaded = tf.saved_model.load(str(path))
            self._score = loaded.signatures["score"]
            model_columns = [c.decode() for c in loaded.columns.numpy()]
            self.heads = [h.decode() for h in loaded.heads.numpy()]
        except (OSError, ValueError, KeyError, AttributeError, tf.errors.OpError) as error:
            raise CorruptReleaseError(f"the heavy ranker cannot be loaded: {error}") from error
        if model_columns != columns:
            raise CorruptReleaseError(
                f"the heavy ranker expects features {model_columns}, the release has {columns}"
            )
        self._loaded = loaded  # the signature needs its module alive

    def predict(
        self, features: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], dict[str, npt.NDArray[np.float64]]]:
        """The mean of the heads' scores and each head's scores, for rows of ``features``."""
        out = self._score(features=features.astype(np.float32))
        heads = {name: out[name].numpy().astype(np.float64) for name in self.heads}
        return np.mean(list(heads.values()), axis=0), heads
