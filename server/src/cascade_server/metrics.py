"""Prometheus metrics: what each server counts, and the HTTP endpoint that serves them.

Every server process serves its own ``/metrics`` (``CASCADE_<STAGE>_METRICS_PORT``).
Names start with ``cascade_``; durations are in seconds. The metrics live in the
process's default registry, so a process running several servers (the test suite)
serves one combined set from each of its endpoints.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS = (
    0.001,
    0.002,
    0.003,
    0.004,
    0.005,
    0.006,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
"""Millisecond steps up to 6 ms, each stage's p99 budget (docs/performance.md), so the
share of calls within it is read from a bucket exactly rather than between two."""

RPC_SECONDS = Histogram(
    "cascade_rpc_duration_seconds",
    "Time a server spent on a call, by method (refused calls included).",
    ["method"],
    buckets=_LATENCY_BUCKETS,
)
RPC_CALLS = Counter(
    "cascade_rpc_calls_total", "Calls answered, by method and gRPC status code.", ["method", "code"]
)
CALLS_IN_FLIGHT = Gauge(
    "cascade_rpc_calls_in_flight", "Calls being worked on (health checks and reflection aside)."
)
STAGE_SECONDS = Histogram(
    "cascade_stage_duration_seconds",
    "Time each funnel stage took within Recommend, seen from the front door.",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
)
STAGE_CANDIDATES = Histogram(
    "cascade_stage_candidates",
    "Candidates each funnel stage passed on within Recommend.",
    ["stage"],
    buckets=(0, 10, 20, 50, 100, 200, 300, 500, 1000, 2000),
)
DEGRADED = Counter(
    "cascade_degraded_total",
    "Stages or components that did not contribute normally, by why and what replaced them.",
    ["stage", "reason", "fallback"],
)
CIRCUIT_OPEN = Gauge(
    "cascade_circuit_open",
    "1 while the front door's circuit breaker to a stage is open (calls skipped), else 0.",
    ["stage"],
)
RELEASE_LOADS = Counter(
    "cascade_release_loads_total",
    "Releases a component swapped in (result: loaded, or reused when its inputs were the "
    "serving release's) or rejected (the previous one kept serving).",
    ["component", "result"],
)
ACTIVE_RELEASE = Gauge(
    "cascade_active_release",
    "1 for the release each component serves (none before the first release).",
    ["component", "release_id"],
)
SNAPSHOT_BUILDS = Counter(
    "cascade_snapshot_builds_total",
    "Engagement snapshots built from Postgres (built, failed) or loaded from the "
    "snapshot file (loaded), by result.",
    ["result"],
)
SNAPSHOT_SECONDS = Gauge(
    "cascade_snapshot_build_seconds",
    "How long the latest engagement snapshot took to read and build.",
)

_active: dict[str, str] = {}
_active_lock = threading.Lock()


def set_active_release(component: str, release_id: str) -> None:
    """Mark ``release_id`` as the one ``component`` serves (and the previous one not)."""
    with _active_lock:
        previous = _active.get(component)
        if previous is not None:
            ACTIVE_RELEASE.remove(component, previous)
        ACTIVE_RELEASE.labels(component, release_id).set(1)
        _active[component] = release_id


class MetricsEndpoint:
    """The ``/metrics`` HTTP endpoint of one server (a daemon thread)."""

    def __init__(self, host: str, port: int) -> None:
        server, thread = start_http_server(port, addr=host)
        self._server: WSGIServer = server
        self._thread = thread
        self.port = int(server.server_port)

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
