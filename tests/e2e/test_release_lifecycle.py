"""End to end: data → `cascade train all` → serve → a second release swaps in under traffic
→ rollback → a corrupt release is refused while the good one keeps serving."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest
import sqlalchemy as sa
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cascade.blending.v1 import blending_service_pb2 as blending_pb
from cascade.ranking.v1 import ranking_service_pb2 as ranking_pb
from cascade_client import BlendingClient, RankingClient

pytestmark = pytest.mark.e2e

CASCADE = [sys.executable, "-m", "cascade_server"]
PORTS = ("BLENDING", "RETRIEVAL", "RANKING", "CATALOG")


def free_ports(count):
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def cascade(env, *args, check=True):
    result = subprocess.run([*CASCADE, *args], env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def serving(target):
    with grpc.insecure_channel(target) as channel:
        request = health_pb2.HealthCheckRequest()
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            status = stub.Check(request, timeout=1).status  # type: ignore[attr-defined]
        except grpc.RpcError:
            return False
        return status == health_pb2.HealthCheckResponse.SERVING


def wait_for(check, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def active_release(env):
    lines = cascade(env, "release", "list").stdout.splitlines()
    return next(line.split("│")[1].strip() for line in lines if "active" in line)


@pytest.fixture
def trained_env(empty_database_url, tmp_path):
    ports = dict(zip(PORTS, free_ports(4), strict=True))
    env = {
        **os.environ,
        "CASCADE_DATABASE_URL": empty_database_url,
        "CASCADE_HOME": str(tmp_path / "home"),
        "CASCADE_SNAPSHOT_REFRESH_SECONDS": "1",
        "CASCADE_RELEASE_POLL_SECONDS": "0.5",
        "CASCADE_GRACE_SECONDS": "2",
        "CASCADE_LOG_FORMAT": "json",
        "COLUMNS": "200",
        **{f"CASCADE_{name}_PORT": str(port) for name, port in ports.items()},
    }
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
            wait_for(lambda port=port: serving(f"127.0.0.1:{port}"), 120, f"port {port}")
        with BlendingClient(front) as blending, RankingClient(ranking_target) as ranking:

            def release_served():
                request = blending_pb.RecommendRequest(user_id="u042", page_size=10)
                return blending.recommend(request, timeout=5).release_id

            wait_for(lambda: release_served() == first, 30, "the first release")
            ranked = ranking.rank_candidates(
                ranking_pb.RankCandidatesRequest(item_ids=["i001", "i002", "i003"])
            )
            assert ranked.scorer == "light+heavy"
            assert ranked.release_id == first
            assert set(ranked.candidates[0].stage_scores) == {"light", "heavy"}

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
            assert release_served() == first
            assert (
                ranking.rank_candidates(
                    ranking_pb.RankCandidatesRequest(item_ids=["i001"])
                ).release_id
                == first
            )
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        log.close()
    text = (tmp_path / "serve.log").read_text()
    assert "release rejected" in text
