"""The offline pipeline on the small demo data: train, index, publish, load, serve candidates."""

import gc
import shutil
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest
import sqlalchemy as sa
from support.engagement import FixedHolder

from cascade_server.artifacts.manifest import CorruptReleaseError, read_verified
from cascade_server.artifacts.registry import ReleaseRegistry
from cascade_server.blending import release as blending_files
from cascade_server.blending.policy import POLICY_FILE, BlendingPolicies
from cascade_server.blending.release import BlendingReleaseLoader
from cascade_server.features.engagement import SignalConfig, build_snapshot
from cascade_server.features.id_positions import id_positions
from cascade_server.features.query_tower import (
    QUERY_WEIGHTS_FILE,
    TWO_TOWER_DIR,
    USER_FEATURES_FILE,
    USERS_FILE,
    QueryTower,
)
from cascade_server.offline.build import BuildError
from cascade_server.offline.index import IndexConfig
from cascade_server.offline.policy_release import publish_policy
from cascade_server.offline.ranker import RankerConfig
from cascade_server.offline.train import (
    NotEnoughDataError,
    build_item_index,
    publish,
    train_ranker,
    train_retrieval,
)
from cascade_server.offline.two_tower import TwoTowerConfig
from cascade_server.pipeline.components import RetrievalQuery
from cascade_server.pipeline.types import RequestContext
from cascade_server.ranking import models as ranking_files
from cascade_server.ranking.features import FeatureSet, Users
from cascade_server.ranking.heavy import HEAVY_RANKER_DIR, HEAVY_WEIGHTS_FILE, HeavyRanker
from cascade_server.ranking.models import LearnedRanker
from cascade_server.retrieval import models as retrieval_files
from cascade_server.retrieval.models import RetrievalModels, retrieval_artifacts
from cascade_server.retrieval.sources import AnnoyCandidateSource
from cascade_server.rpc.bindings import _prepare_vectors, prepared
from cascade_server.settings import RankingMode
from cascade_server.storage.database import make_engine
from cascade_server.storage.engagement_reader import read_engagement

pytestmark = pytest.mark.db

FAST = TwoTowerConfig(epochs=1, embedding_dim=16, batch_size=1024)
SMALL_RANKER = RankerConfig(negatives=20, max_rounds=50)


@pytest.fixture(scope="module")
def trained(shared_demo_database_url, tmp_path_factory):
    """A published release trained on the shared demo database (once per module)."""
    engine = make_engine(shared_demo_database_url, pool_size=2)
    home = tmp_path_factory.mktemp("home")
    steps = []
    build = train_retrieval(engine, home / "build", FAST, lambda step, done: steps.append(step))
    report = build_item_index(engine, build.path, IndexConfig(n_trees=10))
    ranker = train_ranker(engine, build.path, SMALL_RANKER, lambda step, done: steps.append(step))
    registry = ReleaseRegistry(engine, home / "releases")
    manifest = publish(build.path, registry, BlendingPolicies.default())
    yield engine, registry, manifest, report, steps, ranker
    engine.dispose()


def test_training_reports_progress_and_publishes_an_active_release(trained):
    engine, registry, manifest, report, steps, _ = trained
    assert {"two-tower", "base models", "features", "heavy ranker", "refit"} <= set(steps)
    assert registry.active() == manifest.release_id
    assert set(manifest.artifacts) >= {
        "two_tower",
        "items.ann",
        "items.clusters.npz",
        "items.json",
        "item_embeddings.npy",
        POLICY_FILE,
    }
    assert manifest.metrics["index"]["recall_at_k"]["recall@10"] > 0.5
    with engine.connect() as connection:
        active = connection.scalar(sa.text("SELECT count(*) FROM items WHERE status = 'active'"))
    assert report.items == active


def test_the_published_release_verifies_and_loads(trained):
    _, registry, manifest, _, _, _ = trained
    path = registry.path_of(manifest.release_id)
    models = RetrievalModels(path, read_verified(path))
    assert models.release_id == manifest.release_id
    assert models.item_embeddings.shape[1] == FAST.embedding_dim
    assert np.allclose(np.linalg.norm(models.item_embeddings, axis=1), 1.0, atol=1e-4)


def test_a_replaced_release_is_freed_without_the_garbage_collector(trained):
    # Servers swap releases without a full collection (cascade_server.heap): what a
    # release loads must be freed by reference counting once dropped, caches included.
    engine, registry, manifest, _, _, _ = trained
    path = registry.path_of(manifest.release_id)
    snapshot = build_snapshot(read_engagement(engine), SignalConfig())

    def load_use_and_watch() -> list[weakref.ref[object]]:
        retrieval = RetrievalModels(path, manifest)
        retrieval.maps(snapshot)
        ranker = LearnedRanker(path, manifest)
        ranker.score(snapshot, snapshot.user_row("u042"), np.empty(0, np.int64), np.arange(5))
        blending = BlendingReleaseLoader()(path, manifest)
        assert blending.vectors is not None
        blending.vectors.of_items(snapshot, np.arange(5))
        parts = [retrieval, retrieval.query_tower, ranker, ranker.features, ranker.heavy]
        parts += [*ranker.features.features, blending, blending.vectors]
        return [weakref.ref(part) for part in parts if part is not None]

    gc.disable()
    try:
        watched = load_use_and_watch()
        assert [ref() for ref in watched] == [None] * len(watched)
    finally:
        gc.enable()


def test_a_prepared_release_has_its_maps_before_requests_and_builds_each_once(trained, monkeypatch):
    engine, registry, manifest, _, _, _ = trained
    path = registry.path_of(manifest.release_id)
    snapshot = build_snapshot(read_engagement(engine), SignalConfig())
    built = []

    def slow_id_positions(*args):
        built.append(len(args[0]))
        time.sleep(0.02)  # long enough for every thread below to ask meanwhile
        return id_positions(*args)

    for module in (ranking_files, retrieval_files, blending_files):
        monkeypatch.setattr(module, "id_positions", slow_id_positions)
    holder = FixedHolder(snapshot)
    ranker = prepared(LearnedRanker, LearnedRanker.prepare, holder)(path, manifest)
    retrieval = prepared(RetrievalModels, RetrievalModels.prepare, holder)(path, manifest)
    blending = prepared(BlendingReleaseLoader(), _prepare_vectors, holder)(path, manifest)
    assert len(built) == 3  # ranking's map, retrieval's, blending's

    def serve(snapshot):
        ranker.score(snapshot, snapshot.user_row("u042"), np.empty(0, np.int64), np.arange(5))
        retrieval.maps(snapshot)
        assert blending.vectors is not None
        blending.vectors.of_items(snapshot, np.arange(5))

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(serve, [snapshot] * 6))
    assert len(built) == 3
    # A new snapshot: requests arriving together wait for one build of each map.
    newer = replace(snapshot, snapshot_id="newer")
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda s: (ranker.to_release(s), retrieval.maps(s)), [newer] * 6))
    assert len(built) == 3 + 2


def test_retrievals_maps_go_both_ways_when_the_catalog_changed(trained):
    engine, registry, manifest, _, _, _ = trained
    path = registry.path_of(manifest.release_id)
    snapshot = build_snapshot(read_engagement(engine), SignalConfig())
    # Items gone since training, the rest in another order, and items the release lacks.
    live = [*reversed(snapshot.item_ids[10:]), "new-1", "new-2"]
    changed = replace(
        snapshot,
        snapshot_id="changed",
        item_ids=tuple(live),
        item_index={item: i for i, item in enumerate(live)},
    )
    models = RetrievalModels(path, manifest)
    maps = models.maps(changed)
    assert maps.to_release.tolist() == id_positions(changed.item_ids, models.item_ids).tolist()
    assert maps.to_live.tolist() == id_positions(models.item_ids, changed.item_ids).tolist()
    assert maps.to_live[:10].tolist() == [-1] * 10


@pytest.mark.parametrize("search", ["annoy", "clustered", "exact"])
def test_every_search_serves_the_release(trained, search):
    _, registry, manifest, report, _, _ = trained
    path = registry.path_of(manifest.release_id)
    index = {**manifest.config["index"], "search": search, "probes": report.clusters}
    models_manifest = replace(manifest, config={**manifest.config, "index": index})
    models = RetrievalModels(path, models_manifest)
    assert (models.clustered is not None) == (search == "clustered")
    assert (models.index is not None) == (search == "annoy")  # only the index it searches
    hashed = retrieval_artifacts(models_manifest)
    assert ("items.ann" in hashed, "items.clusters.npz" in hashed) == (
        search == "annoy",
        search == "clustered",
    )
    query = models.user_embedding("u042", np.arange(5, dtype=np.int64))
    items, scores = models.nearest(query, 20)
    exact = models.item_embeddings @ query
    assert np.allclose(scores, exact[items], atol=1e-5)
    if search != "annoy":  # probing every cluster is exact search over the indexed items
        indexed = models.clustered.items if models.clustered else np.arange(len(exact))
        best = indexed[np.argsort(-exact[indexed])[:20]]
        assert set(items.tolist()) == set(best.tolist())


def test_a_release_searching_an_index_it_cannot_serve_is_refused(trained, tmp_path):
    _, registry, manifest, _, _, _ = trained
    path = tmp_path / "release"
    shutil.copytree(registry.path_of(manifest.release_id), path)
    (path / "items.clusters.npz").unlink()
    index = {**manifest.config["index"], "search": "clustered"}
    with pytest.raises(CorruptReleaseError, match="build-index"):
        RetrievalModels(path, replace(manifest, config={**manifest.config, "index": index}))
    index["search"] = "brute force"
    with pytest.raises(CorruptReleaseError, match="brute force"):
        RetrievalModels(path, replace(manifest, config={**manifest.config, "index": index}))


def test_the_ann_source_proposes_active_unseen_items_for_a_user(trained):
    engine, registry, manifest, _, _, _ = trained
    path = registry.path_of(manifest.release_id)
    models = RetrievalModels(path, read_verified(path))
    snapshot = build_snapshot(read_engagement(engine), SignalConfig())
    user = snapshot.user_row("u042")
    query = RetrievalQuery(RequestContext(user_id="u042"), user, np.zeros(0, dtype=np.int64))
    found = AnnoyCandidateSource(models).fetch(snapshot, query, 50)
    assert len(found.items) == 50
    assert snapshot.item_active[found.items].all()
    assert np.all(np.diff(found.scores) <= 1e-6)


def test_a_build_step_refuses_data_that_changed(trained, shared_demo_database_url, tmp_path):
    engine = make_engine(shared_demo_database_url, pool_size=1)
    try:
        build = train_retrieval(engine, tmp_path / "build", FAST, lambda *_: None)
        with engine.begin() as connection:
            connection.execute(
                sa.text("UPDATE items SET updated_at = now() WHERE external_id = 'i0001'")
            )
        with pytest.raises(BuildError, match="data changed"):
            build_item_index(engine, build.path, IndexConfig(n_trees=2))
    finally:
        engine.dispose()


def test_too_little_data_is_a_clear_error(engine, tmp_path):
    with pytest.raises(NotEnoughDataError, match="cascade import"):
        train_retrieval(engine, tmp_path / "build", FAST, lambda *_: None)


def test_publishing_without_an_index_says_which_step_is_missing(trained, tmp_path):
    _, registry, _, _, _, _ = trained
    with pytest.raises(BuildError, match="train retrieval"):
        publish(tmp_path / "no-build", registry, BlendingPolicies.default())


def test_the_ranker_beats_popularity_on_held_out_items(trained):
    *_, ranker = trained
    light = ranker.validation["light_ranker"]["ndcg@10"]
    assert light > ranker.validation["item.log_popularity"]["ndcg@10"]
    assert "light+heavy" in ranker.validation
    assert ranker.heavy is not None
    assert ranker.heavy.heads  # one head per positive event kind in the demo data


@pytest.mark.parametrize("mode", list(RankingMode))
def test_served_scores_equal_batched_offline_scores(trained, mode):
    _, registry, manifest, *_ = trained
    path = registry.path_of(manifest.release_id)
    ranker = LearnedRanker(path, read_verified(path), mode=mode, heavy_top_n=5)
    mode = ranker.mode  # AUTO resolves to what the release's validation chose
    rng = np.random.default_rng(0)
    histories = [rng.choice(ranker.n_items, 12, replace=False) for _ in range(8)]
    candidates = np.stack([rng.choice(ranker.n_items, 30, replace=False) for _ in range(8)])
    assert "two_tower" in ranker.features.columns
    assert ranker.query_tower is not None
    queries = [
        ranker.query_tower.embeddings(np.array([row]), [histories[row]]).astype(np.float64)
        for row in range(8)
    ]
    users = Users.of(histories, ranker.n_items, np.concatenate(queries))
    values = ranker.features.compute(users, candidates)
    for row in range(8):
        served = ranker.predict(histories[row], candidates[row], queries[row])
        light = np.asarray(ranker.booster.predict(values[row]), dtype=np.float64)
        if mode is RankingMode.LIGHT:
            np.testing.assert_array_equal(served.final, light)
        else:
            assert ranker.heavy is not None
            heavy = ranker.heavy.predict(values[row])[0]
            scored = np.isfinite(served.stages["heavy"])
            np.testing.assert_allclose(served.stages["heavy"][scored], heavy[scored], rtol=1e-5)
            if mode is RankingMode.LIGHT_HEAVY:
                assert scored.sum() == 5
                top = np.argsort(-light, kind="stable")[:5]
                assert set(np.flatnonzero(scored)) == set(top)
                order = np.argsort(-served.final, kind="stable")
                assert set(order[:5]) == set(top)  # heavy-scored items stay on top


def test_a_new_policy_is_published_over_the_active_models(trained):
    _, registry, manifest, _, _, _ = trained
    before = registry.path_of(manifest.release_id)
    policy_text = before.joinpath(POLICY_FILE).read_text()
    policies = BlendingPolicies.parse("version: tuned\nsurfaces: {home_feed: {seed: 7}}", "t")
    try:
        changed = publish_policy(registry, policies)
        assert registry.active() == changed.release_id != manifest.release_id
        after = registry.path_of(changed.release_id)
        release = BlendingReleaseLoader()(after, read_verified(after))
        assert release.policies.version == "tuned"
        assert release.vectors is not None
        assert before.joinpath(POLICY_FILE).read_text() == policy_text, "old release untouched"
        assert read_verified(before).release_id == manifest.release_id
        assert {k: v.sha256 for k, v in changed.artifacts.items() if k != POLICY_FILE} == {
            k: v.sha256 for k, v in manifest.artifacts.items() if k != POLICY_FILE
        }
    finally:
        registry.activate(manifest.release_id)


def test_a_policy_over_a_model_file_altered_in_place_never_vouches_for_it(trained):
    _, registry, manifest, _, _, _ = trained
    before = registry.path_of(manifest.release_id)
    name, entry = min(
        (
            (k, e)
            for k, e in manifest.artifacts.items()
            if k != POLICY_FILE and (before / e.path).is_file()
        ),
        key=lambda item: item[1].size_bytes,
    )
    target = before / entry.path
    original = target.read_bytes()
    policies = BlendingPolicies.parse("version: altered\nsurfaces: {home_feed: {seed: 3}}", "t")
    try:
        target.write_bytes(bytes(b ^ 0xFF for b in original[:8]) + original[8:])  # same size
        with pytest.raises(CorruptReleaseError, match="does not match"):
            publish_policy(registry, policies, verify=True)
        assert registry.active() == manifest.release_id
        # Without --verify the sizes pass, and the new release keeps the recorded checksum
        # of the altered file: whoever loads it hashes it and refuses it.
        changed = publish_policy(registry, policies)
        assert changed.artifacts[name].sha256 == entry.sha256
        with pytest.raises(CorruptReleaseError, match="does not match"):
            read_verified(registry.path_of(changed.release_id))
    finally:
        target.write_bytes(original)
        registry.activate(manifest.release_id)


def test_the_numpy_query_tower_matches_the_saved_model(trained, tmp_path):
    _, registry, manifest, _, _, _ = trained
    path = registry.path_of(manifest.release_id)
    history_length = int(manifest.config["two_tower"]["history_length"])
    assert (path / TWO_TOWER_DIR / QUERY_WEIGHTS_FILE).exists()
    without = tmp_path / "release"
    shutil.copytree(path / TWO_TOWER_DIR, without / TWO_TOWER_DIR)
    (without / TWO_TOWER_DIR / QUERY_WEIGHTS_FILE).unlink()
    for name in (USER_FEATURES_FILE, USERS_FILE):
        shutil.copy(path / name, without / name)
    numpy_tower = QueryTower.of_release(path, history_length)
    tf_tower = QueryTower.of_release(without, history_length)
    users = np.array([0, 3, -1, 7], dtype=np.int64)
    histories = [
        np.array([1, 2, 3], dtype=np.int64),
        np.zeros(0, dtype=np.int64),
        np.array([5], dtype=np.int64),
        np.arange(100, dtype=np.int64),
    ]
    ours = numpy_tower.embeddings(users, histories)
    reference = tf_tower.embeddings(users, histories)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_the_numpy_heavy_ranker_matches_the_saved_model(trained, tmp_path):
    _, registry, manifest, _, _, _ = trained
    heavy = registry.path_of(manifest.release_id) / HEAVY_RANKER_DIR
    assert (heavy / HEAVY_WEIGHTS_FILE).exists()
    without = tmp_path / HEAVY_RANKER_DIR
    shutil.copytree(heavy, without)
    (without / HEAVY_WEIGHTS_FILE).unlink()
    columns = FeatureSet.load(
        registry.path_of(manifest.release_id) / ranking_files.FEATURES_DIR
    ).columns
    ours, reference = HeavyRanker(heavy, columns), HeavyRanker(without, columns)
    assert ours.heads == reference.heads
    features = np.random.default_rng(3).normal(size=(64, len(columns)))
    mean, heads = ours.predict(features)
    reference_mean, reference_heads = reference.predict(features)
    np.testing.assert_allclose(mean, reference_mean, atol=1e-4)
    for name in ours.heads:
        np.testing.assert_allclose(heads[name], reference_heads[name], atol=1e-4)
