"""The retrieval half of a release: the two-tower query tower, item embeddings, an item index.

Loaded once per release, validated (dimensions, no NaN, index size) and warmed up
before it serves; of the release's indexes (Annoy, clustered) only the one it searches
with is loaded. Items and users are known by the release's own indices; the maps to
and from a live snapshot's indices are built once per snapshot and cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from annoy import AnnoyIndex

from cascade_server.artifacts.arrays import all_finite, load_mapped
from cascade_server.artifacts.manifest import CorruptReleaseError, Manifest
from cascade_server.features.engagement import EngagementSnapshot, FloatArray, IntArray
from cascade_server.features.id_positions import id_positions
from cascade_server.features.query_tower import QUERY_TOWER_ARTIFACTS, QueryTower
from cascade_server.features.release_items import ITEMS_FILE, read_item_ids
from cascade_server.features.snapshot_cache import SnapshotCache
from cascade_server.retrieval.clustered_index import CLUSTERS_FILE, ClusteredIndex
from cascade_server.retrieval.top_k import top_positions

ITEM_EMBEDDINGS_FILE = "item_embeddings.npy"
INDEX_FILE = "items.ann"


def search_method(manifest: Manifest) -> str:
    """How the release's items are searched: ``annoy``, ``clustered`` or ``exact``, as
    `cascade build-index` chose (releases from before the choice: ``annoy``)."""
    return str(manifest.config.get("index", {}).get("search", "annoy"))


def retrieval_artifacts(manifest: Manifest) -> tuple[str, ...]:
    """The release artifacts retrieval reads: the item list, embeddings, query tower and
    the one index the release searches with (exact search reads none)."""
    index = {"annoy": (INDEX_FILE,), "clustered": (CLUSTERS_FILE,)}.get(search_method(manifest))
    return (ITEMS_FILE, ITEM_EMBEDDINGS_FILE, *QUERY_TOWER_ARTIFACTS, *(index or ()))


@dataclass(frozen=True)
class IndexMaps:
    """Live snapshot indices ↔ release indices, for one snapshot."""

    snapshot_id: str
    to_release: IntArray
    """[live items] → release item index, -1 when the release does not know the item."""
    to_live: IntArray
    """[release items] → live item index, -1 when the item left the catalog."""


class RetrievalModels:
    """What retrieval needs from a release, ready to serve."""

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.release_id = manifest.release_id
        self.item_ids = read_item_ids(path)
        self.item_embeddings: npt.NDArray[np.float32] = load_mapped(path / ITEM_EMBEDDINGS_FILE)
        index_config = manifest.config.get("index", {})
        self.search_k = int(index_config.get("search_k", 0)) or -1
        # How the build chose to search: Annoy, the clustered index or exact numpy search
        # (whichever reached the target recall fastest on the build's queries). Only
        # that index is loaded.
        self.search = search_method(manifest)
        if self.search not in ("annoy", "clustered", "exact"):
            raise CorruptReleaseError(f"the release searches its items by {self.search!r}")
        dims = self.item_embeddings.shape[1]
        if self.item_embeddings.shape[0] != len(self.item_ids):
            raise CorruptReleaseError("item embeddings and the item list differ in length")
        if not all_finite(self.item_embeddings):
            raise CorruptReleaseError("item embeddings hold NaN or infinite values")
        self.clustered: ClusteredIndex | None = None
        self.probes = int(index_config.get("probes", 0))
        if self.search == "clustered":
            clusters = path / CLUSTERS_FILE
            if not clusters.exists() or self.probes <= 0:
                raise CorruptReleaseError(
                    "the release searches a clustered index it does not hold (run "
                    "`cascade build-index` again and publish)"
                )
            self.clustered = ClusteredIndex.load(clusters, len(self.item_ids), dims)
        self.index: AnnoyIndex | None = None
        if self.search == "annoy":
            self.index = AnnoyIndex(dims, "angular")
            # Prefaulted (read into memory now): pages touched later would slow the
            # first requests.
            if not self.index.load(str(path / INDEX_FILE), prefault=True):
                raise CorruptReleaseError("the Annoy index could not be loaded")
            if self.index.get_n_items() > len(self.item_ids):
                raise CorruptReleaseError("the Annoy index holds items the release does not list")
        self.query_tower = QueryTower.of_release(
            path, int(manifest.config["two_tower"]["history_length"])
        )
        self._maps = SnapshotCache[IndexMaps]()
        self._warm_up()

    def prepare(self, snapshot: EngagementSnapshot) -> None:
        """Build the index maps for ``snapshot`` now, so that the first requests after a
        swap do not (at a million items they take tens of ms)."""
        self.maps(snapshot)

    def maps(self, snapshot: EngagementSnapshot) -> IndexMaps:
        """Index maps for ``snapshot`` (computed once per snapshot)."""
        return self._maps.get(snapshot, self._maps_of)

    def _maps_of(self, snapshot: EngagementSnapshot) -> IndexMaps:
        to_release = id_positions(snapshot.item_ids, self.item_ids)
        # Both lists hold distinct ids: one map is the other's inverse (no second pass
        # over a million ids).
        known = np.flatnonzero(to_release >= 0)
        to_live = np.full(len(self.item_ids), -1, dtype=np.int64)
        to_live[to_release[known]] = known
        return IndexMaps(snapshot.snapshot_id, to_release, to_live)

    def user_embedding(self, user_id: str, history: IntArray) -> npt.NDArray[np.float32]:
        """The query tower's embedding for a user with ``history`` (release items, oldest first)."""
        embedding: npt.NDArray[np.float32] = self.user_embeddings([user_id], [history])[0]
        return embedding

    def user_embeddings(
        self, user_ids: Sequence[str], histories: Sequence[IntArray]
    ) -> npt.NDArray[np.float32]:
        """The query tower's embeddings for many users in one model call."""
        return self.query_tower.embeddings(self.query_tower.users(user_ids), histories)

    def seed_embedding(self, seeds: IntArray) -> npt.NDArray[np.float32]:
        """The normalised mean embedding of seed items (release indices)."""
        mean = self.item_embeddings[seeds].mean(axis=0)
        norm = float(np.linalg.norm(mean))
        normalised: npt.NDArray[np.float32] = (mean / norm if norm > 0 else mean).astype(np.float32)
        return normalised

    def nearest(self, embedding: npt.NDArray[np.float32], k: int) -> tuple[IntArray, FloatArray]:
        """The ``k`` indexed items nearest ``embedding``, with their dot-product scores."""
        if self.clustered is not None:
            items, scores = self.clustered.nearest(embedding, k, self.probes)
            return items, scores.astype(np.float64)
        if self.index is None:  # exact search
            scores = self.item_embeddings @ embedding
            items = top_positions(scores, k)
            return items, scores[items].astype(np.float64)
        found = self.index.get_nns_by_vector(embedding.tolist(), k, search_k=self.search_k)
        items = np.asarray(found, dtype=np.int64)
        return items, (self.item_embeddings[items] @ embedding).astype(np.float64)

    def _warm_up(self) -> None:
        embedding = self.user_embedding("", np.zeros(0, dtype=np.int64))
        if embedding.shape != (self.item_embeddings.shape[1],) or not np.isfinite(embedding).all():
            raise CorruptReleaseError("the query tower returns malformed embeddings")
        self.nearest(embedding, 10)
