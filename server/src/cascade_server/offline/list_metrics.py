"""Beyond-accuracy metrics of served lists: diversity, coverage, novelty, fresh share.

Each takes the lists served (one per user, best first) and what is known about the
items; items the metadata lacks count as described in each function. Definitions
follow common use in recommender evaluation (for example Kaminskas and Bridge, "Diversity,
Serendipity, Novelty, and Coverage", ACM TiiS 2016).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from cascade_server.blending.release import ItemVectors


def intra_list_diversity(lists: Sequence[Sequence[str]], vectors: ItemVectors) -> float:
    """Mean over lists of the mean pairwise cosine distance (1 - cosine) of their items'
    embeddings; items without an embedding are left out, as are lists with fewer than two
    embedded items."""
    values = []
    for items in lists:
        found = vectors.of(list(items))
        found = found[np.linalg.norm(found, axis=1) > 0]
        n = len(found)
        if n < 2:
            continue
        similarity = found @ found.T
        mean_pairwise = (similarity.sum() - np.trace(similarity)) / (n * (n - 1))
        values.append(1.0 - float(mean_pairwise))
    return float(np.mean(values)) if values else 0.0


def coverage(
    lists: Sequence[Sequence[str]], labels: Mapping[str, Iterable[str]], universe: int
) -> float:
    """Share of the ``universe`` labels (categories, creators) that any list shows; an
    item's labels come from ``labels`` (empty labels are ignored)."""
    if universe <= 0:
        return 0.0
    shown = {label for items in lists for item in items for label in labels.get(item, ()) if label}
    return len(shown) / universe


def novelty(lists: Sequence[Sequence[str]], interactions: Counter[str]) -> float:
    """Mean self-information -log2 p(item) of the served items, where p is the item's share
    of the interactions (add-one smoothed, so an item no one touched is the most novel)."""
    total = sum(interactions.values())
    n_items = len(interactions) + 1
    bits = [
        -math.log2((interactions.get(item, 0) + 1) / (total + n_items))
        for items in lists
        for item in items
    ]
    return float(np.mean(bits)) if bits else 0.0


def share(lists: Sequence[Sequence[str]], predicate: Callable[[str], bool]) -> float:
    """Share of served items for which ``predicate`` holds (for example: fresh items)."""
    flags = [predicate(item) for items in lists for item in items]
    return float(np.mean(flags)) if flags else 0.0
