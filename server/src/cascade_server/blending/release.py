"""The blending half of a release: its policy file and the item embeddings diversity uses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import repeat
from pathlib import Path

import numpy as np
import numpy.typing as npt

from cascade_server.artifacts.arrays import all_finite, load_mapped
from cascade_server.artifacts.manifest import CorruptReleaseError, Manifest
from cascade_server.blending.policy import POLICY_FILE, BlendingPolicies, PolicyError
from cascade_server.features.engagement import EngagementSnapshot, IntArray
from cascade_server.features.id_positions import id_positions
from cascade_server.features.release_items import ITEMS_FILE, read_item_ids
from cascade_server.features.snapshot_cache import SnapshotCache
from cascade_server.retrieval.models import ITEM_EMBEDDINGS_FILE

VECTOR_ARTIFACTS = (ITEMS_FILE, ITEM_EMBEDDINGS_FILE)
"""The release artifacts the item vectors are made of."""
BLENDING_ARTIFACTS = (POLICY_FILE, *VECTOR_ARTIFACTS)
"""The release artifacts blending reads."""


class ItemVectors:
    """Item embeddings by item id, made unit length as they are read, for similarity
    between candidates.

    The embeddings may be a read-only map of the release's file: only the rows a request
    asks for are normalised (for a few hundred candidates, microseconds), so loading a
    million items' embeddings costs one pass checking them, not the second or so of CPU
    and the gigabyte of temporary arrays normalising them all would take.
    """

    def __init__(self, item_ids: Sequence[str], embeddings: npt.NDArray[np.float32]) -> None:
        if embeddings.ndim != 2 or embeddings.shape[0] != len(item_ids):
            raise CorruptReleaseError("item embeddings and the item list differ in length")
        if not all_finite(embeddings):
            raise CorruptReleaseError("item embeddings hold NaN or infinite values")
        self._embeddings = embeddings
        self._item_ids = item_ids
        self._maps = SnapshotCache[IntArray]()

    @cached_property
    def _index(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self._item_ids)}

    def of(self, item_ids: Sequence[str]) -> npt.NDArray[np.float32]:
        """[len(item_ids), dim] unit vectors; zero rows for items the release does not know
        (and for zero embeddings)."""
        rows = np.fromiter(map(self._index.get, item_ids, repeat(-1)), np.int64, len(item_ids))
        return self._rows(rows)

    def of_items(self, snapshot: EngagementSnapshot, items: IntArray) -> npt.NDArray[np.float32]:
        """Like ``of``, for snapshot item indices (the index map is built once per snapshot)."""
        return self._rows(self.prepare(snapshot)[items])

    def prepare(self, snapshot: EngagementSnapshot) -> IntArray:
        """[snapshot items] → row (-1: unknown), built once per snapshot: a loader calls it
        before a swap, so that the first requests after it do not build the map."""
        return self._maps.get(snapshot, lambda live: id_positions(live.item_ids, self._item_ids))

    def _rows(self, rows: IntArray) -> npt.NDArray[np.float32]:
        vectors: npt.NDArray[np.float32] = self._embeddings[np.maximum(rows, 0)].astype(
            np.float32, copy=False
        )
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors /= np.where(norms > 0, norms, 1.0)
        vectors[rows < 0] = 0.0
        return vectors


@dataclass(frozen=True)
class BlendingRelease:
    """What the blending server takes from a release."""

    policies: BlendingPolicies
    vectors: ItemVectors | None = None


class BlendingReleaseLoader:
    """Loads the blending half of each release. The item vectors are kept from the last
    release loaded when the new one's item list and embeddings are the same files (by
    their manifest checksums), so a release that changes only the policy loads only the
    policy. The embeddings are mapped, not read: the front door keeps no private copy of
    them (the page cache's pages serve it)."""

    def __init__(self) -> None:
        self._vectors: tuple[str, ItemVectors | None] | None = None

    def __call__(self, path: Path, manifest: Manifest) -> BlendingRelease:
        """The release's policy file (the default one when it has none) and item vectors."""
        policy_path = path / POLICY_FILE
        try:
            policies = (
                BlendingPolicies.load(policy_path)
                if policy_path.exists()
                else BlendingPolicies.default()
            )
        except PolicyError as error:
            raise CorruptReleaseError(f"release {manifest.release_id}: {error}") from error
        inputs = manifest.inputs(VECTOR_ARTIFACTS)
        if self._vectors is None or self._vectors[0] != inputs:
            vectors = None
            if (path / ITEM_EMBEDDINGS_FILE).exists():
                vectors = ItemVectors(read_item_ids(path), load_mapped(path / ITEM_EMBEDDINGS_FILE))
            self._vectors = (inputs, vectors)
        return BlendingRelease(policies, self._vectors[1])
