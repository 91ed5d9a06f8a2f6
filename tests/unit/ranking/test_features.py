import numpy as np
import pytest

from cascade_server.offline.base_models import ials, interaction_matrix, item_knn, rp3beta
from cascade_server.ranking.features import (
    CategoryAffinityFeature,
    FactorFeature,
    FeatureSet,
    ItemValueFeature,
    TwoTowerFeature,
    UserActivityFeature,
    Users,
)

N_USERS, N_ITEMS, DIM = 40, 30, 8
EMBEDDINGS = np.random.default_rng(11).normal(size=(N_ITEMS, DIM))
QUERIES = np.random.default_rng(12).normal(size=(N_USERS, DIM))


def data(seed=0):
    rng = np.random.default_rng(seed)
    histories = [
        np.unique(rng.choice(N_ITEMS, size=rng.integers(2, 10), replace=False))
        for _ in range(N_USERS)
    ]
    users = np.concatenate([np.full(len(h), u) for u, h in enumerate(histories)])
    x = interaction_matrix(users, np.concatenate(histories), N_USERS, N_ITEMS)
    return histories, x


def feature_set(x):
    categories = np.zeros((N_ITEMS, 2), dtype=np.int64)
    categories[:, 0] = np.arange(N_ITEMS) % 3 + 1
    categories[::4, 1] = 4
    popularity = np.log1p(np.asarray(x.sum(axis=0)).ravel())[:, None]
    return FeatureSet(
        [
            item_knn(x, shrink=2.0, k=10),
            rp3beta(x, alpha=1.0, beta=0.5, k=10),
            ials(x, factors=4, alpha0=0.1, lam=0.01, iterations=3, seed=1),
            TwoTowerFeature("two_tower", EMBEDDINGS),
            ItemValueFeature("item", popularity, ("log_popularity",)),
            CategoryAffinityFeature("category_affinity", categories),
            UserActivityFeature("user_activity"),
        ]
    )


def test_columns_name_every_feature():
    _, x = data()
    assert feature_set(x).columns == [
        "item_knn",
        "rp3beta",
        "ials",
        "two_tower",
        "item.log_popularity",
        "category_affinity.max",
        "category_affinity.mean",
        "user_activity",
    ]


def test_a_batch_of_users_scores_exactly_like_each_user_alone():
    histories, x = data()
    features = feature_set(x)
    rng = np.random.default_rng(3)
    candidates = rng.integers(0, N_ITEMS, size=(N_USERS, 7))
    batch = features.compute(Users.of(histories, N_ITEMS, QUERIES), candidates)
    assert batch.shape == (N_USERS, 7, len(features.columns))
    for u in range(N_USERS):
        alone = features.compute(
            Users.of([histories[u]], N_ITEMS, QUERIES[u : u + 1]), candidates[u : u + 1]
        )
        np.testing.assert_array_equal(alone[0], batch[u])


def test_neighbour_scores_sum_the_history_rows():
    histories, x = data()
    knn = item_knn(x, shrink=2.0, k=10)
    user = histories[0]
    dense = np.zeros((N_ITEMS, N_ITEMS))
    for j in range(N_ITEMS):
        cols, vals = knn.weights.row(j)
        dense[j, cols] = vals
    expected = dense[user].sum(axis=0)
    got = knn.compute(Users.of([user], N_ITEMS), np.arange(N_ITEMS)[None, :])[0, :, 0]
    np.testing.assert_allclose(got, expected)


def test_two_tower_scores_are_query_item_dot_products_and_need_the_queries():
    feature = TwoTowerFeature("two_tower", EMBEDDINGS)
    candidates = np.array([[3, 0, 7], [1, 1, 2]])
    got = feature.compute(
        Users.of([np.array([0]), np.array([1])], N_ITEMS, QUERIES[:2]), candidates
    )
    np.testing.assert_allclose(
        got[..., 0], np.einsum("ucd,ud->uc", EMBEDDINGS[candidates], QUERIES[:2])
    )
    with pytest.raises(ValueError, match="query-tower embeddings"):
        feature.compute(Users.of([np.array([0])], N_ITEMS), candidates[:1])


def test_category_affinity_is_the_share_of_history_in_the_candidates_categories():
    categories = np.array([[1, 0], [1, 2], [2, 0], [3, 0]], dtype=np.int64)
    feature = CategoryAffinityFeature("c", categories)
    got = feature.compute(Users.of([np.array([0, 1])], 4), np.array([[0, 1, 2, 3]]))[0]
    # history: item 0 (cat 1), item 1 (cats 1, 2) -> shares cat1 = 1.0, cat2 = 0.5, cat3 = 0
    np.testing.assert_allclose(got[:, 0], [1.0, 1.0, 0.5, 0.0])
    np.testing.assert_allclose(got[:, 1], [1.0, 0.75, 0.5, 0.0])


def test_users_without_history_get_zero_personal_features():
    _, x = data()
    features = feature_set(x)
    no_history = Users.of([np.zeros(0, dtype=np.int64)], N_ITEMS, np.zeros((1, DIM)))
    values = features.compute(no_history, np.array([[0, 1]]))
    personal = [i for i, c in enumerate(features.columns) if c != "item.log_popularity"]
    assert np.all(values[0][:, personal] == 0)


def test_feature_sets_round_trip_through_a_directory(tmp_path):
    histories, x = data()
    features = feature_set(x)
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "99.left.over.npy").write_bytes(b"from an earlier run")
    features.save(tmp_path / "features")
    loaded = FeatureSet.load(tmp_path / "features")
    assert loaded.columns == features.columns
    candidates = np.tile(np.arange(N_ITEMS), (N_USERS, 1))
    users = Users.of(histories, N_ITEMS, QUERIES)
    np.testing.assert_array_equal(
        loaded.compute(users, candidates), features.compute(users, candidates)
    )


def test_feature_sets_of_earlier_releases_load_from_one_npz_file(tmp_path):
    histories, x = data()
    features = feature_set(x)
    features.save(tmp_path / "features")
    arrays = {f.name.removesuffix(".npy"): np.load(f) for f in (tmp_path / "features").iterdir()}
    np.savez(tmp_path / "features.npz", **arrays)
    loaded = FeatureSet.load(tmp_path / "features.npz")
    candidates = np.tile(np.arange(N_ITEMS), (N_USERS, 1))
    users = Users.of(histories, N_ITEMS, QUERIES)
    np.testing.assert_array_equal(
        loaded.compute(users, candidates), features.compute(users, candidates)
    )


def test_vectors_kept_in_float32_score_as_their_float64_copies_did(tmp_path):
    # Releases before float32 was kept stored these vectors widened to float64: both
    # forms load as they are, and every value agrees to the bit.
    histories, x = data()
    factors = ials(x, factors=4, alpha0=0.1, lam=0.01, iterations=3, seed=1)
    embeddings = EMBEDDINGS.astype(np.float32)
    narrow = FeatureSet([factors, TwoTowerFeature("two_tower", embeddings)])
    wide = FeatureSet(
        [
            FactorFeature(
                factors.name,
                factors.item_factors.astype(np.float64),
                factors.gram,
                factors.lam,
                factors.nu,
                factors.offset,
            ),
            TwoTowerFeature("two_tower", embeddings.astype(np.float64)),
        ]
    )
    for features, name in ((narrow, "narrow"), (wide, "wide")):
        features.save(tmp_path / name)
    loaded = {name: FeatureSet.load(tmp_path / name) for name in ("narrow", "wide")}
    assert factors.item_factors.dtype == np.float32
    vectors = ("item_factors", "item_embeddings")
    for name, dtype in (("narrow", np.float32), ("wide", np.float64)):
        stored = [a for f in loaded[name].features for k, a in f.arrays().items() if k in vectors]
        assert [a.dtype for a in stored] == [dtype, dtype]
    candidates = np.tile(np.arange(N_ITEMS), (N_USERS, 1))
    users = Users.of(histories, N_ITEMS, QUERIES)
    expected = wide.compute(users, candidates)
    for features in (narrow, *loaded.values()):
        np.testing.assert_array_equal(features.compute(users, candidates), expected)


def test_unknown_feature_kinds_are_rejected(tmp_path):
    np.savez(tmp_path / "bad.npz", **{"00.mystery.x.__marker": np.zeros(0)})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mystery"):
        FeatureSet.load(tmp_path / "bad.npz")
