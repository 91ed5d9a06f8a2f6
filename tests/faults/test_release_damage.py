"""Promise: a damaged release never replaces a good one.

A real release is trained, then copies of it are damaged the ways releases go wrong —
an Annoy index cut short, a LightGBM model of garbage (both re-signed, as a broken
build would sign them), an artifact missing — and made active under running servers.
Each is refused: the servers check it in a child process first, keep serving the good
release, and the refusal shows in `cascade release list` and the metrics. A publish
that cannot write (a file-size limit stands in for a full disk) publishes nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from support.metrics import scrape, total
from support.processes import CASCADE, cascade_env
from support.stack import ServerStack, running_stack

from cascade.ranking.v1 import ranking_service_pb2 as ranking_pb
from cascade.retrieval.v1 import retrieval_service_pb2 as retrieval_pb
from cascade_client import RankingClient, RetrievalClient
from cascade_server.artifacts.manifest import MANIFEST
from cascade_server.artifacts.registry import ReleaseRegistry
from cascade_server.blending.policy import BlendingPolicies
from cascade_server.offline.build import Build, new_release_id
from cascade_server.offline.index import IndexConfig
from cascade_server.offline.ranker import RankerConfig
from cascade_server.offline.train import build_item_index, publish, train_ranker, train_retrieval
from cascade_server.offline.two_tower import TwoTowerConfig
from cascade_server.ranking.models import LIGHT_RANKER_FILE
from cascade_server.retrieval.models import INDEX_FILE
from cascade_server.settings import ServiceName
from cascade_server.storage.database import make_engine


@pytest.fixture(scope="module")
def trained(shared_demo_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    engine = make_engine(shared_demo_database_url, pool_size=2)
    home = tmp_path_factory.mktemp("home")
    fast = TwoTowerConfig(epochs=1, embedding_dim=16, batch_size=1024)
    build = train_retrieval(engine, home / "build", fast, lambda step, done: None)
    # Served by Annoy: a server loads only the index its release searches with.
    build_item_index(engine, build.path, IndexConfig(n_trees=10, search="annoy"))
    train_ranker(
        engine, build.path, RankerConfig(negatives=20, max_rounds=30), lambda step, done: None
    )
    registry = ReleaseRegistry(engine, home / "releases")
    good = publish(build.path, registry, BlendingPolicies.default()).release_id
    yield home, registry, good
    engine.dispose()


@pytest.fixture(scope="module")
def stack(shared_demo_database_url: str, trained: Any) -> Iterator[ServerStack]:
    home, _, _ = trained
    with running_stack(
        shared_demo_database_url,
        (ServiceName.RETRIEVAL, ServiceName.RANKING),
        home=home,
        release_poll_seconds=0.2,
    ) as servers:
        yield servers


def _served(stack: ServerStack) -> tuple[str, str]:
    with (
        RetrievalClient(stack.target(ServiceName.RETRIEVAL)) as retrieval,
        RankingClient(stack.target(ServiceName.RANKING)) as ranking,
    ):
        retrieved = retrieval.retrieve_candidates(
            retrieval_pb.RetrieveCandidatesRequest(max_candidates=10)
        )
        ranked = ranking.rank_candidates(ranking_pb.RankCandidatesRequest(item_ids=["i0001"]))
    return retrieved.release_id, ranked.release_id


def _serving(stack: ServerStack, retrieval: str, ranking: str | None = None) -> None:
    """Wait until retrieval serves ``retrieval`` and ranking ``ranking`` (by default the
    same release); a swap takes a check in a child process first."""
    wanted = (retrieval, ranking or retrieval)
    deadline = time.monotonic() + 60
    while (served := _served(stack)) != wanted:
        assert time.monotonic() < deadline, f"serving {served}, not {wanted}"
        time.sleep(0.2)


def _resigned_copy(registry: ReleaseRegistry, good: str, damage: Callable[[Path], None]) -> str:
    """Publish (active) a copy of ``good`` with ``damage`` done and the manifest re-signed."""
    with registry.staging() as staging:
        shutil.copytree(registry.path_of(good), staging)
        (staging / MANIFEST).unlink()
        damage(staging)
        Build(staging).manifest(new_release_id())
        return registry.publish(staging).release_id


def _wait_rejected(registry: ReleaseRegistry, release_id: str, component: str) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        row = next(r for r in registry.list() if r.release_id == release_id)
        found = [r for r in row.rejections if r.startswith(f"{component}: ")]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"{component} did not reject {release_id}")


def _truncate_index(staging: Path) -> None:
    index = staging / INDEX_FILE
    index.write_bytes(index.read_bytes()[: index.stat().st_size // 3])


def _garbage_ranker(staging: Path) -> None:
    (staging / LIGHT_RANKER_FILE).write_bytes(os.urandom(4096))


@pytest.mark.parametrize(
    ("damage", "component"),
    [(_truncate_index, "retrieval"), (_garbage_ranker, "ranking")],
    ids=["annoy-cut-short", "lightgbm-garbage"],
)
def test_a_damaged_release_is_refused_and_the_good_one_keeps_serving(
    stack, trained, damage, component
):
    _, registry, good = trained
    _serving(stack, good)
    metrics = stack.servers[ServiceName(component)].metrics
    assert metrics is not None
    before = total(scrape(metrics.port), "cascade_release_loads_total", result="rejected")
    bad = _resigned_copy(registry, good, damage)
    reason = _wait_rejected(registry, bad, component)
    assert "child process" in reason
    # The damaged stage keeps the good release; the other, whose part is sound, moves on.
    _serving(stack, *(good if stage == component else bad for stage in ("retrieval", "ranking")))
    after = total(scrape(metrics.port), "cascade_release_loads_total", result="rejected")
    assert after - before >= 1
    registry.activate(good)


def test_a_release_missing_an_artifact_is_refused(stack, trained, shared_demo_database_url):
    _, registry, good = trained
    _serving(stack, good)
    with registry.staging() as staging:
        shutil.copytree(registry.path_of(good), staging)
        (staging / MANIFEST).unlink()
        Build(staging).manifest(new_release_id())
        broken = registry.publish(staging, activate=False).release_id
    (registry.path_of(broken) / LIGHT_RANKER_FILE).unlink()
    engine = make_engine(shared_demo_database_url, pool_size=1)
    with engine.begin() as connection:  # activated behind the registry's back
        connection.execute(
            sa.text("UPDATE releases SET status = 'retired' WHERE status = 'active'")
        )
        connection.execute(
            sa.text("UPDATE releases SET status = 'active' WHERE release_id = :r"), {"r": broken}
        )
    engine.dispose()
    reason = _wait_rejected(registry, broken, "ranking")
    assert LIGHT_RANKER_FILE in reason
    assert LIGHT_RANKER_FILE in _wait_rejected(registry, broken, "retrieval")  # all must be there
    _serving(stack, good)
    registry.activate(good)


def test_a_publish_that_cannot_write_publishes_nothing(trained, shared_demo_database_url, tmp_path):
    home, registry, good = trained
    registry.activate(good)
    env, _ = cascade_env(shared_demo_database_url, home)
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: too-big-to-write\n")
    releases_before = {r.release_id for r in registry.list()}

    # Every write past 16 bytes fails. The limit is set by a small Python that then
    # becomes the CLI, not by a preexec_fn: that would run in a fork of this process,
    # whose gRPC threads do not survive a fork (a gRPC abort in the child, seen in CI).
    small_files = (
        "import os, resource, sys; "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (16, 16)); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    done = subprocess.run(
        [sys.executable, "-c", small_files, *CASCADE, "policy", "publish", str(policy)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "nothing was published" in done.stdout + done.stderr
    assert {r.release_id for r in registry.list()} == releases_before
    assert registry.active() == good
    staging = home / "releases" / ".staging"
    assert not staging.exists() or not any(staging.iterdir())
