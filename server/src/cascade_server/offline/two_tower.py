"""The two-tower retrieval model: training with in-batch sampled softmax and log-Q correction.

User tower: user id embedding, mean of the embeddings of the user's recent items
(newest ``history_length``; the target item is masked out during training) and the
mean of the user's attribute embeddings, through a small MLP. Item tower: item id
embedding (shared with the history), mean category embedding and creator
embedding, through a small MLP. Both outputs are L2-normalised, so the score is a
cosine. Training treats the other items of a batch as negatives and subtracts the
log of each item's sampling probability (its share of the training pairs) from its
logit, so popular items are not over-penalised (Yi et al., RecSys 2019).

The trained towers are exported as one SavedModel with two serving signatures,
``query`` and ``candidate``, which ``retrieval.two_tower`` loads.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cascade_server.features.model_inputs import history_matrix
from cascade_server.features.query_tower import QUERY_WEIGHTS_FILE
from cascade_server.offline.interactions import (
    MAX_ITEM_CATEGORIES,
    MAX_USER_FEATURES,
    Interactions,
)

FloatMatrix = npt.NDArray[np.float32]


@dataclass(frozen=True)
class TwoTowerConfig:
    """Architecture and training knobs."""

    embedding_dim: int = 64
    history_length: int = 30
    epochs: int = 3
    batch_size: int = 2048
    learning_rate: float = 0.003
    temperature: float = 0.07
    seed: int = 42


@dataclass(frozen=True)
class TwoTowerResult:
    """The exported model's location, item embeddings and training log."""

    model_dir: Path
    item_embeddings: FloatMatrix
    losses: list[float]
    seconds: float


def train_two_tower(
    data: Interactions,
    histories: list[npt.NDArray[np.int64]],
    config: TwoTowerConfig,
    out_dir: Path,
    *,
    on_epoch: Callable[[int, float], None] | None = None,
) -> TwoTowerResult:
    """Train on ``data`` (each pair's user history comes from ``histories``) and export."""
    import tensorflow as tf

    started = time.perf_counter()
    tf.keras.utils.set_random_seed(config.seed)
    model = _TwoTower(data, config)
    optimizer = tf.keras.optimizers.Adam(config.learning_rate)
    counts = np.bincount(data.items, minlength=data.n_items).astype(np.float64)
    log_q = tf.constant(np.log(np.maximum(counts, 1) / max(len(data.items), 1)), tf.float32)
    user_histories = tf.constant(history_matrix(histories, config.history_length))
    user_features = tf.constant(data.user_features)
    item_categories = tf.constant(data.item_categories)
    item_creators = tf.constant(data.item_creators)

    @tf.function(reduce_retracing=True)  # type: ignore[untyped-decorator]
    def step(users: Any, items: Any) -> Any:
        history = tf.gather(user_histories, users)
        history = tf.where(history == tf.expand_dims(items + 1, 1), tf.zeros_like(history), history)
        with tf.GradientTape() as tape:
            queries = model.query(users + 1, history, tf.gather(user_features, users))
            candidates = model.candidate(
                items + 1, tf.gather(item_categories, items), tf.gather(item_creators, items)
            )
            logits = tf.matmul(queries, candidates, transpose_b=True) / config.temperature
            logits -= tf.expand_dims(tf.gather(log_q, items), 0)
            same = tf.equal(tf.expand_dims(items, 1), tf.expand_dims(items, 0))
            accidental = tf.logical_and(
                same, tf.logical_not(tf.eye(tf.shape(items)[0], dtype=tf.bool))
            )
            logits = tf.where(accidental, tf.fill(tf.shape(logits), -1e9), logits)
            labels = tf.range(tf.shape(items)[0])
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            )
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    rng = np.random.default_rng(config.seed)
    losses: list[float] = []
    steps = max(1, math.ceil(len(data.items) / config.batch_size))
    for epoch in range(config.epochs):
        order = rng.permutation(len(data.items))
        total = 0.0
        for s in range(steps):
            batch = order[s * config.batch_size : (s + 1) * config.batch_size]
            total += float(step(tf.constant(data.users[batch]), tf.constant(data.items[batch])))
        losses.append(total / steps)
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])

    model_dir = out_dir
    export(model, config, model_dir)
    embeddings = item_embeddings(model, data)
    return TwoTowerResult(model_dir, embeddings, losses, time.perf_counter() - started)


def item_embeddings(model: Any, data: Interactions, batch: int = 8192) -> FloatMatrix:
    """Every item's candidate-tower embedding, in item order."""
    import tensorflow as tf

    parts = []
    for start in range(0, data.n_items, batch):
        items = np.arange(start, min(start + batch, data.n_items), dtype=np.int64)
        parts.append(
            model.candidate(
                tf.constant(items + 1),
                tf.constant(data.item_categories[items]),
                tf.constant(data.item_creators[items]),
            ).numpy()
        )
    if not parts:
        return np.zeros((0, model.config.embedding_dim), dtype=np.float32)
    return np.concatenate(parts).astype(np.float32)


def export(model: Any, config: TwoTowerConfig, path: Path) -> None:
    """Save both towers as one SavedModel with ``query`` and ``candidate`` signatures, and
    the query tower's weights as arrays (``query_tower.npz``), which serving evaluates
    with numpy: the same function without a TensorFlow call per request."""
    import tensorflow as tf

    query = tf.function(
        lambda user, history, user_features: {
            "embedding": model.query(user, history, user_features)
        },
        input_signature=[
            tf.TensorSpec([None], tf.int64, name="user"),
            tf.TensorSpec([None, config.history_length], tf.int64, name="history"),
            tf.TensorSpec([None, MAX_USER_FEATURES], tf.int64, name="user_features"),
        ],
    )
    candidate = tf.function(
        lambda item, categories, creator: {"embedding": model.candidate(item, categories, creator)},
        input_signature=[
            tf.TensorSpec([None], tf.int64, name="item"),
            tf.TensorSpec([None, MAX_ITEM_CATEGORIES], tf.int64, name="categories"),
            tf.TensorSpec([None], tf.int64, name="creator"),
        ],
    )
    module = tf.Module()
    module.model = model
    module.config = tf.Variable(str(asdict(config)), trainable=False)
    tf.saved_model.save(
        module,
        str(path),
        signatures={
            "query": query.get_concrete_function(),
            "candidate": candidate.get_concrete_function(),
        },
    )
    first, second = model.query_mlp.layers
    np.savez(
        path / QUERY_WEIGHTS_FILE,
        user_embedding=model.user_embedding.embeddings.numpy(),
        item_embedding=model.item_embedding.embeddings.numpy(),
        user_feature_embedding=model.user_feature_embedding.embeddings.numpy(),
        hidden_kernel=first.kernel.numpy(),
        hidden_bias=first.bias.numpy(),
        output_kernel=second.kernel.numpy(),
        output_bias=second.bias.numpy(),
    )


def _TwoTower(data: Interactions, config: TwoTowerConfig) -> Any:
    """Build the Keras model lazily so importing this module does not import TensorFlow."""
    import tensorflow as tf

    dim = config.embedding_dim

    def masked_mean(embeddings: Any, ids: Any) -> Any:
        mask = tf.cast(tf.expand_dims(ids > 0, -1), tf.float32)
        return tf.reduce_sum(embeddings * mask, 1) / tf.maximum(tf.reduce_sum(mask, 1), 1.0)

    class TwoTower(tf.keras.Model):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.config = config
            self.user_embedding = tf.keras.layers.Embedding(data.n_users + 1, dim)
            self.item_embedding = tf.keras.layers.Embedding(data.n_items + 1, dim)
            self.user_feature_embedding = tf.keras.layers.Embedding(
                data.user_feature_values.size, dim
            )
            self.category_embedding = tf.keras.layers.Embedding(data.categories.size, dim)
            self.creator_embedding = tf.keras.layers.Embedding(data.creators.size, dim)
            self.query_mlp = tf.keras.Sequential(
                [tf.keras.layers.Dense(2 * dim, activation="relu"), tf.keras.layers.Dense(dim)]
            )
            self.candidate_mlp = tf.keras.Sequential(
                [tf.keras.layers.Dense(2 * dim, activation="relu"), tf.keras.layers.Dense(dim)]
            )

        def query(self, user: Any, history: Any, user_features: Any) -> Any:
            parts = [
                self.user_embedding(user),
                masked_mean(self.item_embedding(history), history),
                masked_mean(self.user_feature_embedding(user_features), user_features),
            ]
            return tf.math.l2_normalize(self.query_mlp(tf.concat(parts, -1)), -1)

        def candidate(self, item: Any, categories: Any, creator: Any) -> Any:
            parts = [
                self.item_embedding(item),
                masked_mean(self.category_embedding(categories), categories),
                self.creator_embedding(creator),
            ]
            return tf.math.l2_normalize(self.candidate_mlp(tf.concat(parts, -1)), -1)

    return TwoTower()
