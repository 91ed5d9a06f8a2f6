"""The heavy ranker: a multi-task TensorFlow network re-scoring the light ranker's top N.

It reads the same feature columns as the light ranker (standardised inside the
model) through a small MLP with one output head per kind of positive engagement in
the training data (for example ``click``, ``save``; ``rate`` for rating data). Each
head is trained listwise: a softmax over the group's candidates, with the held-out
item as the positive when the user's engagement with it included that head's kind.
The served score is the mean of the heads' logits. The model is exported as a
SavedModel with one ``score`` signature, which ``ranking.heavy`` loads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cascade_server.ranking.heavy import HEAVY_WEIGHTS_FILE, save_weights
from cascade_server.storage.tables import EVENT_KINDS

FloatCube = npt.NDArray[np.float64]


@dataclass(frozen=True)
class HeavyRankerConfig:
    """Architecture and training knobs."""

    hidden: tuple[int, ...] = (64, 32)
    epochs: int = 6
    batch_groups: int = 128
    learning_rate: float = 0.002
    seed: int = 42


@dataclass(frozen=True)
class HeavyRankerReport:
    """The heads trained and the loss per epoch."""

    heads: list[str]
    losses: list[float]
    seconds: float


def head_labels(kinds: npt.NDArray[np.int64]) -> tuple[list[str], npt.NDArray[np.float64]]:
    """Heads (the positive kinds present) and, per group, whether its positive had each kind.

    ``kinds`` holds each group's held-out pair's bit mask of kinds.
    """
    present = [k for k, name in enumerate(EVENT_KINDS) if np.any(kinds & (1 << k))]
    labels = np.stack([(kinds >> k) & 1 for k in present], axis=1).astype(np.float64)
    return [EVENT_KINDS[k] for k in present], labels


def train_heavy_ranker(
    x: FloatCube,
    head_positive: npt.NDArray[np.float64],
    heads: list[str],
    columns: list[str],
    config: HeavyRankerConfig,
    path: Path,
    progress: Callable[[str, float], None],
) -> HeavyRankerReport:
    """Train on groups ``x`` [groups, candidates, features] whose last candidate is the
    held-out item; ``head_positive`` [groups, heads] says which heads it is positive for."""
    import tensorflow as tf

    started = time.perf_counter()
    tf.keras.utils.set_random_seed(config.seed)
    n_features = x.shape[2]
    flat = x.reshape(-1, n_features)
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    std[std == 0] = 1.0

    inputs = tf.keras.Input(shape=(n_features,), name="features")
    hidden = (inputs - mean.astype(np.float32)) / std.astype(np.float32)
    for width in config.hidden:
        hidden = tf.keras.layers.Dense(width, activation="relu")(hidden)
    outputs = {name: tf.keras.layers.Dense(1, name=name)(hidden)[:, 0] for name in heads}
    model = tf.keras.Model(inputs, outputs)
    optimizer = tf.keras.optimizers.Adam(config.learning_rate)
    groups, candidates = x.shape[0], x.shape[1]
    target = np.zeros(candidates, dtype=np.float32)
    target[-1] = 1.0

    @tf.function(reduce_retracing=True)  # type: ignore[untyped-decorator]
    def step(batch: Any, positive: Any) -> Any:
        with tf.GradientTape() as tape:
            scores = model(tf.reshape(batch, (-1, n_features)), training=True)
            loss = 0.0
            for h, name in enumerate(heads):
                logits = tf.reshape(scores[name], (-1, candidates))
                per_group = tf.nn.softmax_cross_entropy_with_logits(
                    labels=tf.broadcast_to(target, tf.shape(logits)), logits=logits
                )
                weight = positive[:, h]
                loss += tf.reduce_sum(per_group * weight) / tf.maximum(tf.reduce_sum(weight), 1.0)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    rng = np.random.default_rng(config.seed)
    losses: list[float] = []
    for epoch in range(config.epochs):
        order = rng.permutation(groups)
        total, steps = 0.0, 0
        for start in range(0, groups, config.batch_groups):
            chosen = order[start : start + config.batch_groups]
            total += float(
                step(
                    tf.constant(x[chosen], tf.float32),
                    tf.constant(head_positive[chosen], tf.float32),
                )
            )
            steps += 1
        losses.append(total / max(steps, 1))
        progress("heavy ranker", (epoch + 1) / config.epochs)

    export(model, heads, n_features, columns, path)
    hidden_layers = [
        layer
        for layer in model.layers
        if isinstance(layer, tf.keras.layers.Dense) and layer.name not in heads
    ]
    save_weights(
        path / HEAVY_WEIGHTS_FILE,
        mean=mean,
        std=std,
        hidden=[(layer.kernel.numpy(), layer.bias.numpy()) for layer in hidden_layers],
        heads={
            name: (model.get_layer(name).kernel.numpy(), model.get_layer(name).bias.numpy())
            for name in heads
        },
        columns=columns,
    )
    return HeavyRankerReport(heads, losses, round(time.perf_counter() - started, 1))


def export(model: Any, heads: list[str], n_features: int, columns: list[str], path: Path) -> None:
    """Save the network with a ``score`` signature: features → one score per head."""
    import tensorflow as tf

    score = tf.function(
        lambda features: {name: value for name, value in model(features).items()},
        input_signature=[tf.TensorSpec([None, n_features], tf.float32, name="features")],
    )
    module = tf.Module()
    module.model = model
    module.columns = tf.Variable(columns, trainable=False)
    module.heads = tf.Variable(heads, trainable=False)
    tf.saved_model.save(module, str(path), signatures={"score": score.get_concrete_function()})
