"""Train the light ranker: LightGBM LambdaRank over base-model features, stacked honestly.

The base models must not have seen the items the ranker learns to rank, so:

1. hold out one random item per user (users with at least two items);
2. fit the base models on the remaining pairs, the two-tower model among them;
3. for each user, rank group = ``negatives`` items the user never engaged with,
   sampled uniformly (as the NCF protocol samples its test negatives), and the
   held-out item;
   features come from the base models of step 2 and the user's remaining items;
4. fit LambdaRank on the groups, a share of users kept aside for early stopping and
   for the validation metrics reported with the release;
5. refit the base models on all pairs: these are what the release serves (the
   two-tower feature uses the retrieval model, already trained on all pairs).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from cascade_server.features.query_tower import QueryTower
from cascade_server.offline import base_models
from cascade_server.offline.heavy_ranker import (
    HeavyRankerConfig,
    HeavyRankerReport,
    head_labels,
    train_heavy_ranker,
)
from cascade_server.offline.interactions import Interactions
from cascade_server.offline.two_tower import TwoTowerConfig, train_two_tower
from cascade_server.ranking.features import (
    CategoryAffinityFeature,
    Feature,
    FeatureSet,
    ItemValueFeature,
    TwoTowerFeature,
    UserActivityFeature,
    Users,
    item_rows,
)
from cascade_server.ranking.heavy import HeavyRanker
from cascade_server.ranking.models import after_heavy

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class TwoTowerInputs:
    """What the two-tower score feature needs: how the retrieval model was trained (to
    train its held-out twin the same way) and that model's item embeddings (served)."""

    config: TwoTowerConfig
    item_embeddings: npt.NDArray[np.floating]


@dataclass(frozen=True)
class BaseModelConfig:
    """Hyperparameters of the base models (chosen on a validation split of ML-1M)."""

    ials_factors: int = 64
    ials_alpha0: float = 0.1
    ials_lambda: float = 0.01
    ials_iterations: int = 8
    ease_lambda: float = 1000.0
    ease_k: int = 400
    knn_shrink: float = 10.0
    knn_k: int = 100
    rp3_alpha: float = 1.0
    rp3_beta: float = 0.6
    rp3_k: int = 200
    seed: int = 42


@dataclass(frozen=True)
class RankerConfig:
    """How ranker training groups are built and LightGBM's parameters."""

    base: BaseModelConfig = field(default_factory=BaseModelConfig)
    negatives: int = 49
    validation_share: float = 0.1
    num_leaves: int = 15
    learning_rate: float = 0.05
    max_rounds: int = 600
    early_stopping_rounds: int = 40
    min_data_in_leaf: int = 50
    feature_fraction: float = 0.9
    truncation_level: int = 20
    heavy: HeavyRankerConfig = field(default_factory=HeavyRankerConfig)
    heavy_top_n: int = 50
    seed: int = 42


@dataclass(frozen=True)
class RankerReport:
    """What training measured, on the validation users' groups."""

    groups: int
    validation_groups: int
    rounds: int
    validation: dict[str, dict[str, float]]
    """HR@10 and NDCG@10 of the ranker and of each feature alone."""
    importance: dict[str, float]
    seconds: float
    heavy: HeavyRankerReport | None = None


def fit_features(
    data: Interactions,
    users: IntArray,
    items: IntArray,
    config: BaseModelConfig,
    item_embeddings: npt.NDArray[np.floating] | None = None,
) -> FeatureSet:
    """Fit every base model on the (user, item) pairs and wrap them as features (with a
    two-tower score over ``item_embeddings`` when given)."""
    x = base_models.interaction_matrix(users, items, data.n_users, data.n_items)
    gram = base_models.cooccurrence(x)
    features: list[Feature] = [
        base_models.ials(
            x,
            factors=config.ials_factors,
            alpha0=config.ials_alpha0,
            lam=config.ials_lambda,
            iterations=config.ials_iterations,
            seed=config.seed,
        ),
        base_models.item_knn(x, shrink=config.knn_shrink, k=config.knn_k, gram=gram),
        base_models.rp3beta(x, alpha=config.rp3_alpha, beta=config.rp3_beta, k=config.rp3_k),
    ]
    if isinstance(gram, np.ndarray):
        features.append(base_models.ease(x, lam=config.ease_lambda, k=config.ease_k, gram=gram))
    if item_embeddings is not None:
        features.append(TwoTowerFeature("two_tower", item_rows(item_embeddings)))
    counts = np.asarray(x.sum(axis=0)).ravel()
    features += [
        ItemValueFeature("item", np.log1p(counts)[:, None], ("log_popularity",)),
        CategoryAffinityFeature("category_affinity", data.item_categories),
        UserActivityFeature("user_activity"),
    ]
    return FeatureSet(features)


def train_rankers(
    data: Interactions,
    config: RankerConfig,
    heavy_path: Path | None,
    progress: Callable[[str, float], None],
    two_tower: TwoTowerInputs | None = None,
) -> tuple[FeatureSet, lgb.Booster, RankerReport]:
    """Fit the light ranker (and, given ``heavy_path``, the heavy ranker there) on held-out
    groups; return the full-data features and the booster. Given ``two_tower``, the
    features include the two-tower score."""
    started = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    histories = data.user_items()
    holdout = _holdout(histories, data.n_items, rng)
    eligible = np.flatnonzero(holdout >= 0)
    kept = [h[h != holdout[u]] for u, h in enumerate(histories)]
    queries = None
    held_out_embeddings = None
    if two_tower is not None:
        held_out_embeddings, queries = _held_out_two_tower(
            data, holdout, kept, eligible, two_tower.config, progress
        )
    progress("base models", 0.0)
    reduced_users = np.concatenate([np.full(len(h), u) for u, h in enumerate(kept)])
    features = fit_features(
        data, reduced_users, np.concatenate(kept), config.base, held_out_embeddings
    )
    progress("base models", 1.0)

    candidates = _groups(histories, holdout, eligible, data.n_items, config.negatives, rng)
    x = _compute_in_batches(
        features, [kept[u] for u in eligible], candidates, data.n_items, progress, queries
    )
    labels = np.zeros(candidates.shape)
    labels[:, -1] = 1.0
    order = rng.permutation(len(eligible))
    n_valid = max(1, int(len(eligible) * config.validation_share))
    valid, train = order[:n_valid], order[n_valid:]
    booster = _fit(x, labels, train, valid, features.columns, config)
    progress("light ranker", 1.0)

    light = np.asarray(booster.predict(_flat(x[valid])), dtype=np.float64).reshape(len(valid), -1)
    validation = {"light_ranker": _metrics(light)}
    heavy_report = None
    if heavy_path is not None:
        kinds = _pair_kinds(data, eligible, holdout[eligible])
        heads, positive = head_labels(kinds)
        heavy_report = train_heavy_ranker(
            x[train], positive[train], heads, features.columns, config.heavy, heavy_path, progress
        )
        heavy = HeavyRanker(heavy_path, features.columns)
        validation["light+heavy"] = _metrics(_light_then_heavy(x[valid], light, heavy, config))
    for position, column in enumerate(features.columns):
        validation[column] = _metrics(x[valid][:, :, position])
    importance = dict(
        zip(features.columns, booster.feature_importance("gain").tolist(), strict=True)
    )
    full_users = np.concatenate([np.full(len(h), u) for u, h in enumerate(histories)])
    progress("refit", 0.0)
    served = fit_features(
        data,
        full_users,
        np.concatenate(histories),
        config.base,
        None if two_tower is None else two_tower.item_embeddings,
    )
    progress("refit", 1.0)
    report = RankerReport(
        groups=len(train),
        validation_groups=len(valid),
        rounds=booster.best_iteration or booster.current_iteration(),
        validation=validation,
        importance={k: round(v, 1) for k, v in importance.items()},
        seconds=round(time.perf_counter() - started, 1),
        heavy=heavy_report,
    )
    return served, booster, report


def _held_out_two_tower(
    data: Interactions,
    holdout: IntArray,
    kept: Sequence[IntArray],
    eligible: IntArray,
    config: TwoTowerConfig,
    progress: Callable[[str, float], None],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Train a two-tower model without the held-out pairs, as retrieval trained its model
    on all of them; return its item embeddings and the eligible users' query embeddings
    from their remaining items."""
    held_out = data.items == holdout[data.users]
    reduced = replace(
        data,
        users=data.users[~held_out],
        items=data.items[~held_out],
        timestamps=data.timestamps[~held_out],
        kinds=data.kinds[~held_out],
    )
    with tempfile.TemporaryDirectory(prefix="cascade-two-tower-") as scratch:
        result = train_two_tower(
            reduced,
            list(kept),
            config,
            Path(scratch) / "model",
            on_epoch=lambda epoch, _: progress("two-tower (held out)", (epoch + 1) / config.epochs),
        )
        tower = QueryTower(result.model_dir, data.user_features, config.history_length)
        queries = [
            tower.embeddings(eligible[s : s + 4096], [kept[u] for u in eligible[s : s + 4096]])
            for s in range(0, len(eligible), 4096)
        ]
    return result.item_embeddings, np.concatenate(queries)


def _pair_kinds(data: Interactions, users: IntArray, items: IntArray) -> IntArray:
    """The kinds bit mask of each (user, item) pair."""
    keys = data.users * data.n_items + data.items
    order = np.argsort(keys)
    positions = order[np.searchsorted(keys[order], users * data.n_items + items)]
    kinds: IntArray = data.kinds[positions]
    return kinds


def _light_then_heavy(
    x: npt.NDArray[np.float64],
    light: npt.NDArray[np.float64],
    heavy: HeavyRanker,
    config: RankerConfig,
) -> npt.NDArray[np.float64]:
    """Group scores as served in light_heavy mode: heavy re-scores each light top N."""
    scores = np.empty_like(light)
    for g in range(len(light)):
        top = np.argsort(-light[g], kind="stable")[: config.heavy_top_n]
        heavy_scores = np.full(light.shape[1], np.nan)
        heavy_scores[top] = heavy.predict(x[g][top])[0]
        scores[g] = after_heavy(light[g], heavy_scores)
    return scores


def _holdout(histories: Sequence[IntArray], n_items: int, rng: np.random.Generator) -> IntArray:
    """One random item per user with at least two items and some unseen item; else -1."""
    return np.array(
        [int(rng.choice(h)) if 2 <= len(h) < n_items else -1 for h in histories],
        dtype=np.int64,
    )


def _groups(
    histories: Sequence[IntArray],
    holdout: IntArray,
    eligible: IntArray,
    n_items: int,
    negatives: int,
    rng: np.random.Generator,
) -> IntArray:
    """[users, negatives + 1]: sampled unseen items, then each user's held-out item.

    Negatives are drawn without replacement from the items the user never engaged
    with (with replacement only when fewer than ``negatives`` such items exist). The
    held-out item comes last so that ties never favour it: ranking metrics and
    LightGBM's early stopping both see tied scores as misses.
    """
    groups = np.zeros((len(eligible), 1 + negatives), dtype=np.int64)
    for row, user in enumerate(eligible):
        seen = np.sort(histories[user])
        pool = n_items - len(seen)
        picks = rng.choice(pool, size=negatives, replace=pool < negatives)
        # Map positions in the pool of unseen items onto item ids that skip ``seen``.
        shifted = seen - np.arange(len(seen))
        groups[row, :-1] = picks + np.searchsorted(shifted, picks, side="right")
        groups[row, -1] = holdout[user]
    return groups


def _compute_in_batches(
    features: FeatureSet,
    histories: Sequence[IntArray],
    candidates: IntArray,
    n_items: int,
    progress: Callable[[str, float], None],
    queries: npt.NDArray[np.float32] | None = None,
    batch: int = 512,
) -> npt.NDArray[np.float64]:
    parts = []
    # Per-user k-by-k solves: BLAS threads only add overhead.
    with threadpool_limits(limits=1, user_api="blas"):
        for start in range(0, len(histories), batch):
            users = Users.of(
                histories[start : start + batch],
                n_items,
                None if queries is None else queries[start : start + batch].astype(np.float64),
            )
            parts.append(features.compute(users, candidates[start : start + batch]))
            progress("features", min(1.0, (start + batch) / max(1, len(histories))))
    return np.concatenate(parts) if parts else np.zeros((0, candidates.shape[1], 0))


def _flat(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return x.reshape(-1, x.shape[2])


def _fit(
    x: npt.NDArray[np.float64],
    labels: npt.NDArray[np.float64],
    train: IntArray,
    valid: IntArray,
    columns: list[str],
    config: RankerConfig,
) -> lgb.Booster:
    group = x.shape[1]
    params = {
        "objective": "lambdarank",
        "metric": "ndcg",
        "eval_at": [10],
        "lambdarank_truncation_level": config.truncation_level,
        "num_leaves": config.num_leaves,
        "learning_rate": config.learning_rate,
        "min_data_in_leaf": config.min_data_in_leaf,
        "feature_fraction": config.feature_fraction,
        "seed": config.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 2,
        "verbose": -1,
    }
    train_set = lgb.Dataset(
        _flat(x[train]), labels[train].ravel(), group=[group] * len(train), feature_name=columns
    )
    valid_set = lgb.Dataset(
        _flat(x[valid]), labels[valid].ravel(), group=[group] * len(valid), reference=train_set
    )
    return lgb.train(
        params,
        train_set,
        num_boost_round=config.max_rounds,
        valid_sets=[valid_set],
        callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False)],
    )


def _metrics(scores: npt.NDArray[np.float64], k: int = 10) -> dict[str, float]:
    """HR@k and NDCG@k when the last column of each row is the positive (ties: misses)."""
    rank = (scores[:, :-1] >= scores[:, -1:]).sum(axis=1)
    hits = rank < k
    ndcg = np.where(hits, np.log(2) / np.log(rank + 2), 0.0)
    return {f"hr@{k}": round(float(hits.mean()), 4), f"ndcg@{k}": round(float(ndcg.mean()), 4)}
