"""Helpers for tests that run `cascade` as a user would: real processes, free ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

T = TypeVar("T")

CASCADE = [sys.executable, "-m", "cascade_server"]
PORT_NAMES = ("BLENDING", "RETRIEVAL", "RANKING", "CATALOG")


def free_ports(count: int) -> list[int]:
    """``count`` TCP ports free on the loopback interface right now."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def cascade_env(
    database_url: str, home: Path, **settings: str
) -> tuple[dict[str, str], dict[str, int]]:
    """Environment for `cascade` commands on ``database_url``, every server (and its metrics
    endpoint) on a free port."""
    free = free_ports(2 * len(PORT_NAMES))
    ports = dict(zip(PORT_NAMES, free, strict=False))
    metrics_ports = dict(zip(PORT_NAMES, free[len(PORT_NAMES) :], strict=True))
    env = {
        **os.environ,
        "CASCADE_DATABASE_URL": database_url,
        "CASCADE_HOME": str(home),
        "CASCADE_SNAPSHOT_REFRESH_SECONDS": "1",
        "CASCADE_GRACE_SECONDS": "2",
        "CASCADE_LOG_FORMAT": "json",
        "COLUMNS": "200",
        **{f"CASCADE_{name}_PORT": str(port) for name, port in ports.items()},
        **{f"CASCADE_{name}_METRICS_PORT": str(port) for name, port in metrics_ports.items()},
        **{f"CASCADE_{key.upper()}": value for key, value in settings.items()},
    }
    return env, ports


def cascade(
    env: dict[str, str], *args: str, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run one `cascade` command; by default it must succeed."""
    result = subprocess.run(
        [*CASCADE, *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def is_serving(target: str) -> bool:
    """Whether the server at ``target`` reports SERVING on the standard health service."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            request = health_pb2.HealthCheckRequest()
            status = stub.Check(request, timeout=1).status  # type: ignore[attr-defined]
        except grpc.RpcError:
            return False
        return bool(status == health_pb2.HealthCheckResponse.SERVING)


def wait_for(check: Callable[[], T], timeout_s: float, what: str) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
