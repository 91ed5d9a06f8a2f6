"""The naive ranking path, as a baseline for the optimised one (`bench/load.py`'s
`naive` scenario).

Three ways to do RankCandidates' work for the same requests (a user and their 500
retrieval candidates), with the same release and the same features, in-process (no
gRPC, so only the work itself differs):

* optimised: what the ranking server does — the user's history and the items come
  from the in-memory snapshot, and one batched model call scores all candidates;
* + Postgres reads: the same, after reading the user's recent events and the
  candidates' rows from Postgres on every request, as a server without the snapshot
  would;
* naive: those reads, then one model call per candidate (no batching).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from pipeline import percentiles

from cascade_server.artifacts.manifest import read_verified
from cascade_server.artifacts.registry import ReleaseRegistry
from cascade_server.features.engagement import EngagementSnapshot, build_snapshot
from cascade_server.ranking.models import LearnedRanker
from cascade_server.rpc.bindings import signal_config
from cascade_server.settings import Settings
from cascade_server.storage.database import make_engine
from cascade_server.storage.engagement_reader import read_engagement

_HISTORY = sa.text(
    "SELECT i.external_id, e.kind, e.occurred_at FROM events e "
    "JOIN users u ON u.id = e.user_id JOIN items i ON i.id = e.item_id "
    "WHERE u.external_id = :user ORDER BY e.occurred_at DESC LIMIT 200"
)
_ITEMS = sa.text(
    "SELECT external_id, creator_id, categories, status FROM items WHERE external_id = ANY(:ids)"
)

Rank = Callable[[str, Sequence[str]], np.ndarray[Any, np.dtype[np.float64]]]


def compare(
    database_url: str,
    home: Path,
    requests: Sequence[tuple[str, Sequence[str]]],
    *,
    naive_requests: int = 10,
) -> dict[str, Any]:
    """Latency of each path over ``requests`` (the naive one over the first
    ``naive_requests`` of them: it is slow), and each against the optimised median."""
    engine = make_engine(database_url, pool_size=1)
    try:
        settings = Settings(home=home, database_url=database_url)
        snapshot = build_snapshot(read_engagement(engine), signal_config(settings))
        registry = ReleaseRegistry(engine, home / "releases")
        release_id = registry.active()
        if release_id is None:
            raise SystemExit("no active release: run `cascade train all` first")
        path = registry.path_of(release_id)
        ranker = LearnedRanker(path, read_verified(path), heavy_top_n=settings.heavy_top_n)
        paths: dict[str, tuple[Rank, int]] = {
            "optimised": (_optimised(snapshot, ranker), len(requests)),
            "with Postgres reads": (
                _with_reads(engine, snapshot, ranker, batched=True),
                len(requests),
            ),
            "naive": (_with_reads(engine, snapshot, ranker, batched=False), naive_requests),
        }
        results: dict[str, Any] = {}
        for name, (rank, count) in paths.items():
            user, items = requests[0]
            rank(user, items)  # warm caches, as a server would be
            samples = []
            for user, items in requests[:count]:
                started = time.perf_counter()
                rank(user, items)
                samples.append(time.perf_counter() - started)
            results[name] = percentiles(samples)
        base = results["optimised"]["p50_ms"]
        for point in results.values():
            point["p50_over_optimised"] = point["p50_ms"] / base
        return {"candidates": len(requests[0][1]), "release_id": release_id, "paths": results}
    finally:
        engine.dispose()


def _optimised(snapshot: EngagementSnapshot, ranker: LearnedRanker) -> Rank:
    def rank(user_id: str, item_ids: Sequence[str]) -> np.ndarray[Any, np.dtype[np.float64]]:
        items = snapshot.lookup_items(item_ids)
        empty = np.empty(0, np.int64)
        return ranker.score(snapshot, snapshot.user_row(user_id), empty, items[items >= 0]).final

    return rank


def _with_reads(
    engine: sa.Engine, snapshot: EngagementSnapshot, ranker: LearnedRanker, *, batched: bool
) -> Rank:
    empty = np.empty(0, np.int64)

    def rank(user_id: str, item_ids: Sequence[str]) -> np.ndarray[Any, np.dtype[np.float64]]:
        with engine.connect() as connection:
            connection.execute(_HISTORY, {"user": user_id}).all()
            rows = connection.execute(_ITEMS, {"ids": list(item_ids)}).all()
        found = [row.external_id for row in rows if row.status == "active"]
        items = snapshot.lookup_items(found)
        items = items[items >= 0]
        user = snapshot.user_row(user_id)
        if batched:
            return ranker.score(snapshot, user, empty, items).final
        return np.array(
            [
                ranker.score(snapshot, user, empty, items[i : i + 1]).final[0]
                for i in range(len(items))
            ]
        )

    return rank
