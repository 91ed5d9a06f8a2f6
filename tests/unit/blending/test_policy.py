"""Policy files: validation with clear errors, per-surface policies, overrides, experiments."""

import json
from collections import Counter

import numpy as np
import pytest

from cascade_server.artifacts.manifest import CorruptReleaseError, DataSnapshot, Manifest, describe
from cascade_server.blending.policy import (
    POLICY_FILE,
    BlendingPolicies,
    PolicyError,
    SurfacePolicy,
)
from cascade_server.blending.release import BlendingReleaseLoader, ItemVectors
from cascade_server.features.release_items import ITEMS_FILE
from cascade_server.pipeline.types import SourceKind, Surface
from cascade_server.retrieval.models import ITEM_EMBEDDINGS_FILE

FILE = """
version: "2026-11-26.1"
surfaces:
  home_feed:
    dedup_keys: [title]
    max_items_per_creator: 3
    diversity_lambda: 0.8
    fresh_share: 0.2
    category_boosts: {Comedy: 0.1}
  related_items:
    max_items_per_creator: 1
experiments:
  - name: cutoff
    variants:
      - {name: control, weight: 3}
      - name: deeper
        weight: 1
        heavy_top_n: 200
        source_limits: {ann: 600, fresh: 0}
        surfaces: {home_feed: {diversity_lambda: 0.6}}
"""


def test_a_file_gives_each_surface_its_policy_and_defaults_for_the_rest():
    policies = BlendingPolicies.parse(FILE, "test")
    assert policies.version == "2026-11-26.1"
    home = policies.for_surface(Surface.HOME_FEED)
    assert home.max_items_per_creator == 3
    assert home.dedup_keys == ("item_id", "title"), "item_id always dedups, first"
    assert home.category_boosts == {"Comedy": 0.1}
    assert policies.for_surface(Surface.RELATED_ITEMS).max_items_per_creator == 1
    assert policies.for_surface(Surface.CATEGORY_FEED) == SurfacePolicy()


def test_json_is_accepted_too():
    text = json.dumps({"version": "j", "surfaces": {"home_feed": {"category_spacing": 2}}})
    assert BlendingPolicies.parse(text, "x").for_surface(Surface.HOME_FEED).category_spacing == 2


def test_the_shipped_default_policy_is_valid():
    policies = BlendingPolicies.default()
    assert policies.version
    assert policies.for_surface(Surface.HOME_FEED).fresh_share > 0


@pytest.mark.parametrize(
    ("text", "place", "words"),
    [
        ("surfaces: {}", "version", "Field required"),
        ("version: v\nsurfaces: {home: {}}", "surfaces.home", "Input should be"),
        ("version: v\nsurfaces: {home_feed: {lambda: 1}}", "surfaces.home_feed.lambda", "Extra"),
        (
            "version: v\nsurfaces: {home_feed: {diversity_lambda: 1.5}}",
            "surfaces.home_feed.diversity_lambda",
            "less than or equal to 1",
        ),
        (
            "version: v\nsurfaces: {home_feed: {fresh_share: 0.3, exploration_share: 0.3}}",
            "surfaces.home_feed",
            "exceeds 0.5",
        ),
        (
            "version: v\nsurfaces: {home_feed: {dedup_keys: [colour]}}",
            "surfaces.home_feed.dedup_keys.0",
            "'item_id' or 'title'",
        ),
        (
            "version: v\nsurfaces: {home_feed: {category_boosts: {A: 2}}}",
            "surfaces.home_feed.category_boosts",
            "boosts are -1 to 1",
        ),
        (
            "version: v\nexperiments: [{name: e, variants: [{name: a, weight: 1}, "
            "{name: a, weight: 1}]}]",
            "experiments.0.variants",
            "variant names repeat",
        ),
        (
            "version: v\nexperiments: [{name: e, variants: [{name: a, weight: 1, "
            "surfaces: {home_feed: {max_items_per_creator: 0}}}]}]",
            "max_items_per_creator",
            "greater than or equal to 1",
        ),
        (
            "version: v\nexperiments: [{name: e, variants: [{name: a, weight: 1, "
            "source_limits: {ann: 5000}}]}]",
            "experiments.0.variants.0.source_limits",
            "quotas are 0 to 2000",
        ),
    ],
)
def test_invalid_files_are_rejected_naming_the_place(text, place, words):
    with pytest.raises(PolicyError) as caught:
        BlendingPolicies.parse(text, "policy.yaml")
    assert caught.value.message.startswith("policy.yaml")
    assert place in caught.value.message
    assert words in caught.value.message


@pytest.mark.parametrize("text", ["[1, 2]", "version: [", ""])
def test_text_that_is_not_a_mapping_is_rejected(text):
    with pytest.raises(PolicyError, match=r"policy\.yaml"):
        BlendingPolicies.parse(text, "policy.yaml")


def test_overrides_are_validated_like_the_file_and_add_excluded_categories():
    base = SurfacePolicy(exclude_categories=frozenset({"A"}), fresh_share=0.3)
    changed = base.with_overrides({"diversity_lambda": 0.5, "exclude_categories": ["B"]}, "o")
    assert changed.diversity_lambda == 0.5
    assert changed.exclude_categories == {"A", "B"}
    assert changed.fresh_share == 0.3
    with pytest.raises(PolicyError) as caught:
        base.with_overrides({"exploration_share": 0.3}, "policy_overrides")
    assert caught.value.problems == [
        ("", "Value error, fresh_share + exploration_share exceeds 0.5: at least half the "
         "page must stay ranked")
    ]  # fmt: skip


def test_users_bucket_deterministically_in_proportion_to_the_weights():
    policies = BlendingPolicies.parse(FILE, "test")
    users = [f"user-{k}" for k in range(4000)]
    first = [policies.treatment(u).assignments[0].variant.name for u in users]
    assert first == [policies.treatment(u).assignments[0].variant.name for u in users]
    share = Counter(first)["deeper"] / len(users)
    assert 0.22 < share < 0.28  # weight 1 of 4


def test_a_variant_changes_the_policy_the_cutoff_and_the_quotas():
    policies = BlendingPolicies.parse(FILE, "test")
    treatment = policies.treatment("anyone", ["cutoff/deeper"])
    [assignment] = treatment.assignments
    assert (assignment.label, assignment.forced) == ("cutoff/deeper", True)
    assert treatment.heavy_top_n == 200
    assert treatment.source_limits == {SourceKind.ANN: 600, SourceKind.FRESH: 0}
    home = treatment.policy(policies, Surface.HOME_FEED)
    assert home.diversity_lambda == 0.6
    assert home.max_items_per_creator == 3, "the rest of the surface policy stays"
    assert treatment.policy(policies, Surface.RELATED_ITEMS).max_items_per_creator == 1


def test_control_changes_nothing_and_anonymous_requests_get_the_first_variant():
    policies = BlendingPolicies.parse(FILE, "test")
    treatment = policies.treatment("", ["cutoff/nope", "other/thing", "free-form"])
    assert treatment.assignments[0].label == "cutoff/control"
    assert not treatment.assignments[0].forced
    assert treatment.heavy_top_n == 0
    assert treatment.source_limits is None
    assert treatment.policy(policies, Surface.HOME_FEED) == policies.for_surface(Surface.HOME_FEED)


def test_item_vectors_are_unit_length_and_zero_for_unknown_items():
    vectors = ItemVectors(["a", "b"], np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32))
    found = vectors.of(["a", "zzz", "b"])
    np.testing.assert_allclose(found, [[0.6, 0.8], [0.0, 0.0], [0.0, 0.0]])
    with pytest.raises(CorruptReleaseError):
        ItemVectors(["a"], np.array([[np.nan, 1.0]], dtype=np.float32))


def test_item_vectors_read_from_a_mapped_file_leave_it_as_it_is(tmp_path):
    embeddings = np.array([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]], dtype=np.float32)
    np.save(tmp_path / "e.npy", embeddings)
    vectors = ItemVectors(["a", "b", "c"], np.load(tmp_path / "e.npy", mmap_mode="r"))
    first = vectors.of(["b", "a", "b"])
    np.testing.assert_allclose(first, [[0.0, 1.0], [0.6, 0.8], [0.0, 1.0]])
    np.testing.assert_array_equal(vectors.of(["b", "a", "b"]), first)
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), embeddings)


def test_item_vectors_find_a_nan_in_any_part_of_a_large_table():
    embeddings = np.ones((40_000, 4), dtype=np.float32)
    embeddings[-1, 2] = np.inf
    with pytest.raises(CorruptReleaseError):
        ItemVectors([str(i) for i in range(40_000)], embeddings)


def _manifest():
    return Manifest("r1", "now", DataSnapshot("f", 0, 0, 0, None), {})


def test_a_release_without_a_policy_file_serves_the_default(tmp_path):
    release = BlendingReleaseLoader()(tmp_path, _manifest())
    assert release.policies.version == BlendingPolicies.default().version
    assert release.vectors is None


def test_a_release_with_a_broken_policy_file_is_rejected(tmp_path):
    (tmp_path / POLICY_FILE).write_text("version: v\nsurfaces: {home_feed: {seed: -1}}")
    with pytest.raises(CorruptReleaseError, match=r"release r1: .*surfaces\.home_feed\.seed"):
        BlendingReleaseLoader()(tmp_path, _manifest())


def _release(root, embeddings, policy_version):
    root.mkdir()
    (root / ITEMS_FILE).write_text('["a", "b"]')
    np.save(root / ITEM_EMBEDDINGS_FILE, np.array(embeddings, dtype=np.float32))
    (root / POLICY_FILE).write_text(f"version: {policy_version}\n")
    names = (ITEMS_FILE, ITEM_EMBEDDINGS_FILE, POLICY_FILE)
    artifacts = {name: describe(root, "k", name) for name in names}
    return Manifest(root.name, "now", DataSnapshot("f", 0, 0, 0, None), artifacts)


def test_a_policy_only_release_keeps_the_loaded_item_vectors(tmp_path):
    load = BlendingReleaseLoader()
    first = load(tmp_path / "r1", _release(tmp_path / "r1", [[3, 4], [1, 0]], "p1"))
    policy_only = load(tmp_path / "r2", _release(tmp_path / "r2", [[3, 4], [1, 0]], "p2"))
    assert policy_only.policies.version == "p2"
    assert policy_only.vectors is first.vectors
    retrained = load(tmp_path / "r3", _release(tmp_path / "r3", [[0, 4], [1, 0]], "p2"))
    assert retrained.vectors is not None
    assert retrained.vectors is not first.vectors
    np.testing.assert_allclose(retrained.vectors.of(["a"]), [[0.0, 1.0]])
