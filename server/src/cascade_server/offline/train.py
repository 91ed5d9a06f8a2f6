"""The offline steps: train retrieval, build the index, train the rankers, publish."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from cascade_server.artifacts.manifest import Manifest
from cascade_server.artifacts.registry import ReleaseRegistry
from cascade_server.blending.policy import POLICY_FILE, BlendingPolicies
from cascade_server.errors import CascadeError
from cascade_server.features import query_tower
from cascade_server.features.engagement import ACTIVE
from cascade_server.features.query_tower import QueryTower
from cascade_server.features.release_items import ITEMS_FILE
from cascade_server.logs import get_logger
from cascade_server.offline.build import Build, new_release_id
from cascade_server.offline.index import IndexConfig, IndexReport, build_index
from cascade_server.offline.interactions import Interactions, positive_interactions
from cascade_server.offline.ranker import (
    RankerConfig,
    RankerReport,
    TwoTowerInputs,
    train_rankers,
)
from cascade_server.offline.two_tower import TwoTowerConfig, train_two_tower
from cascade_server.ranking import models as ranking_files
from cascade_server.ranking.heavy import HEAVY_RANKER_DIR
from cascade_server.retrieval import models as retrieval_files
from cascade_server.retrieval.clustered_index import CLUSTERS_FILE
from cascade_server.storage.engagement_reader import EngagementData, read_engagement

_log = get_logger(__name__)

MIN_PAIRS = 100
MIN_USERS = 10
MIN_ITEMS = 10
RECALL_QUERIES = 500

Progress = Callable[[str, float], None]
"""Called with a step's name and its completed fraction (0..1)."""


class NotEnoughDataError(CascadeError):
    """The database holds too little engagement to train on."""

    status = "FAILED_PRECONDITION"
    reason = "NOT_ENOUGH_DATA"


def load_training_data(engine: sa.Engine) -> tuple[EngagementData, Interactions]:
    """The data to train on, or NotEnoughDataError saying what is missing."""
    data = read_engagement(engine, with_metadata=True)
    interactions = positive_interactions(data)
    users = len(np.unique(interactions.users))
    items = len(np.unique(interactions.items))
    if len(interactions.items) < MIN_PAIRS or users < MIN_USERS or items < MIN_ITEMS:
        raise NotEnoughDataError(
            f"training needs at least {MIN_PAIRS} positive engagements from {MIN_USERS} users "
            f"on {MIN_ITEMS} items; the database has {len(interactions.items)} from {users} "
            f"users on {items} items. Load data with `cascade import` or `cascade demo-data`"
        )
    return data, interactions


def train_retrieval(
    engine: sa.Engine, build_dir: Path, config: TwoTowerConfig, progress: Progress
) -> Build:
    """Start a build: id maps, user features, the two-tower model and item embeddings."""
    data, interactions = load_training_data(engine)
    build = Build.start(build_dir, data)
    (build.path / ITEMS_FILE).write_text(json.dumps(list(data.item_ids)))
    (build.path / query_tower.USERS_FILE).write_text(json.dumps(list(data.user_ids)))
    np.save(build.path / query_tower.USER_FEATURES_FILE, interactions.user_features)
    result = train_two_tower(
        interactions,
        interactions.user_items(),
        config,
        build.path / query_tower.TWO_TOWER_DIR,
        on_epoch=lambda epoch, loss: progress("two-tower", (epoch + 1) / config.epochs),
    )
    np.save(build.path / retrieval_files.ITEM_EMBEDDINGS_FILE, result.item_embeddings)
    build.record(
        "two_tower",
        config,
        {
            "losses": result.losses,
            "seconds": round(result.seconds, 1),
            "pairs": len(interactions.items),
        },
    )
    return build


def _retrieval_build(
    engine: sa.Engine, build_dir: Path
) -> tuple[Build, EngagementData, Interactions]:
    """The build after `cascade train retrieval`, and the database's training data (which
    must be the data the build started from)."""
    build = Build(build_dir)
    build.require(
        retrieval_files.ITEM_EMBEDDINGS_FILE,
        query_tower.TWO_TOWER_DIR,
        step="cascade train retrieval",
    )
    data, interactions = load_training_data(engine)
    build.require_same_data(data)
    return build, data, interactions


def build_item_index(engine: sa.Engine, build_dir: Path, config: IndexConfig) -> IndexReport:
    """Index the build's item embeddings (active items only); measure recall on user queries."""
    build, data, interactions = _retrieval_build(engine, build_dir)
    history_length = int(build.info().config["two_tower"]["history_length"])
    histories = interactions.user_items()
    users = np.random.default_rng(config.seed).permutation(interactions.n_users)[:RECALL_QUERIES]
    queries = QueryTower.of_release(build.path, history_length).embeddings(
        users, [histories[u] for u in users]
    )
    report = build_index(
        np.load(build.path / retrieval_files.ITEM_EMBEDDINGS_FILE),
        data.item_status == ACTIVE,
        build.path / retrieval_files.INDEX_FILE,
        config,
        clusters_path=build.path / CLUSTERS_FILE,
        queries=queries,
    )
    # The servers search as the build chose: the search_k and probes tuned (or given), by
    # Annoy, the clustered index or exact search.
    chosen = dataclasses.replace(
        config,
        search_k=report.search_k,
        search=report.search,
        clusters=report.clusters,
        probes=report.probes,
    )
    build.record("index", chosen, report)
    return report


def publish(build_dir: Path, registry: ReleaseRegistry, policies: BlendingPolicies) -> Manifest:
    """Publish the build, with the policy file ``policies`` came from, as the active release."""
    build = Build(build_dir)
    build.info()
    build.require(retrieval_files.INDEX_FILE, step="cascade build-index")
    with registry.staging() as staging:
        shutil.copytree(build.path, staging)
        (staging / POLICY_FILE).write_text(policies.text)
        Build(staging).manifest(new_release_id())
        return registry.publish(staging)


def train_ranker(
    engine: sa.Engine, build_dir: Path, config: RankerConfig, progress: Progress
) -> RankerReport:
    """Add the ranking features and the light and heavy rankers to the build."""
    build, _, interactions = _retrieval_build(engine, build_dir)
    two_tower = TwoTowerInputs(
        TwoTowerConfig(**build.info().config["two_tower"]),
        np.load(build.path / retrieval_files.ITEM_EMBEDDINGS_FILE),
    )
    heavy_path = build.path / HEAVY_RANKER_DIR
    shutil.rmtree(heavy_path, ignore_errors=True)
    features, booster, report = train_rankers(interactions, config, heavy_path, progress, two_tower)
    features.save(build.path / ranking_files.FEATURES_DIR)
    (build.path / ranking_files.LEGACY_FEATURES_FILE).unlink(missing_ok=True)
    booster.save_model(str(build.path / ranking_files.LIGHT_RANKER_FILE))
    build.record("ranker", config, report)
    return report
