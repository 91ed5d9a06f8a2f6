"""The blending policy's effect, measured through Recommend: quality and beyond-accuracy.

    .venv/bin/python bench/policy.py --data demo      # generated demo data
    .venv/bin/python bench/policy.py --data ml-1m     # ML-1M from ../shared/datasets

Runs the pipeline a user runs on a fresh database (embedded Postgres in a temporary
CASCADE_HOME, or a new database on --database-url's server): load the data, hold out
one positive item per evaluated user, `cascade train all`, publish the default policy
with a two-arm experiment (`bench/on` = the default home-feed policy, `bench/off` = no
policy rules: relevance order, no caps, slots or diversity), `cascade serve all`, add
--fresh-items new items through CatalogService (items the release cannot know), then
ask Recommend for every evaluated user under each arm (forcing the arm through
`experiment_ids`, so both arms see the same users, data and release).

Per arm it reports HR@10 (= recall@10: one held-out item per user) and NDCG@10, recall
and NDCG at 50, and on the first 10 items: intra-list diversity (mean pairwise cosine
distance of the release's item embeddings), category and creator coverage, novelty
(mean self-information of the served items' share of training interactions), the
share of fresh items, and Recommend's latency (median and p99, client side).

ML-1M's held-out items are the NCF test split's (the training pairs never held them);
the demo data's are each evaluated user's latest positively engaged item, deleted
before training. Writes JSON and Markdown to bench/results/.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
import yaml
from pipeline import (
    CASCADE,
    drop_database,
    fresh_database,
    machine,
    serving_env,
    step,
    wait_serving,
    write_report,
)

from cascade.blending.v1 import blending_service_pb2 as blending_pb
from cascade.catalog.v1 import catalog_service_pb2 as catalog_pb
from cascade.common.v1 import candidate_pb2
from cascade.retrieval.v1 import retrieval_service_pb2 as retrieval_pb
from cascade_client import BlendingClient, CatalogClient, RetrievalClient
from cascade_server.blending.policy import BlendingPolicies
from cascade_server.blending.release import ItemVectors
from cascade_server.features.engagement import KIND_WEIGHT_BY_NAME
from cascade_server.features.release_items import read_item_ids
from cascade_server.offline.evaluate import CatalogRecall, read_ncf_cases
from cascade_server.offline.list_metrics import coverage, intra_list_diversity, novelty, share
from cascade_server.retrieval.models import ITEM_EMBEDDINGS_FILE
from cascade_server.storage.database import make_engine
from cascade_server.storage.engagement_reader import read_engagement
from cascade_server.storage.tables import EVENT_KINDS

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "datasets" / "ml-1m"
ARMS = ("on", "off")
OFF = {
    "dedup_keys": ["item_id"],
    "max_items_per_creator": 100,
    "category_spacing": 0,
    "diversity_lambda": 1.0,
    "fresh_share": 0.0,
    "exploration_share": 0.0,
    "head_weights": {},
    "category_boosts": {},
}
POSITIVE_KINDS = tuple(kind for kind, weight in KIND_WEIGHT_BY_NAME.items() if weight > 0)
PAGE = 50


def main() -> int:
    args = _arguments()
    if args.data == "ml-1m" and not (SHARED / "ml-1m.train.pairs.gz").exists():
        print(f"skipped: {SHARED} is absent (it holds the ML-1M split)", file=sys.stderr)
        return 0
    home = Path(tempfile.mkdtemp(prefix="cascade-policy-"))
    env = {**os.environ, "CASCADE_HOME": str(home), "CASCADE_LOG_LEVEL": "WARNING"}
    database = fresh_database(args.database_url) if args.database_url else None
    if database:
        env["CASCADE_DATABASE_URL"] = database
    timings: dict[str, float] = {}
    started = time.perf_counter()
    try:
        step(timings, "db upgrade", env, "db", "upgrade")
        server_env, ports = serving_env(env, home, database)
        engine = make_engine(server_env["CASCADE_DATABASE_URL"], pool_size=1)
        try:
            held_out = _load(args, env, engine, timings)
            step(timings, "train all", env, "train", "all")
            policy = home / "bench-policy.yaml"
            policy.write_text(_bench_policy())
            step(timings, "policy publish", env, "policy", "publish", str(policy))
            results = _serve_and_measure(server_env, ports, engine, home, held_out, args)
        finally:
            engine.dispose()
        timings["total"] = time.perf_counter() - started
    finally:
        if database:
            drop_database(database)
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "data": args.data,
        "users": len(held_out),
        "fresh_items": args.fresh_items,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "arms": results,
    }
    _write(report, args.out)
    return 0


def _load(
    args: argparse.Namespace, env: dict[str, str], engine: sa.Engine, timings: dict[str, float]
) -> dict[str, str]:
    """Load the data; return {user: held-out item} for the evaluated users."""
    if args.data == "ml-1m":
        step(
            timings,
            "import",
            env,
            "import",
            "--format",
            "ncf",
            str(SHARED / "ml-1m.train.pairs.gz"),
        )
        cases = read_ncf_cases(SHARED / "ml-1m.test.rating", SHARED / "ml-1m.test.negative")
        return {case.user_id: case.positive for case in cases[: args.users]}
    step(timings, "demo data", env, "demo-data")
    return _hold_out_latest(engine, args.users)


def _hold_out_latest(engine: sa.Engine, users: int) -> dict[str, str]:
    """Delete each sampled user's latest positively engaged item (every event on it)."""
    kinds = {"kinds": list(POSITIVE_KINDS)}
    with engine.begin() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT DISTINCT ON (e.user_id) e.user_id, e.item_id, u.external_id,"
                " i.external_id FROM events e JOIN users u ON u.id = e.user_id"
                " JOIN items i ON i.id = e.item_id"
                " WHERE e.kind = ANY(:kinds) AND e.user_id IN ("
                "  SELECT user_id FROM events WHERE kind = ANY(:kinds)"
                "  GROUP BY user_id HAVING count(DISTINCT item_id) >= 5"
                "  ORDER BY md5(user_id::text) LIMIT :users)"
                " ORDER BY e.user_id, e.occurred_at DESC, e.id DESC"
            ),
            {**kinds, "users": users},
        ).all()
        for user, item, *_ in rows:
            connection.execute(
                sa.text("DELETE FROM events WHERE user_id = :u AND item_id = :i"),
                {"u": user, "i": item},
            )
    return {row[2]: row[3] for row in rows}


def _bench_policy() -> str:
    """The default policy file with the two-arm experiment added."""
    raw = yaml.safe_load(BlendingPolicies.default().text)
    raw["version"] = f"{raw['version']}+bench"
    raw["experiments"] = [
        {
            "name": "bench",
            "variants": [
                {"name": "on", "weight": 1},
                {"name": "off", "weight": 1, "surfaces": {"home_feed": OFF}},
            ],
        }
    ]
    text = yaml.safe_dump(raw, sort_keys=False)
    BlendingPolicies.parse(text, "the benchmark policy")
    return text


def _serve_and_measure(
    env: dict[str, str],
    ports: dict[str, int],
    engine: sa.Engine,
    home: Path,
    held_out: dict[str, str],
    args: argparse.Namespace,
) -> dict[str, dict[str, float]]:
    env = {**env, "CASCADE_SNAPSHOT_REFRESH_SECONDS": "2"}
    server = subprocess.Popen([*CASCADE, "serve", "all"], env=env, stderr=subprocess.DEVNULL)
    try:
        for port in ports.values():
            wait_serving(f"127.0.0.1:{port}")
        fresh = _add_fresh_items(engine, ports, args.fresh_items)
        data = read_engagement(engine)
        categories = dict(zip(data.item_ids, data.item_categories, strict=True))
        creators = {item: [c] for item, c in zip(data.item_ids, data.item_creators, strict=True)}
        codes = [code for code, kind in enumerate(EVENT_KINDS) if kind in POSITIVE_KINDS]
        positive = np.isin(data.kinds, codes)
        interactions = Counter(data.item_ids[i] for i in data.event_items[positive].tolist())
        release = _active_release(home)
        vectors = ItemVectors(read_item_ids(release), np.load(release / ITEM_EMBEDDINGS_FILE))
        n_categories = len({c for cats in data.item_categories for c in cats})
        n_creators = len({c for c in data.item_creators if c})
        results = {}
        with BlendingClient(f"127.0.0.1:{ports['BLENDING']}") as client:
            for arm in ARMS:
                pages, latencies = _pages(client, held_out, arm)
                recall = CatalogRecall(ks=(10, PAGE))
                for user, page in pages.items():
                    recall.add(page, held_out[user])
                tops = [page[:10] for page in pages.values()]
                results[arm] = {
                    **recall.summary(),
                    "ild@10": intra_list_diversity(tops, vectors),
                    "category_coverage@10": coverage(tops, categories, n_categories),
                    "creator_coverage@10": coverage(tops, creators, n_creators),
                    "novelty@10": novelty(tops, interactions),
                    "fresh_share@10": share(tops, fresh.__contains__),
                    "latency_p50_ms": float(np.percentile(latencies, 50) * 1000),
                    "latency_p99_ms": float(np.percentile(latencies, 99) * 1000),
                }
        return results
    finally:
        server.terminate()
        server.wait(60)


def _add_fresh_items(engine: sa.Engine, ports: dict[str, int], n: int) -> set[str]:
    """``n`` new items (categories and creators like existing items'), once retrieval serves
    them from its fresh side index."""
    rng = np.random.default_rng(7)
    with engine.connect() as connection:
        sample = connection.execute(
            sa.text("SELECT creator_id, categories FROM items ORDER BY md5(id::text) LIMIT :n"),
            {"n": n},
        ).all()
    items = [
        catalog_pb.Item(
            item_id=f"fresh-{k:04d}",
            creator_id=row[0],
            categories=list(row[1]),
            title=f"Fresh item {k} ({rng.integers(1 << 30)})",
        )
        for k, row in enumerate(sample)
    ]
    with CatalogClient(f"127.0.0.1:{ports['CATALOG']}") as catalog:
        catalog.upsert_items(catalog_pb.UpsertItemsRequest(items=items))
    wanted = {item.item_id for item in items}
    request = retrieval_pb.RetrieveCandidatesRequest(
        source_limits=[
            retrieval_pb.SourceLimit(source=source, limit=limit)
            for source, limit in [
                (candidate_pb2.CANDIDATE_SOURCE_FRESH, 2000),
                (candidate_pb2.CANDIDATE_SOURCE_POPULAR, 0),
                (candidate_pb2.CANDIDATE_SOURCE_TRENDING, 0),
            ]
        ]
    )
    deadline = time.monotonic() + 60
    with RetrievalClient(f"127.0.0.1:{ports['RETRIEVAL']}") as retrieval:
        while time.monotonic() < deadline:
            found = {c.item_id for c in retrieval.retrieve_candidates(request).candidates}
            if wanted <= found:
                return wanted
            time.sleep(0.5)
    raise RuntimeError("retrieval did not serve the new items within 60 s")


def _pages(
    client: BlendingClient, held_out: dict[str, str], arm: str
) -> tuple[dict[str, list[str]], list[float]]:
    pages: dict[str, list[str]] = {}
    latencies: list[float] = []
    for user in held_out:
        request = blending_pb.RecommendRequest(
            user_id=user, page_size=PAGE, experiment_ids=[f"bench/{arm}"]
        )
        started = time.perf_counter()
        response = client.recommend(request, timeout=10)
        latencies.append(time.perf_counter() - started)
        assert response.experiments[0].variant == arm
        pages[user] = [item.item_id for item in response.items]
    return pages, latencies


def _active_release(home: Path) -> Path:
    releases = [p for p in (home / "releases").iterdir() if not p.name.startswith(".")]
    return max(releases, key=lambda p: p.name)


def _write(report: dict[str, Any], out: Path) -> None:
    arms = report["arms"]
    names = list(arms["on"])
    lines = [
        f"# Blending policy on and off, {report['data']} "
        f"({report['users']:,} users, {report['fresh_items']} fresh items)",
        "",
        f"{report['date']} — {report['machine']}",
        "",
        "| metric | policy on | policy off | on / off |",
        "|---|---|---|---|",
    ]
    for name in names:
        on, off = arms["on"][name], arms["off"][name]
        ratio = f"{on / off:.2f}" if off else "n/a"
        lines.append(f"| {name} | {on:.4f} | {off:.4f} | {ratio} |")
    write_report(out, f"policy-{report['data']}", report, lines)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", choices=["demo", "ml-1m"], default="demo")
    parser.add_argument("--users", type=int, default=1000, help="Users evaluated.")
    parser.add_argument("--fresh-items", type=int, default=50, help="Items added after training.")
    parser.add_argument(
        "--database-url",
        help="A Postgres server to create a fresh database on (default: embedded Postgres).",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())
