"""Training inputs from the engagement log: distinct positive pairs with item and user features.

Items and users are indexed like ``EngagementData`` (the release's order); feature ids
come from ``features.model_inputs`` so that serving builds identical inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cascade_server.features.engagement import KIND_WEIGHTS, distinct_pairs
from cascade_server.features.model_inputs import Vocabulary, padded
from cascade_server.storage.engagement_reader import EngagementData

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

MAX_ITEM_CATEGORIES = 4
MAX_USER_FEATURES = 8


@dataclass(frozen=True)
class Interactions:
    """Distinct positive (user, item) pairs, oldest first, with everything the models need."""

    n_users: int
    n_items: int
    users: IntArray
    items: IntArray
    timestamps: FloatArray
    kinds: IntArray
    """Per pair, a bit mask of the positive event kinds seen (bit ``k`` = ``EVENT_KINDS[k]``)."""
    item_categories: IntArray
    """[n_items, MAX_ITEM_CATEGORIES] category ids (0 = none)."""
    item_creators: IntArray
    """[n_items] creator ids (0 = none)."""
    user_features: IntArray
    """[n_users, MAX_USER_FEATURES] ids of ``key=value`` attributes (0 = none)."""
    categories: Vocabulary
    creators: Vocabulary
    user_feature_values: Vocabulary

    def user_items(self) -> list[IntArray]:
        """Each user's items, oldest first."""
        order = np.lexsort((self.timestamps, self.users))
        users, items = self.users[order], self.items[order]
        bounds = np.searchsorted(users, np.arange(self.n_users + 1))
        return [items[bounds[u] : bounds[u + 1]] for u in range(self.n_users)]


def positive_interactions(data: EngagementData) -> Interactions:
    """The positive pairs of ``data`` (latest time per pair) with item and user features."""
    if data.metadata is None:
        raise ValueError("training needs catalog metadata: read_engagement(with_metadata=True)")
    positive = KIND_WEIGHTS[data.kinds] > 0
    event_users, event_items = data.event_users[positive], data.event_items[positive]
    users, items, times = distinct_pairs(event_users, event_items, data.timestamps[positive])
    by_pair = np.lexsort((event_items, event_users))
    first = np.ones(len(by_pair), dtype=bool)
    first[1:] = (np.diff(event_users[by_pair]) != 0) | (np.diff(event_items[by_pair]) != 0)
    bits = np.left_shift(1, data.kinds[positive].astype(np.int64))[by_pair]
    kinds = np.bitwise_or.reduceat(bits, np.flatnonzero(first)) if len(bits) else bits
    chronological = np.lexsort((items, users, times))

    item_categories = data.item_categories or [()] * len(data.item_ids)
    categories = Vocabulary(tuple(sorted({c for cats in item_categories for c in cats})))
    creators = Vocabulary(tuple(sorted({c for c in data.item_creators if c})))
    attribute_values = [_attribute_strings(a) for a in data.metadata.user_attributes]
    user_vocab = Vocabulary(tuple(sorted({v for values in attribute_values for v in values})))
    return Interactions(
        n_users=len(data.user_ids),
        n_items=len(data.item_ids),
        users=users[chronological],
        items=items[chronological],
        timestamps=times[chronological],
        kinds=kinds[chronological],
        item_categories=padded(
            [categories.ids(list(c)) for c in item_categories], MAX_ITEM_CATEGORIES
        ),
        item_creators=creators.ids(list(data.item_creators)),
        user_features=padded([user_vocab.ids(v) for v in attribute_values], MAX_USER_FEATURES),
        categories=categories,
        creators=creators,
        user_feature_values=user_vocab,
    )


def _attribute_strings(attributes: Mapping[str, object]) -> list[str]:
    return [
        f"{key}={value}"
        for key, value in sorted(attributes.items())
        if isinstance(value, str | int | bool)
    ][:MAX_USER_FEATURES]
