"""End to end: data → `cascade train all` → serve → a second release swaps in under traffic
→ rollback → a new blending policy with an experiment swaps in → a new catalog item is
served from the fresh side index → a corrupt release is refused while the good one keeps
serving."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from functools import partial

import pytest
import sqlalchemy as sa
from support.metrics import scrape, total
from support.processes import CASCADE, cascade, cascade_env, is_serving, wait_for

from cascade.blending.v1 import blending_service_pb2 as blending_pb
from cascade.catalog.v1 import catalog_service_pb2 as catalog_pb
from cascade.common.v1 import trace_pb2
from cascade.ranking.v1 import ranking_service_pb2 as ranking_pb
from cascade_client import BlendingClient, CatalogClient, RankingClient

pytestmark = pytest.mark.e2e

POLICY = """
version: e2e-1
surfaces:
  home_feed: {max_items_per_creator: 2, fresh_share: 0.1, diversity_lambda: 0.8}
experiments:
  - name: cap
    variants:
      - {name: control, weight: 1}
      - name: strict
        weight: 1
        heavy_top_n: 10
        surfaces: {home_feed: {max_items_per_creator: 1}}
"""


def active_release(env):
    lines = cascade(env, "release", "list").stdout.splitlines()
    return next(line.split("│")[1].strip() for line in lines if "active" in line)


def serves(metrics_port, component, release_id):
    metrics = scrape(metrics_port)
    return total(metrics, "cascade_active_release", component=component, release_id=release_id) == 1


def release_loads(metrics_port, component):
    """How many releases a server's component loaded, and how many it took over loaded."""
    metrics = scrape(metrics_port)
    return {
        result: total(metrics, "cascade_release_loads_total", component=component, result=result)
        for result in ("loaded", "reused")
    }


@pytest.fixture
def trained_env(empty_database_url, tmp_path):
    env, ports = cascade_env(empty_database_url, tmp_path / "home", release_poll_seconds="0.5")
    cascade(env, "db", "upgrade")
    cascade(
        env,
        *("demo-data", "--users", "200", "--items", "600", "--creators", "30"),
        *("--categories", "8", "--events", "30000"),
    )
    cascade(env, "train", "all", "--epochs", "1", "--negatives", "30")
    return env, ports


def test_a_release_is_served_swapped_under_traffic_rolled_back_and_protected(
    trained_env, tmp_path, empty_database_url
):
    env, ports = trained_env
    first = active_release(env)
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [*CASCADE, "serve", "all"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    front = f"127.0.0.1:{ports['BLENDING']}"
    ranking_target = f"127.0.0.1:{ports['RANKING']}"
    try:
        for port in ports.values():
            wait_for(partial(is_serving, f"127.0.0.1:{port}"), 120, f"port {port}")
        with BlendingClient(front) as blending, RankingClient(ranking_target) as ranking:

            def release_served():
                request = blending_pb.RecommendRequest(user_id="u042", page_size=10)
                return blending.recommend(request, timeout=5).release_id

            wait_for(lambda: release_served() == first, 30, "the first release")
            ranked = ranking.rank_candidates(
                ranking_pb.RankCandidatesRequest(item_ids=["i001", "i002", "i003"])
            )
            assert ranked.scorer in {"light", "light+heavy"}  # the release's validated choice
            assert ranked.release_id == first
            assert "light" in ranked.candidates[0].stage_scores

            # Traffic flows while a second release is trained and published.
            failures: list[Exception] = []
            seen: set[str] = set()
            stop = threading.Event()

            def traffic():
                with BlendingClient(front) as client:
                    while not stop.is_set():
                        try:
                            response = client.recommend(
                                blending_pb.RecommendRequest(user_id="u007", page_size=20),
                                timeout=5,
                            )
                            assert len(response.items) == 20
                            seen.add(response.release_id)
                        except Exception as error:
                            failures.append(error)
                        time.sleep(0.02)

            sender = threading.Thread(target=traffic)
            sender.start()
            try:
                cascade(env, "train", "all", "--epochs", "1", "--negatives", "30")
                second = active_release(env)
                assert second != first
                wait_for(lambda: second in seen, 60, "the second release to serve")
            finally:
                stop.set()
                sender.join(30)
            assert failures == []
            assert {first, second} <= seen

            cascade(env, "release", "rollback")
            wait_for(lambda: release_served() == first, 30, "the rollback")

            # A new blending policy with an experiment: a release of the same models that
            # the running servers swap in.
            metrics_ports = {
                stage: int(env[f"CASCADE_{stage.upper()}_METRICS_PORT"])
                for stage in ("retrieval", "ranking")
            }
            for stage, port in metrics_ports.items():
                wait_for(partial(serves, port, stage, first), 30, f"{stage}'s rollback")
            loads_before = {
                stage: release_loads(port, stage) for stage, port in metrics_ports.items()
            }
            (tmp_path / "policy.yaml").write_text(POLICY)
            cascade(env, "policy", "publish", str(tmp_path / "policy.yaml"))
            third = active_release(env)
            wait_for(lambda: release_served() == third, 30, "the new policy")
            page = blending.recommend(
                blending_pb.RecommendRequest(user_id="u042", page_size=20), timeout=5
            )
            assert page.policy_version == "e2e-1"
            # Only the policy changed: retrieval and ranking swap the new release in with
            # the models they have loaded (blending loads the policy).
            for stage in ("retrieval", "ranking"):
                port = metrics_ports[stage]
                wait_for(partial(serves, port, stage, third), 30, f"{stage}'s new policy")
                assert release_loads(port, stage) == {
                    "loaded": loads_before[stage]["loaded"],
                    "reused": loads_before[stage]["reused"] + 1,
                }
            [assignment] = page.experiments
            assert (assignment.experiment, assignment.forced) == ("cap", False)
            strict = blending.recommend(
                blending_pb.RecommendRequest(
                    user_id="u042", page_size=20, experiment_ids=["cap/strict"]
                ),
                timeout=5,
            )
            assert (strict.experiments[0].variant, strict.experiments[0].forced) == (
                "strict",
                True,
            )
            creators = [item.creator_id for item in strict.items]
            assert len(creators) == 20
            assert max(creators.count(c) for c in creators) == 1

            # An item added to the catalog is recommendable before any retraining: the
            # fresh side index proposes it and the policy's fresh slots place it.
            with CatalogClient(f"127.0.0.1:{ports['CATALOG']}") as catalog:
                catalog.upsert_items(
                    catalog_pb.UpsertItemsRequest(
                        items=[catalog_pb.Item(item_id="brand-new", creator_id="c-new")]
                    )
                )

            def fresh_slot():
                response = blending.recommend(
                    blending_pb.RecommendRequest(user_id="u042", page_size=20, debug=True),
                    timeout=5,
                )
                return next(
                    (
                        c
                        for c in response.trace.candidates
                        if c.item_id == "brand-new"
                        and c.blend_action == trace_pb2.BLEND_ACTION_PLACED
                    ),
                    None,
                )

            placed = wait_for(fresh_slot, 30, "the new item in a fresh slot")
            assert placed.slot == "fresh"

            # A release whose files were damaged is refused by `activate` and, when made
            # active behind Cascade's back, by the servers, which keep the good one.
            index = tmp_path / "home" / "releases" / second / "items.ann"
            index.write_bytes(index.read_bytes()[: index.stat().st_size // 2])
            refused = cascade(env, "release", "activate", second, check=False)
            assert refused.returncode == 2
            assert "does not match" in refused.stderr
            engine = sa.create_engine(empty_database_url)
            with engine.begin() as connection:
                connection.execute(sa.text("UPDATE releases SET status = 'retired'"))
                connection.execute(
                    sa.text("UPDATE releases SET status = 'active' WHERE release_id = :r"),
                    {"r": second},
                )
            engine.dispose()
            time.sleep(3)
            assert release_served() == third
            # The refusal shows in the metrics too; the active release is still the third.
            metrics = scrape(int(env["CASCADE_RANKING_METRICS_PORT"]))
            rejected = total(
                metrics, "cascade_release_loads_total", component="ranking", result="rejected"
            )
            assert rejected >= 1
            assert total(metrics, "cascade_active_release", component="ranking") == 1
            assert total(metrics, "cascade_active_release", release_id=third) == 1
            assert (
                ranking.rank_candidates(
                    ranking_pb.RankCandidatesRequest(item_ids=["i001"])
                ).release_id
                == third
            )
            # Nor is a damaged release re-signed by publishing a policy over it.
            repolicied = cascade(
                env, "policy", "publish", str(tmp_path / "policy.yaml"), check=False
            )
            assert repolicied.returncode == 2
            assert "does not match" in repolicied.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        log.close()
    text = (tmp_path / "serve.log").read_text()
    assert "release rejected" in text
