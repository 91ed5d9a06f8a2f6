"""Latency of each retrieval candidate source on the demo data: median and p99 per request.

    .venv/bin/python bench/sources.py                 # default demo data, 500 users
    .venv/bin/python bench/sources.py --users 1000 --repeat 5

Loads the generated demo data into a fresh embedded Postgres (or a new database on
--database-url's server), builds the serving snapshot the way a server does, then
times every in-process candidate source for the same sample of users, interleaved so
that machine noise hits every source alike, then the whole retrieval stage (the
sources on its threads, exclusions and the merge into 500 candidates). The popular
source (a slice of a list computed with the snapshot) is the baseline the others are
compared with. The two-tower/Annoy source needs a trained release and is measured by
the quality benchmark's served runs instead.

Back to back, the work runs with warm caches; a server between requests sleeps, and the
same work then costs more (random walk on the demo data: 1.6 ms back to back, 2.7 ms
after 20 ms idle). ``--gap-ms 20`` sleeps that long before every timed call, as
between requests at 50/s, to measure the cost a server pays.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cascade_server.features.engagement import EngagementSnapshot, SignalConfig, build_snapshot
from cascade_server.offline.demo_data import DemoDataConfig, generate, load
from cascade_server.pipeline.components import CandidateSource, RetrievalQuery
from cascade_server.pipeline.deadline import Deadline
from cascade_server.pipeline.types import RequestContext
from cascade_server.retrieval.sources import (
    CategoryPopularCandidateSource,
    CoEngagementCandidateSource,
    PopularCandidateSource,
    RandomWalkCandidateSource,
    TrendingCandidateSource,
)
from cascade_server.retrieval.stage import RetrievalRequest, RetrievalStage
from cascade_server.storage import migrations
from cascade_server.storage.database import EmbeddedPostgres, make_engine
from cascade_server.storage.engagement_reader import read_engagement

LIMIT = 200


def main() -> int:
    args = _arguments()
    with tempfile.TemporaryDirectory(prefix="cascade-bench-") as scratch:
        if args.database_url:
            return _run(args.database_url, args)
        with EmbeddedPostgres(Path(scratch) / "pgdata") as server:
            return _run(server.url, args)


def _run(url: str, args: argparse.Namespace) -> int:
    migrations.upgrade(url)
    engine = make_engine(url)
    try:
        data = generate(DemoDataConfig(users=args.demo_users, items=args.demo_items))
        load(engine, data, progress=False)
        engagement = read_engagement(engine)
    finally:
        engine.dispose()
    started = time.perf_counter()
    snapshot = build_snapshot(engagement, SignalConfig())
    print(f"snapshot: {snapshot.stats} built in {time.perf_counter() - started:.2f} s")

    sources: dict[str, CandidateSource] = {
        "popular (baseline)": PopularCandidateSource(),
        "co_engagement": CoEngagementCandidateSource(),
        "random_walk": RandomWalkCandidateSource(),
        "category_popular": CategoryPopularCandidateSource(),
        "trending": TrendingCandidateSource(),
    }
    rng = np.random.default_rng(args.seed)
    user_ids = sorted(snapshot.user_index)
    sample = [user_ids[i] for i in rng.choice(len(user_ids), args.users, replace=False)]
    queries = [
        RetrievalQuery(RequestContext(user_id=u), snapshot.user_row(u), np.zeros(0, np.int64))
        for u in sample
    ]
    for source in sources.values():  # warm up (the walk builds its graph once per snapshot)
        source.fetch(snapshot, queries[0], LIMIT)
    timings: dict[str, list[float]] = {name: [] for name in sources}
    found: dict[str, list[int]] = {name: [] for name in sources}
    for _ in range(args.repeat):
        for query in queries:
            for name, source in sources.items():
                time.sleep(args.gap_ms / 1000)
                began = time.perf_counter_ns()
                result = source.fetch(snapshot, query, LIMIT)
                timings[name].append((time.perf_counter_ns() - began) / 1e6)
                found[name].append(len(result.items))

    # The whole stage: every source above on the stage's threads, exclusions, the merge
    # into 500 candidates (no release here, so no two-tower source).
    stage = RetrievalStage(
        _Fixed(snapshot),
        list(sources.values()),
        dict.fromkeys([s.kind for s in sources.values()], LIMIT),
        source_budget_s=10.0,
    )
    merged = "RetrievalStage.retrieve (500 merged)"
    timings[merged], found[merged] = [], []
    try:
        for _ in range(args.repeat):
            for user_id in sample:
                request = RetrievalRequest(RequestContext(user_id=user_id), max_candidates=500)
                time.sleep(args.gap_ms / 1000)
                began = time.perf_counter_ns()
                retrieved = stage.retrieve(request, Deadline.after(10.0))
                timings[merged].append((time.perf_counter_ns() - began) / 1e6)
                found[merged].append(len(retrieved.candidates))
    finally:
        stage.close()

    baseline = float(np.median(timings["popular (baseline)"]))
    print(
        f"\n{args.users} users x {args.repeat} rounds, limit {LIMIT}; "
        f"demo data {args.demo_users} users / {args.demo_items} items; "
        f"{args.gap_ms:g} ms idle before each call\n"
    )
    print("| source | median ms | p99 ms | median / baseline | mean candidates |")
    print("|---|---|---|---|---|")
    for name, values in timings.items():
        median = float(np.median(values))
        p99 = float(np.percentile(values, 99))
        print(
            f"| {name} | {median:.3f} | {p99:.3f} | {median / baseline:.1f}x | "
            f"{np.mean(found[name]):.0f} |"
        )
    return 0


class _Fixed:
    """One snapshot, served for every request."""

    def __init__(self, snapshot: EngagementSnapshot) -> None:
        self._snapshot = snapshot

    def current(self) -> EngagementSnapshot:
        return self._snapshot


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=500, help="Users sampled per round.")
    parser.add_argument("--repeat", type=int, default=3, help="Rounds over the sample.")
    parser.add_argument("--demo-users", type=int, default=2_000)
    parser.add_argument("--demo-items", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--gap-ms",
        type=float,
        default=0.0,
        help="Idle time before each timed call (20: as between requests at 50/s).",
    )
    parser.add_argument(
        "--database-url",
        help="A Postgres server whose empty database to load (default: embedded Postgres).",
    )
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())
