"""Latency, throughput and cost of the running servers, under open-loop load.

    make bench                                            # every scenario, demo data
    .venv/bin/python bench/load.py --scenarios stages,recommend --duration 10
    .venv/bin/python bench/load.py --items 1000000        # a 1M-item synthetic catalog

Sets up what a user runs, on a fresh database (embedded Postgres in a temporary
CASCADE_HOME, or a new database on --database-url's server): `cascade demo-data`
(with --items/--users/--events to size it), `cascade train all`, then `cascade serve
all` on free loopback ports. The load generator (bench/openloop.py, grpc.aio, one
process on the same two cores) sends at a fixed rate and counts latency from each
request's due time. Scenarios:

* stages: RetrieveCandidates, RankCandidates (500 candidates) and BlendCandidates
  (500 ranked candidates) at each --rates value, one message per candidate; retrieval
  and ranking also in the compact form the front door uses (columns; ranking is given
  retrieval's catalog rows with the ids); first, the ranking server's health check, a
  call that does no work: the floor under every stage's latency;
* recommend: Recommend (page of 20) at each --rates value;
* traced: Recommend with debug (the trace a caller asks for when debugging) at the
  first --rates value, after plain Recommend at that rate as its baseline;
* idle-gap: the health check, the compact stage methods and Recommend one at a time,
  each request sent 0, 3, 10, 20 or 50 ms after the last answer: what the machine adds
  to a request that finds the servers idle, against back to back;
* max-rate: Recommend at rising rates (10/s up to 500/s) until p99 reaches 50 ms or
  a request fails;
* cold-start: each stage's server started alone on a published release: time to
  SERVING, the client's connection (timed apart), the first request's latency, then
  warm p99 of the same request;
* swap: Recommend at 100/s while `cascade policy publish` makes a new release (the
  same models with a new policy: retrieval and ranking keep what they loaded, blending
  loads the policy), or with --swap-to while an earlier release with other models is
  activated (every server loads it); errors and p99 during the swap against before,
  and per half-second the slowest request beside each server's CPU, its release
  check's (child process) and the command's;
* processes: Recommend at each --rates value with one process per stage, then with
  two per stage sharing each port (CASCADE_<STAGE>_PROCESSES=2, SO_REUSEPORT), the
  generator spreading its calls over several connections;
* naive: RankCandidates' work in-process for the sampled users' 500 candidates, three
  ways (bench/naive.py): optimised (snapshot in memory, one batched model call), with
  per-request Postgres reads, and naive (those reads and one model call per candidate);
* index: Annoy over --index-items x 64 synthetic clustered vectors (50 trees, two
  build threads): build
  time and peak memory (in a child process), recall@500 and query latency at several
  search_k, against exact numpy search measured in the same run.

Every load point reports p50/p90/p99/max, throughput, errors, and each server's CPU
(cores) and RSS; the p50/p99 of the requests sent while the host stole no CPU and of
those during which none of the machine's busy kernel threads ran; the servers' own
time for the methods it drove (from their call-duration histograms); and, for the
stage methods and Recommend, the user with most requests among the slowest 1 % and the
p99 without that user. Results go to bench/results/load-*.{json,md} with PNG plots.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import naive
import numpy as np
import psutil
import sqlalchemy as sa
from grpc_health.v1 import health_pb2, health_pb2_grpc
from openloop import (
    BUDGET_S,
    CpuTimeline,
    DueTimer,
    KernelThreads,
    LoadResult,
    ServerDurations,
    UsageMeter,
    open_loop,
    server_processes,
)
from pipeline import (
    CASCADE,
    STEAL_FREE_PCT,
    StealWindows,
    StolenTime,
    describe_speed,
    drop_database,
    free_port,
    fresh_database,
    machine,
    machine_speed,
    percentiles,
    serving_env,
    step,
    wait_serving,
    write_report,
)

from cascade.blending.v1 import (
    blending_service_pb2 as blending_pb,
    blending_service_pb2_grpc as blending_grpc,
)
from cascade.common.v1 import context_pb2
from cascade.ranking.v1 import (
    ranking_service_pb2 as ranking_pb,
    ranking_service_pb2_grpc as ranking_grpc,
)
from cascade.retrieval.v1 import (
    retrieval_service_pb2 as retrieval_pb,
    retrieval_service_pb2_grpc as retrieval_grpc,
)
from cascade_server.artifacts.manifest import read_manifest
from cascade_server.storage.database import make_engine

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("retrieval", "ranking", "blending")
SCENARIOS = (
    "stages",
    "recommend",
    "traced",
    "idle-gap",
    "max-rate",
    "cold-start",
    "swap",
    "processes",
    "naive",
    "index",
)
TIMEOUT_S = 2.0
MAX_RATE_P99_MS = 50.0

Call = Callable[[int], Awaitable[Any]]


class Workload:
    """Requests for the scenarios: a sample of users, their candidates and rankings."""

    def __init__(
        self,
        ports: dict[str, int],
        users: list[str],
        connections: int = 1,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        # Several connections to the front door (each a channel with its own subchannel
        # pool) when several processes share its port: the kernel gives each connection
        # to one process, so calls are spread by taking the connections in turn.
        options = [("grpc.use_local_subchannel_pool", 1)] if connections > 1 else []
        self.channels = [
            grpc.aio.insecure_channel(f"127.0.0.1:{ports[name.upper()]}", options=options)
            for name in STAGES
            for _ in range(connections if name == "blending" else 1)
        ]
        self.retrieval = retrieval_grpc.RetrievalServiceStub(self.channels[0])
        self.ranking = ranking_grpc.RankingServiceStub(self.channels[1])
        self.blending = [blending_grpc.BlendingServiceStub(c) for c in self.channels[2:]]
        self.health = health_pb2_grpc.HealthStub(self.channels[1])
        self.users = users
        self.candidates: list[list[str]] = []
        self.rows: list[list[int]] = []
        """Each user's candidates' rows in retrieval's catalog, as the front door passes them."""
        self.ranked: list[Any] = []
        self.timeout_s = timeout_s

    async def prepare(self) -> None:
        """Each user's 500 retrieval candidates and their ranking, fetched once."""
        for user in self.users:
            request = retrieval_pb.RetrieveCandidatesRequest(
                context=_context(user), max_candidates=500, columnar=True
            )
            for attempt in range(3):  # servers still starting may skip late sources
                retrieved = await self.retrieval.RetrieveCandidates(
                    request, timeout=max(10, self.timeout_s)
                )
                if retrieved.columns.item_ids:
                    break
                await asyncio.sleep(1.0 + attempt)
            else:
                raise RuntimeError(
                    f"retrieval proposed no candidates for {user} three times; degraded: "
                    f"{[d.message for d in retrieved.degraded]}"
                )
            items = list(retrieved.columns.item_ids)
            self.candidates.append(items)
            self.rows.append(list(retrieved.columns.item_rows))
            ranked = await self.ranking.RankCandidates(
                ranking_pb.RankCandidatesRequest(context=_context(user), item_ids=items),
                timeout=max(10, self.timeout_s),
            )
            self.ranked.append(ranked.candidates)

    def calls(self) -> dict[str, Call]:
        """One request function per measured method; ``i`` picks the user."""
        n = len(self.users)

        def retrieve(columnar: bool) -> Call:
            async def call(i: int) -> Any:
                request = retrieval_pb.RetrieveCandidatesRequest(
                    context=_context(self.users[i % n]), max_candidates=500, columnar=columnar
                )
                return await self.retrieval.RetrieveCandidates(request, timeout=self.timeout_s)

            return call

        def rank(columnar: bool) -> Call:
            async def call(i: int) -> Any:
                request = ranking_pb.RankCandidatesRequest(
                    context=_context(self.users[i % n]), item_ids=self.candidates[i % n]
                )
                if columnar:
                    request.columnar = True
                    request.item_rows.extend(self.rows[i % n])
                return await self.ranking.RankCandidates(request, timeout=self.timeout_s)

            return call

        async def blend(i: int) -> Any:
            request = blending_pb.BlendCandidatesRequest(
                context=_context(self.users[i % n]), candidates=self.ranked[i % n], page_size=20
            )
            stub = self.blending[i % len(self.blending)]
            return await stub.BlendCandidates(request, timeout=self.timeout_s)

        def recommend(debug: bool) -> Call:
            async def call(i: int) -> Any:
                request = blending_pb.RecommendRequest(
                    user_id=self.users[i % n], page_size=20, debug=debug
                )
                stub = self.blending[i % len(self.blending)]
                return await stub.Recommend(request, timeout=self.timeout_s)

            return call

        async def no_op(i: int) -> Any:
            check = self.health.Check  # type: ignore[attr-defined]  # the stub is untyped
            return await check(_HEALTH_CHECK, timeout=self.timeout_s)

        return {
            NO_OP: no_op,
            "RetrieveCandidates": retrieve(columnar=False),
            "RetrieveCandidates (columns)": retrieve(columnar=True),
            "RankCandidates": rank(columnar=False),
            "RankCandidates (columns)": rank(columnar=True),
            "BlendCandidates": blend,
            "Recommend": recommend(debug=False),
            "Recommend (debug)": recommend(debug=True),
        }

    async def close(self) -> None:
        """Close the channels."""
        for channel in self.channels:
            await channel.close()


NO_OP = "Check (ranking, no work)"
"""The health check of the ranking server: a call that does no work, so its latency is
what the gRPC server, Python and the machine add to every call (the floor of the stage
methods' latency, measured beside them)."""
_HEALTH_CHECK = health_pb2.HealthCheckRequest()


def _context(user: str) -> context_pb2.RequestContext:
    return context_pb2.RequestContext(user_id=user)


SETTLE_S = 5.0
"""Pause before each load point, so work queued by an overloaded point (which the
servers finish even after the client gave up) does not spill into the next one."""


async def measure(
    call: Call,
    rate: float,
    duration_s: float,
    meter: UsageMeter | None,
    users: Sequence[str] = (),
) -> dict[str, Any]:
    """One load point: latency summary, each server's CPU and RSS, the CPU the host
    stole, the latencies of the requests sent while it stole none, those of the
    requests during which no busy kernel thread ran (``kernel_free``), the servers' own
    time for the methods the point drove (``server_time``, with a meter that reads
    their histograms), and, given the ``users`` that ``call(i)`` asks for
    (``users[i % len(users)]``), how much of the slowest 1 % one user makes
    (``slowest_user``)."""
    await asyncio.sleep(SETTLE_S)
    if meter is not None:
        meter.start()
    generator = psutil.Process()
    cpu_before = sum(generator.cpu_times()[:2])
    stolen = StolenTime()
    windows = StealWindows()
    sampled = asyncio.Event()
    sampling = asyncio.create_task(windows.run(sampled))
    sent: list[tuple[float, float]] = []  # (monotonic time it was due, latency)
    answered: list[tuple[int, float]] = []  # (request index, latency)

    def done(i: int, latency: float) -> None:
        sent.append((time.monotonic() - latency, latency))
        answered.append((i, latency))

    kernel = KernelThreads.find()
    started = time.perf_counter()
    kernel_before = kernel.runtime_ns() if kernel is not None else 0
    try:
        result = await open_loop(call, rate, duration_s, on_done=done, kernel=kernel)
        wall = time.perf_counter() - started
        kernel_ran_s = (kernel.runtime_ns() - kernel_before) / 1e9 if kernel is not None else 0.0
    finally:
        if kernel is not None:
            kernel.close()
    sampled.set()
    await sampling
    point: dict[str, Any] = {
        **result.summary(),
        "errors_by_code": dict(result.errors),
        "generator_cpu_cores": (sum(generator.cpu_times()[:2]) - cpu_before) / wall,
        "cpu_stolen_pct": stolen.percent(),
        "steal_free": windows.steal_free(sent),
        "latencies_ms": [round(x * 1000, 3) for x in result.latencies_s],
    }
    if kernel is not None:
        point["kernel_free"] = kernel_free(result, kernel.names, kernel_ran_s / wall)
    if users:
        point["slowest_user"] = slowest_user(answered, users)
    if meter is not None:
        point["servers"] = {
            u.name: {"cpu_cores": u.cpu_cores, "rss_mib": u.rss_mib} for u in meter.stop()
        }
        if meter.durations is not None:  # the methods the point drove
            point["server_time"] = meter.durations.stop(0.5 * len(result.latencies_s))
    return point


def kernel_free(result: LoadResult, threads: list[str], cores: float) -> dict[str, Any]:
    """p50 and p99 (ms) of the answered requests during which none of the busy kernel
    ``threads`` ran, their share of all answered (p50 and p99 None under 100 such
    requests), the p50 of the others, and the CPU (in cores) the threads took."""
    ran = np.asarray(result.kernel_s) > 0
    ms = np.asarray(result.latencies_s) * 1000
    free, hit = ms[~ran], ms[ran]
    return {
        "threads": threads,
        "cores": cores,
        "share": len(free) / len(ms) if len(ms) else 0.0,
        "p50_ms": float(np.percentile(free, 50)) if len(free) >= 100 else None,
        "p99_ms": float(np.percentile(free, 99)) if len(free) >= 100 else None,
        "hit_p50_ms": float(np.percentile(hit, 50)) if len(hit) else None,
    }


def slowest_user(answered: Sequence[tuple[int, float]], users: Sequence[str]) -> dict[str, Any]:
    """The user with the most requests among the slowest 1 % of ``answered`` (request
    index, latency; request ``i`` asked for ``users[i % len(users)]``), and the p99 of the
    requests of everyone else: a p99 set by one user's data (a long history, say) rather
    than by the servers shows as a large drop."""
    tail = max(1, len(answered) // 100)
    by_latency = sorted(answered, key=lambda pair: pair[1], reverse=True)
    counts = Counter(users[i % len(users)] for i, _ in by_latency[:tail])
    user, in_tail = counts.most_common(1)[0]
    others = [latency for i, latency in answered if users[i % len(users)] != user]
    return {
        "user": user,
        "in_slowest": in_tail,
        "slowest": tail,
        "requests": len(answered) - len(others),
        "users_in_slowest": len(counts),
        "p99_without_ms": float(np.percentile(others, 99)) * 1000 if others else None,
    }


STAGE_METHODS = (
    NO_OP,
    "RetrieveCandidates",
    "RetrieveCandidates (columns)",
    "RankCandidates",
    "RankCandidates (columns)",
    "BlendCandidates",
)
"""Each stage's call as a caller makes it: one message per candidate with every score, and
for retrieval and ranking also the compact form the front door uses (candidates in
columns; ranking gets retrieval's rows with the ids and answers with final scores); first,
a call that does no work (``NO_OP``), their floor."""


async def scenario_stages(
    workload: Workload, meter: UsageMeter, args: argparse.Namespace
) -> dict[str, Any]:
    calls = workload.calls()
    out: dict[str, Any] = {}
    for method in STAGE_METHODS:
        await open_loop(calls[method], args.rates[0], args.warmup)  # warm-up, not reported
        users = () if method == NO_OP else workload.users
        out[method] = [
            await measure(calls[method], rate, args.duration, meter, users) for rate in args.rates
        ]
        _print_points(method, out[method])
    return out


async def scenario_recommend(
    workload: Workload, meter: UsageMeter, args: argparse.Namespace
) -> list[dict[str, Any]]:
    call = workload.calls()["Recommend"]
    await open_loop(call, args.rates[0], args.warmup)
    points = [
        await measure(call, rate, args.duration, meter, workload.users) for rate in args.rates
    ]
    _print_points("Recommend", points)
    return points


async def scenario_traced(
    workload: Workload, meter: UsageMeter, args: argparse.Namespace
) -> dict[str, Any]:
    """Recommend with ``debug`` (every stage's trace, every candidate's outcome) at the
    first --rates value, after plain Recommend at that rate as its baseline."""
    calls = workload.calls()
    await open_loop(calls["Recommend (debug)"], args.rates[0], args.warmup)
    plain = await measure(calls["Recommend"], args.rates[0], args.duration, meter)
    traced = await measure(calls["Recommend (debug)"], args.rates[0], args.duration, meter)
    _print_points("Recommend, then with debug", [plain, traced])
    return {
        "plain": plain,
        "debug": traced,
        "debug_over_plain_p50": traced["p50_ms"] / plain["p50_ms"],
    }


IDLE_GAPS_MS = (0, 3, 10, 20, 50)
IDLE_GAP_METHODS = (
    NO_OP,
    "RetrieveCandidates (columns)",
    "RankCandidates (columns)",
    "BlendCandidates",
    "Recommend",
)


async def scenario_idle_gap(workload: Workload, args: argparse.Namespace) -> dict[str, Any]:
    """Each method's requests one at a time, each sent a fixed idle gap after the last
    answer: what the machine adds to a request that finds the servers idle (cores
    asleep, caches cooled by whatever ran meanwhile). At 50/s a `Recommend` finds them
    idle for about 10 ms; back to back, for none."""
    calls = workload.calls()
    loop = asyncio.get_running_loop()
    timer = DueTimer(loop)
    out: dict[str, Any] = {}
    try:
        for method in IDLE_GAP_METHODS:
            call = calls[method]
            for i in range(20):  # warm-up, not reported
                await call(i)
            points = []
            for gap_ms in IDLE_GAPS_MS:
                latencies = []
                for i in range(args.idle_gap_requests):
                    started = time.monotonic()
                    await call(i)
                    latencies.append(time.monotonic() - started)
                    await timer.sleep_until(time.monotonic() + gap_ms / 1000)
                points.append({"gap_ms": gap_ms, **percentiles(latencies)})
            for point in points:
                point["p50_over_back_to_back"] = point["p50_ms"] / points[0]["p50_ms"]
            out[method] = points
            print(
                f"{method:>28} one at a time, p50 / p99 ms after an idle gap of "
                + ", ".join(
                    f"{p['gap_ms']} ms: {p['p50_ms']:.2f} / {p['p99_ms']:.2f}" for p in points
                ),
                file=sys.stderr,
                flush=True,
            )
    finally:
        timer.close()
    return out


MAX_RATE_STEPS = (10, 15, 20, 25, 30, 40, 50, 75, 100, 125, 150, 200, 250, 300, 400, 500)


async def scenario_max_rate(
    workload: Workload, meter: UsageMeter, args: argparse.Namespace
) -> dict[str, Any]:
    """Recommend at rising rates until p99 reaches 50 ms or a request fails."""
    call = workload.calls()["Recommend"]
    points: list[dict[str, Any]] = []
    best = 0.0
    for rate in MAX_RATE_STEPS:
        point = await measure(call, rate, args.duration, meter)
        points.append(point)
        _print_points(f"Recommend at {rate:g}/s", [point])
        if point["p99_ms"] >= MAX_RATE_P99_MS or point["errors"]:
            break
        best = rate
    return {"highest_rate_with_p99_under_50ms": best, "points": points}


def _print_naive(result: dict[str, Any]) -> None:
    for name, p in result["paths"].items():
        print(
            f"{'RankCandidates work, ' + name:>40}  p50 {p['p50_ms']:8.2f}  "
            f"p99 {p['p99_ms']:8.2f} ms  ({p['requests']} requests, "
            f"p50 {p['p50_over_optimised']:.1f}x optimised)",
            file=sys.stderr,
            flush=True,
        )


def _print_points(name: str, points: list[dict[str, Any]]) -> None:
    for p in points:
        servers = ", ".join(
            f"{k} {v['cpu_cores']:.2f} cores {v['rss_mib']:.0f} MiB"
            for k, v in p.get("servers", {}).items()
        )
        print(
            f"{name:>20} {p['rate']:>6g}/s  p50 {p['p50_ms']:7.2f}  p90 {p['p90_ms']:7.2f}  "
            f"p99 {p['p99_ms']:7.2f}  max {p['max_ms']:8.2f} ms  {p['throughput']:7.1f}/s  "
            f"errors {p['errors']:.0f}  degraded {p.get('degraded', 0):.0f}  "
            f"sent late {_sent_late(p)} ms  [{servers}]{_stolen(p)}{_kernel(p)}{_user_tail(p)}"
            f"{_server_time(p)}",
            file=sys.stderr,
            flush=True,
        )


def _stolen(point: dict[str, Any]) -> str:
    """What the host took during a point, and the latencies without it, when it took any."""
    stolen = point.get("cpu_stolen_pct")
    if not stolen:
        return ""
    return f"; host stole {stolen:.0f} % of the CPU" + (
        f"; windows it left alone: {_free(point, 'steal_free')}" if point.get("steal_free") else ""
    )


def _free(point: dict[str, Any], key: str) -> str:
    """A point's ``steal_free`` or ``kernel_free`` figures as "p50 / p99 (share)"."""
    free = point.get(key)
    if not free or free["p50_ms"] is None:
        return "n/a"
    return f"{free['p50_ms']:.2f} / {free['p99_ms']:.2f} ({free['share']:.0%})"


def _kernel(point: dict[str, Any]) -> str:
    free = point.get("kernel_free")
    if not free:
        return ""
    return (
        f"; {', '.join(free['threads'])} ({free['cores']:.3f} cores) ran in "
        f"{1 - free['share']:.1%} of the requests "
        f"(their p50 {_ms(free['hit_p50_ms'])}), the others {_free(point, 'kernel_free')}"
    )


def _server_time(point: dict[str, Any]) -> str:
    parts = [
        f"{t['server']} {t['method']} p50 {t['p50_ms']:.2f} p99 {t['p99_ms']:.2f} ms, "
        f"{t['within_budget']:.1%} within {BUDGET_S * 1000:g} ms"
        for t in point.get("server_time", [])
    ]
    return "; servers' own time: " + "; ".join(parts) if parts else ""


def _user_tail(point: dict[str, Any]) -> str:
    tail = point.get("slowest_user")
    if not tail:
        return ""
    return (
        f"; slowest 1 %: {tail['in_slowest']} of {tail['slowest']} from {tail['user']} "
        f"({tail['requests']} requests), p99 without it {_ms(tail['p99_without_ms'])}"
    )


def _sent_late(point: dict[str, Any]) -> str:
    return f"{point['send_late_p50_ms']:.2f} / {point['send_late_p99_ms']:.2f}"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


async def scenario_cold_start(
    env: dict[str, str], workload: Workload, args: argparse.Namespace
) -> dict[str, Any]:
    """Each stage's server started alone (the others keep serving): time to SERVING,
    first request, then the warm p99 of the same request."""
    out: dict[str, Any] = {}
    for stage in STAGES:
        port = free_port()
        stage_env = {
            **env,
            f"CASCADE_{stage.upper()}_PORT": str(port),
            f"CASCADE_{stage.upper()}_METRICS_PORT": str(free_port()),
        }
        started = time.perf_counter()
        process = subprocess.Popen(
            [*CASCADE, "serve", stage], env=stage_env, stderr=subprocess.DEVNULL
        )
        try:
            wait_serving(f"127.0.0.1:{port}", timeout_s=120, interval_s=0.02)
            to_serving = time.perf_counter() - started
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                # The connection first, timed apart: a client's channel connects once,
                # and the first request is about what the server does on its first call.
                connecting = time.perf_counter()
                await channel.channel_ready()
                connect = time.perf_counter() - connecting
                call = _single_call(stage, channel, workload)
                first = await _timed(call, 0)
                warm = [await _timed(call, i) for i in range(1, 301)]
        finally:
            process.terminate()
            process.wait(30)
        warm_p99 = float(np.percentile(warm, 99))
        out[stage] = {
            "to_serving_s": to_serving,
            "connect_ms": connect * 1000,
            "first_request_ms": first * 1000,
            "warm_p50_ms": float(np.percentile(warm, 50)) * 1000,
            "warm_p99_ms": warm_p99 * 1000,
            "first_over_warm_p99": first / warm_p99,
        }
        print(f"cold start {stage}: {out[stage]}", file=sys.stderr, flush=True)
    return out


def _single_call(stage: str, channel: grpc.aio.Channel, workload: Workload) -> Call:
    n = len(workload.users)
    if stage == "retrieval":
        retrieval = retrieval_grpc.RetrievalServiceStub(channel)
        return lambda i: retrieval.RetrieveCandidates(
            retrieval_pb.RetrieveCandidatesRequest(
                context=_context(workload.users[i % n]), max_candidates=500
            ),
            timeout=30,
        )
    if stage == "ranking":
        ranking = ranking_grpc.RankingServiceStub(channel)
        return lambda i: ranking.RankCandidates(
            ranking_pb.RankCandidatesRequest(
                context=_context(workload.users[i % n]), item_ids=workload.candidates[i % n]
            ),
            timeout=30,
        )
    blending = blending_grpc.BlendingServiceStub(channel)
    return lambda i: blending.Recommend(
        blending_pb.RecommendRequest(user_id=workload.users[i % n], page_size=20), timeout=30
    )


async def _timed(call: Call, i: int) -> float:
    started = time.perf_counter()
    await call(i)
    return time.perf_counter() - started


PROCESS_COUNTS = (1, 2)


async def scenario_processes(
    env: dict[str, str], workload: Workload, meter: UsageMeter, args: argparse.Namespace
) -> dict[str, Any]:
    """Recommend at each --rates value with one process per stage (the running servers),
    then with two per stage sharing each port (SO_REUSEPORT; a second `cascade serve all`
    on new ports)."""
    call = workload.calls()["Recommend"]
    out: dict[str, Any] = {
        "1": [await measure(call, rate, args.duration, meter) for rate in args.rates]
    }
    _print_points("Recommend, 1 process per stage", out["1"])
    for count in PROCESS_COUNTS[1:]:
        # New ports beside the running servers, on the same database.
        fresh, ports = serving_env(env, Path(env["CASCADE_HOME"]), env["CASCADE_DATABASE_URL"])
        shared = {
            **fresh,
            **{f"CASCADE_{stage.upper()}_PROCESSES": str(count) for stage in STAGES},
        }
        server = subprocess.Popen([*CASCADE, "serve", "all"], env=shared, stderr=subprocess.DEVNULL)
        several = Workload(ports, workload.users, connections=4 * count)
        try:
            for port in ports.values():
                wait_serving(f"127.0.0.1:{port}")
            await asyncio.sleep(2.0)  # every process of a stage ready, not just the first
            several_meter = UsageMeter(server_processes(server.pid, STAGES))
            recommend = several.calls()["Recommend"]
            await open_loop(recommend, args.rates[0], args.warmup)
            out[str(count)] = [
                await measure(recommend, rate, args.duration, several_meter) for rate in args.rates
            ]
            _print_points(f"Recommend, {count} processes per stage", out[str(count)])
        finally:
            await several.close()
            server.terminate()
            server.wait(60)
    return out


async def scenario_swap(
    env: dict[str, str], workload: Workload, meter: UsageMeter, args: argparse.Namespace
) -> dict[str, Any]:
    """Recommend at --swap-rate while a new release is published and swapped in."""
    n = len(workload.users)
    served: list[tuple[float, float, str]] = []  # (due offset, latency, release)

    async def recommend(i: int) -> Any:
        due = time.monotonic() - began
        response = await workload.blending[0].Recommend(
            blending_pb.RecommendRequest(user_id=workload.users[i % n], page_size=20),
            timeout=TIMEOUT_S,
        )
        # A degraded response names whichever stage answered: not a release change.
        release = "" if response.degraded else response.release_id
        served.append((due, time.monotonic() - began - due, release))
        return response

    if args.swap_to:
        command = ["release", "activate", args.swap_to]
    else:
        policy = Path(env["CASCADE_HOME"]) / "swap-policy.yaml"
        policy.write_text("version: swap-1\nsurfaces: {home_feed: {max_items_per_creator: 2}}\n")
        command = ["policy", "publish", str(policy)]
    publish_at = args.swap_duration / 4

    async def publish() -> float:
        await asyncio.sleep(publish_at)
        started = time.monotonic() - began
        await asyncio.to_thread(
            subprocess.run,
            [*CASCADE, *command],
            env=env,
            check=True,
            capture_output=True,
        )
        return started

    # Warm at the swap's rate first, so "before the swap" is the steady state it is
    # compared with, not the servers' first seconds at this rate.
    await open_loop(workload.calls()["Recommend"], args.swap_rate, args.warmup)
    began = time.monotonic()
    timeline = CpuTimeline(meter.processes)
    sampled = asyncio.Event()
    sampling = asyncio.create_task(timeline.run(sampled))
    meter.start()
    stolen = StolenTime()
    result, published = await asyncio.gather(
        open_loop(recommend, args.swap_rate, args.swap_duration), publish()
    )
    usage = meter.stop()
    sampled.set()
    await sampling
    releases = [r for _, _, r in sorted(served) if r]
    first_release = releases[0] if releases else ""
    swapped = [due for due, _, r in sorted(served) if r and r != first_release]
    swap_end = (swapped[0] if swapped else args.swap_duration) + 2.0
    steady = [lat for due, lat, _ in served if due < published]
    during = [lat for due, lat, _ in served if published <= due <= swap_end]
    steady_p99 = float(np.percentile(steady, 99)) * 1000 if steady else None
    during_p99 = float(np.percentile(during, 99)) * 1000 if during else None
    out = {
        **result.summary(),
        "errors_by_code": dict(result.errors),
        "swap": " ".join(["cascade", *command]),
        "publish_started_s": published,
        "new_release_first_served_s": swapped[0] if swapped else None,
        "publish_to_served_s": swapped[0] - published if swapped else None,
        "steady_p99_ms": steady_p99,
        "during_swap_p99_ms": during_p99,
        "during_over_steady": during_p99 / steady_p99 if steady_p99 and during_p99 else None,
        # Past capacity before the swap (the max-rate scenario's limit), the ratio says
        # more about the overload than about the swap.
        "overloaded_before": steady_p99 is not None and steady_p99 >= MAX_RATE_P99_MS,
        "cpu_stolen_pct": stolen.percent(),
        "servers": {u.name: {"cpu_cores": u.cpu_cores, "rss_mib": u.rss_mib} for u in usage},
        "timeline": [(round(d, 3), round(lat * 1000, 3)) for d, lat, _ in sorted(served)],
        "steps": _swap_steps(served, timeline.steps, published - 1.0, swap_end + 1.0),
    }
    print(f"swap: {_swap_summary(out)}", file=sys.stderr, flush=True)
    return out


def _swap_summary(s: dict[str, Any]) -> str:
    """One line: failures, p99 before and during the swap, their ratio, how long the
    new release took to be served."""
    ratio = s["during_over_steady"]
    served = s["publish_to_served_s"]
    return (
        f"{s['errors']:.0f} failed of {s['requests']:.0f}; p99 before the swap "
        f"{_ms(s['steady_p99_ms'])}, during it {_ms(s['during_swap_p99_ms'])} ("
        + (f"{ratio:.2f} times steady" if ratio is not None else "no ratio")
        + (
            ", past capacity before the swap: the ratio is not the swap's"
            if s["overloaded_before"]
            else ""
        )
        + "); new release served "
        + (f"{served:.1f} s after the command started" if served is not None else "never")
        + _stolen(s)
    )


def _swap_steps(
    served: list[tuple[float, float, str]],
    cpu: list[tuple[float, dict[str, float]]],
    start_s: float,
    end_s: float,
) -> list[dict[str, Any]]:
    """Per CPU step between ``start_s`` and ``end_s``: the slowest request due in it and
    each group's cores (what a swap's slow requests ran beside)."""
    steps = []
    begin = 0.0
    for end, cores in cpu:
        if start_s <= end and begin <= end_s:
            due = [lat for d, lat, _ in served if begin <= d < end]
            steps.append(
                {
                    "until_s": round(end, 2),
                    "slowest_ms": round(max(due) * 1000, 1) if due else None,
                    "cores": {k: round(v, 2) for k, v in sorted(cores.items()) if v >= 0.01},
                }
            )
        begin = end
    return steps


_INDEX_CHILD = """
import json, resource, sys, time
from pathlib import Path
import numpy as np
from cascade_server.offline.index import IndexConfig, build_index
items, dims, path = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
rng = np.random.default_rng(0)
centres = rng.normal(size=(1000, dims)).astype(np.float32)
noise = rng.normal(size=(items, dims)).astype(np.float32)
vectors = centres[rng.integers(0, 1000, items)] + 0.5 * noise
vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
np.save(path.with_suffix(".npy"), vectors)
started = time.perf_counter()
build_index(vectors, np.ones(items, dtype=bool), path, IndexConfig(n_trees=50, jobs=2))
print(json.dumps({"build_s": time.perf_counter() - started,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def scenario_index(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Annoy build on synthetic vectors, then recall@500 and latency against exact search;
    the clustered index on the same vectors at several probes."""
    from annoy import AnnoyIndex

    from cascade_server.offline.clustering import cluster_items, default_clusters

    path = work / "synthetic.ann"
    built = subprocess.run(
        [sys.executable, "-c", _INDEX_CHILD, str(args.index_items), "64", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    report: dict[str, Any] = json.loads(built.stdout.strip().splitlines()[-1])
    report["index_mib"] = path.stat().st_size / 2**20
    report["items"] = args.index_items
    vectors = np.load(path.with_suffix(".npy"))
    rng = np.random.default_rng(1)
    noise = rng.normal(size=(100, 64)).astype(np.float32)
    queries = vectors[rng.integers(0, len(vectors), 100)] + 0.1 * noise
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    k = 500
    exact_times, truth = [], []
    for query in queries:
        started = time.perf_counter()
        scores = vectors @ query
        top = np.argpartition(-scores, k)[:k]
        exact_times.append(time.perf_counter() - started)
        truth.append(set(top.tolist()))
    index = AnnoyIndex(64, "angular")
    index.load(str(path), prefault=True)

    def annoy(search_k: int) -> Search:
        return lambda query, n: index.get_nns_by_vector(query.tolist(), n, search_k=search_k)

    report["annoy"] = [
        {"search_k": search_k, **_search_point(annoy(search_k), queries, truth, k)}
        for search_k in (-1, 50_000, 100_000, 200_000)
    ]
    started = time.perf_counter()
    clustered = cluster_items(
        vectors, np.arange(len(vectors)), default_clusters(len(vectors)), seed=42
    )
    report["clustered_build_s"] = time.perf_counter() - started
    report["clusters"] = clustered.clusters

    def in_clusters(probes: int) -> Search:
        return lambda query, n: clustered.nearest(query, n, probes)[0].tolist()

    report["clustered"] = [
        {"probes": probes, **_search_point(in_clusters(probes), queries, truth, k)}
        for probes in (16, 32, 64, 128, 256)
    ]
    report["exact_numpy"] = {
        "p50_ms": float(np.percentile(exact_times, 50)) * 1000,
        "p99_ms": float(np.percentile(exact_times, 99)) * 1000,
    }
    print(f"index: {json.dumps(report)}", file=sys.stderr, flush=True)
    return report


Search = Callable[[Any, int], list[int]]
"""(query, k) -> the ids of the k items a search method finds."""


def _search_point(search: Search, queries: Any, truth: list[set[int]], k: int) -> dict[str, float]:
    """Recall of ``search`` against ``truth`` (each query's exact top ``k``; the scenario
    asks for 500) and its p50/p99 time per query."""
    times, hits = [], 0
    for query, expected in zip(queries, truth, strict=True):
        started = time.perf_counter()
        found = search(query, k)
        times.append(time.perf_counter() - started)
        hits += len(expected & set(found))
    return {
        "recall@500": hits / (k * len(queries)),
        "p50_ms": float(np.percentile(times, 50)) * 1000,
        "p99_ms": float(np.percentile(times, 99)) * 1000,
    }


def main() -> int:
    args = _arguments()
    home = args.home or Path(tempfile.mkdtemp(prefix="cascade-load-"))
    prepared = args.home is not None and (home / "releases").is_dir()
    env = {
        **os.environ,
        "CASCADE_HOME": str(home),
        "CASCADE_LOG_LEVEL": "WARNING",
        "CASCADE_RELEASE_POLL_SECONDS": "1",
        "COLUMNS": "200",
    }
    speed = machine_speed()  # before anything of ours runs
    print(f"machine: {describe_speed(speed)}", file=sys.stderr, flush=True)
    database = fresh_database(args.database_url) if args.database_url else None
    if database:
        env["CASCADE_DATABASE_URL"] = database
    timings: dict[str, float] = {}
    results: dict[str, Any] = {}
    try:
        sizes = ["--users", str(args.users), "--items", str(args.items)]
        sizes += ["--events", str(args.events)]
        if not prepared:
            step(timings, "db upgrade", env, "db", "upgrade")
            step(timings, "demo data", env, "demo-data", *sizes)
        if set(args.scenarios) - {"index"}:
            if not prepared:
                step(timings, "train all", env, "train", "all")
            server_env, ports = serving_env(env, home, database)
            results.update(asyncio.run(_serve_and_load(server_env, ports, args)))
        if "index" in args.scenarios:
            results["index"] = scenario_index(args, home)
    finally:
        if database:
            drop_database(database)
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "machine_speed": speed,
        "catalog": _catalog(home, args, prepared),
        "duration_s": args.duration,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "results": results,
    }
    stamp = f"{datetime.now(UTC):%Y%m%d-%H%M%S}"
    plots = _plots(results, args.out, f"load-{stamp}")
    _strip_samples(results)
    write_report(args.out, "load", report, _markdown(report, plots), stamp)
    return 0


def _catalog(home: Path, args: argparse.Namespace, prepared: bool) -> dict[str, int]:
    """The measured data's size: the sizes asked for, or what an earlier run's release
    was trained on (the sizes asked for do not apply to a prepared home)."""
    if prepared:
        newest = max((home / "releases").glob("r*/manifest.json"), default=None)
        if newest is not None:
            data = read_manifest(newest.parent).data
            return {"users": data.users, "items": data.items, "events": data.events}
    return {"users": args.users, "items": args.items, "events": args.events}


async def _serve_and_load(
    env: dict[str, str], ports: dict[str, int], args: argparse.Namespace
) -> dict[str, Any]:
    server = subprocess.Popen([*CASCADE, "serve", "all"], env=env, stderr=subprocess.DEVNULL)
    workload: Workload | None = None
    try:
        for port in ports.values():
            wait_serving(f"127.0.0.1:{port}")
        durations = ServerDurations(
            {stage: int(env[f"CASCADE_{stage.upper()}_METRICS_PORT"]) for stage in STAGES}
        )
        meter = UsageMeter(server_processes(server.pid, STAGES), durations)
        workload = Workload(ports, sample_users(env["CASCADE_DATABASE_URL"], args.sample_users))
        await workload.prepare()
        out: dict[str, Any] = {}
        if "stages" in args.scenarios:
            out["stages"] = await scenario_stages(workload, meter, args)
        if "recommend" in args.scenarios:
            out["recommend"] = await scenario_recommend(workload, meter, args)
        if "traced" in args.scenarios:
            out["traced"] = await scenario_traced(workload, meter, args)
        if "idle-gap" in args.scenarios:
            out["idle_gap"] = await scenario_idle_gap(workload, args)
        if "max-rate" in args.scenarios:
            out["max_rate"] = await scenario_max_rate(workload, meter, args)
        if "cold-start" in args.scenarios:
            out["cold_start"] = await scenario_cold_start(env, workload, args)
        if "swap" in args.scenarios:
            out["swap"] = await scenario_swap(env, workload, meter, args)
        if "processes" in args.scenarios:
            out["processes"] = await scenario_processes(env, workload, meter, args)
        if "naive" in args.scenarios:
            out["naive"] = naive.compare(
                env["CASCADE_DATABASE_URL"],
                Path(env["CASCADE_HOME"]),
                list(zip(workload.users, workload.candidates, strict=True)),
            )
            _print_naive(out["naive"])
        return out
    finally:
        if workload is not None:
            await workload.close()
        server.terminate()
        server.wait(60)


def sample_users(database_url: str, count: int) -> list[str]:
    """``count`` users with events, the same ones in every run on the same data."""
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text(
                    "SELECT u.external_id FROM users u WHERE EXISTS "
                    "(SELECT 1 FROM events e WHERE e.user_id = u.id) "
                    "ORDER BY md5(u.external_id) LIMIT :n"
                ),
                {"n": count},
            ).all()
    finally:
        engine.dispose()
    return [row[0] for row in rows]


def _strip_samples(results: dict[str, Any]) -> None:
    """Drop per-request samples from the JSON (the plots hold them)."""

    def strip(value: Any) -> None:
        if isinstance(value, dict):
            value.pop("latencies_ms", None)
            value.pop("timeline", None)
            for inner in value.values():
                strip(inner)
        elif isinstance(value, list):
            for inner in value:
                strip(inner)

    strip(results)


def _plots(results: dict[str, Any], out: Path, stem: str) -> list[str]:
    """Write the PNG plots the results allow; their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    series: dict[str, list[dict[str, Any]]] = dict(results.get("stages", {}))
    if "recommend" in results:
        series["Recommend"] = results["recommend"]
    if series:
        figure, axis = plt.subplots(figsize=(7, 4.5))
        for name, points in series.items():
            rates = [p["rate"] for p in points]
            (line,) = axis.plot(
                rates, [p["p99_ms"] for p in points], marker="o", label=f"{name} p99"
            )
            axis.plot(
                rates,
                [p["p50_ms"] for p in points],
                marker=".",
                linestyle="--",
                color=line.get_color(),
                label=f"{name} p50",
            )
        axis.set_xlabel("offered load (requests/s, open loop)")
        axis.set_ylabel("latency (ms)")
        axis.set_yscale("log")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
        figure.tight_layout()
        figure.savefig(out / f"{stem}-latency-vs-rate.png", dpi=120)
        written.append(f"{stem}-latency-vs-rate.png")
        plt.close(figure)
        figure, axes = plt.subplots(1, len(series), figsize=(4 * len(series), 3.5), squeeze=False)
        for axis, (name, points) in zip(axes[0], series.items(), strict=True):
            for p in points:
                axis.hist(p["latencies_ms"], bins=60, histtype="step", label=f"{p['rate']:g}/s")
            axis.set_title(name, fontsize=9)
            axis.set_xlabel("latency (ms)")
            axis.set_yscale("log")
            axis.legend(fontsize=7)
        figure.tight_layout()
        figure.savefig(out / f"{stem}-histograms.png", dpi=120)
        written.append(f"{stem}-histograms.png")
        plt.close(figure)
    if "swap" in results:
        swap = results["swap"]
        figure, axis = plt.subplots(figsize=(7, 3.5))
        timeline = swap["timeline"]
        axis.plot([t for t, _ in timeline], [lat for _, lat in timeline], ".", markersize=2)
        axis.axvline(swap["publish_started_s"], color="red", label="publish")
        if swap["new_release_first_served_s"] is not None:
            axis.axvline(
                swap["new_release_first_served_s"], color="green", label="new release serves"
            )
        axis.set_xlabel("time (s)")
        axis.set_ylabel("Recommend latency (ms)")
        axis.legend(fontsize=7)
        figure.tight_layout()
        figure.savefig(out / f"{stem}-swap.png", dpi=120)
        written.append(f"{stem}-swap.png")
        plt.close(figure)
    return written


def _markdown(report: dict[str, Any], plots: list[str]) -> list[str]:
    results = report["results"]
    catalog = report["catalog"]
    lines = [
        f"# Load benchmark — {catalog['items']:,} items, {catalog['users']:,} users, "
        f"{catalog['events']:,} events",
        "",
        f"{report['date']} — {report['machine']}; {report['duration_s']} s per point, "
        "open loop, generator on the same machine",
        "",
        f"The machine at the start: {describe_speed(report['machine_speed'])}.",
        "",
    ]
    table = (
        "| method | rate/s | p50 ms | p90 ms | p99 ms | max ms | done/s | errors | degraded "
        "| server CPU (cores) | RSS MiB | stolen % | steal-free p50 / p99 ms (share) "
        "| kernel-thread-free p50 / p99 ms (share) | sent late p50 / p99 ms |"
    )
    rule = "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    rows: list[tuple[str, dict[str, Any]]] = []
    for method, points in results.get("stages", {}).items():
        rows += [(method, p) for p in points]
    rows += [("Recommend", p) for p in results.get("recommend", [])]
    if "traced" in results:
        rows += [("Recommend (plain)", results["traced"]["plain"])]
        rows += [("Recommend (debug)", results["traced"]["debug"])]
    rows += [("Recommend (max-rate)", p) for p in results.get("max_rate", {}).get("points", [])]
    for count, points in results.get("processes", {}).items():
        rows += [
            (f"Recommend ({count} process{'es' if count != '1' else ''}/stage)", p) for p in points
        ]
    if rows:
        lines += [table, rule]
        for method, p in rows:
            servers = p.get("servers", {})
            cpu = " / ".join(f"{servers[s]['cpu_cores']:.2f}" for s in STAGES if s in servers)
            rss = " / ".join(f"{servers[s]['rss_mib']:.0f}" for s in STAGES if s in servers)
            lines.append(
                f"| {method} | {p['rate']:g} | {p['p50_ms']:.2f} | {p['p90_ms']:.2f} | "
                f"{p['p99_ms']:.2f} | {p['max_ms']:.2f} | {p['throughput']:.1f} | "
                f"{p['errors']:.0f} | {p.get('degraded', 0):.0f} | {cpu} | {rss} | "
                f"{_percent(p.get('cpu_stolen_pct'))} | {_free(p, 'steal_free')} | "
                f"{_free(p, 'kernel_free')} | {_sent_late(p)} |"
            )
        lines += [
            "",
            "Server CPU and RSS: retrieval / ranking / blending. Stolen: the share of the "
            "machine's CPU time its hypervisor gave to other guests during the point; "
            "points with much of it are slower for reasons outside Cascade. Steal-free: "
            "the answered requests sent in half-second windows in which the host took under "
            f"{STEAL_FREE_PCT:g} % (their share of the point's requests; n/a under 100). "
            "Kernel-thread-free: the answered requests during which none of the machine's "
            "busy kernel threads ran (such as kdamond, the kernel's memory-access monitor, "
            "which can hold a core for milliseconds; n/a under 100 or where none is "
            "busy). "
            "Sent late: how long after its due time the generator sent each request (part "
            "of every latency; it grows when the generator is short of CPU).",
            "",
        ]
    timed = [(method, p, t) for method, p in rows for t in p.get("server_time", [])]
    if timed:
        lines += [
            "The servers' own time: from each server's call-duration histogram "
            "(`cascade_rpc_duration_seconds`, its interceptor's start to end) read before "
            "and after the point, for the methods the point drove (for Recommend, also the "
            "stage calls the front door made). p50 and p99 are estimated within their "
            "buckets (millisecond steps up to 6 ms; the first holds 0 to 1 ms, so under 1 ms "
            "they say only that) as Prometheus' `histogram_quantile` does; the rest of a "
            "latency is the generator, gRPC and the wait before the server's handler runs.",
            "",
            f"The last column is the share within {BUDGET_S * 1000:g} ms, a stage's p99 "
            "budget (Recommend's own targets are a p50 of 10 ms and a p99 of 25 ms).",
            "",
            "| method | rate/s | server: method | calls | p50 ms | p99 ms "
            f"| within {BUDGET_S * 1000:g} ms |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {method} | {p['rate']:g} | {t['server']}: {t['method']} | {t['calls']:.0f} "
            f"| {t['p50_ms']:.2f} | {t['p99_ms']:.2f} | {t['within_budget']:.1%} |"
            for method, p, t in timed
        ]
        lines.append("")
    tails = [(method, p, p["slowest_user"]) for method, p in rows if p.get("slowest_user")]
    if tails:
        lines += [
            "Who the slowest 1 % are: the user with most requests among a point's slowest "
            "1 % (each sampled user is asked for in turn), how many of them, how many users "
            "the slowest 1 % came from, and the point's p99 without that user's requests. "
            "A large drop means one user's data (a long history) sets the p99, not the "
            "servers.",
            "",
            "| method | rate/s | user (requests) | of the slowest 1 % | users in it "
            "| p99 / without the user |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {method} | {p['rate']:g} | {t['user']} ({t['requests']}) | "
            f"{t['in_slowest']} of {t['slowest']} | {t['users_in_slowest']} | "
            f"{p['p99_ms']:.2f} ms / {_ms(t['p99_without_ms'])} |"
            for method, p, t in tails
        ]
        lines.append("")
    if "traced" in results:
        lines += [
            "Recommend with debug (traces and every candidate's outcome) against plain "
            "Recommend at the same rate: p50 ratio "
            f"{results['traced']['debug_over_plain_p50']:.2f}.",
            "",
        ]
    if "max_rate" in results:
        lines += [
            f"Highest Recommend rate with p99 < {MAX_RATE_P99_MS:g} ms and no errors: "
            f"**{results['max_rate']['highest_rate_with_p99_under_50ms']:g}/s**.",
            "",
        ]
    if "idle_gap" in results:
        gaps = results["idle_gap"]
        header = " | ".join(f"{p['gap_ms']} ms" for p in next(iter(gaps.values())))
        lines += [
            "One at a time, each request sent an idle gap after the last answer: p50 / p99 "
            "ms, and p50 against back to back (what the machine adds to a request that "
            "finds the servers idle).",
            "",
            f"| method | {header} |",
            "|---|" + "---|" * len(next(iter(gaps.values()))),
        ]
        for method, points in gaps.items():
            cells = " | ".join(
                f"{p['p50_ms']:.2f} / {p['p99_ms']:.2f} ({p['p50_over_back_to_back']:.2f}x)"
                for p in points
            )
            lines.append(f"| {method} | {cells} |")
        lines.append("")
    if "cold_start" in results:
        lines += [
            "| server | start → SERVING s | connect ms | first request ms | warm p50 ms "
            "| warm p99 ms | first / warm p99 |",
            "|---|---|---|---|---|---|---|",
        ]
        for stage, c in results["cold_start"].items():
            lines.append(
                f"| {stage} | {c['to_serving_s']:.2f} | {c['connect_ms']:.2f} | "
                f"{c['first_request_ms']:.2f} | "
                f"{c['warm_p50_ms']:.2f} | {c['warm_p99_ms']:.2f} | "
                f"{c['first_over_warm_p99']:.2f} |"
            )
        lines.append("")
    if "swap" in results:
        s = results["swap"]
        lines += [
            f"Release swap (`{s['swap']}`) under {s['rate']:g} Recommend/s, started at "
            f"{s['publish_started_s']:.1f} s: {_swap_summary(s)}.",
            "",
            "| until s | slowest request | CPU (cores) by process group |",
            "|---|---|---|",
        ]
        lines += [
            f"| {step['until_s']:.1f} | {_ms(step['slowest_ms'])} | "
            + ", ".join(f"{k} {v:.2f}" for k, v in step["cores"].items())
            + " |"
            for step in s["steps"]
        ]
        lines.append("")
    if "naive" in results:
        lines += [
            f"RankCandidates' work in-process, {results['naive']['candidates']} candidates "
            "(bench/naive.py):",
            "",
            "| path | requests | p50 ms | p99 ms | p50 / optimised p50 |",
            "|---|---|---|---|---|",
        ]
        for name, p in results["naive"]["paths"].items():
            lines.append(
                f"| {name} | {p['requests']} | {p['p50_ms']:.2f} | {p['p99_ms']:.2f} | "
                f"{p['p50_over_optimised']:.1f} |"
            )
        lines.append("")
    if "index" in results:
        i = results["index"]
        lines += [
            f"Annoy index, {i['items']:,} synthetic 64-d vectors, 50 trees: build "
            f"{i['build_s']:.1f} s, peak RSS "
            f"{i['peak_rss_mib']:.0f} MiB, file {i['index_mib']:.0f} MiB. Exact numpy top-500: "
            f"p50 {i['exact_numpy']['p50_ms']:.2f} ms, p99 {i['exact_numpy']['p99_ms']:.2f} ms.",
            "",
            "| search_k | recall@500 | p50 ms | p99 ms | p50 vs exact |",
            "|---|---|---|---|---|",
        ]
        exact_p50 = i["exact_numpy"]["p50_ms"]
        lines += [_search_row(point["search_k"], point, exact_p50) for point in i["annoy"]]
        lines += [
            "",
            f"Clustered index on the same vectors: {i['clusters']:,} clusters, built in "
            f"{i['clustered_build_s']:.1f} s.",
            "",
            "| probes | recall@500 | p50 ms | p99 ms | p50 vs exact |",
            "|---|---|---|---|---|",
        ]
        lines += [_search_row(point["probes"], point, exact_p50) for point in i["clustered"]]
        lines.append("")
    if plots:
        lines.append("Plots: " + ", ".join(f"`{name}`" for name in plots) + ".")
    return lines


def _search_row(setting: int, point: dict[str, float], exact_p50: float) -> str:
    return (
        f"| {setting} | {point['recall@500']:.3f} | {point['p50_ms']:.2f} | "
        f"{point['p99_ms']:.2f} | {point['p50_ms'] / exact_p50:.2f} |"
    )


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} ms"


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scenarios",
        type=lambda text: text.split(","),
        default=list(SCENARIOS),
        help=f"Comma-separated: {', '.join(SCENARIOS)} (default: all).",
    )
    parser.add_argument(
        "--rates", type=lambda t: [float(x) for x in t.split(",")], default=[50.0, 100.0, 200.0]
    )
    parser.add_argument("--duration", type=float, default=20.0, help="Seconds per load point.")
    parser.add_argument("--warmup", type=float, default=3.0, help="Seconds of warm-up per method.")
    parser.add_argument(
        "--idle-gap-requests",
        type=int,
        default=100,
        help="idle-gap: requests per method and gap.",
    )
    parser.add_argument("--swap-rate", type=float, default=100.0)
    parser.add_argument("--swap-duration", type=float, default=30.0)
    parser.add_argument(
        "--swap-to",
        help="The swap scenario activates this release (one with other models than the "
        "active one) instead of publishing a new policy.",
    )
    parser.add_argument("--users", type=int, default=2_000, help="Demo users.")
    parser.add_argument("--items", type=int, default=20_000, help="Demo items.")
    parser.add_argument("--events", type=int, default=500_000, help="Demo events.")
    parser.add_argument(
        "--sample-users", type=int, default=200, help="Users requests cycle through."
    )
    parser.add_argument("--index-items", type=int, default=1_000_000)
    parser.add_argument(
        "--database-url",
        help="A Postgres server to create a fresh database on (default: embedded Postgres).",
    )
    parser.add_argument(
        "--home",
        type=Path,
        help="A CASCADE_HOME to use; when it already holds a release (an earlier run's), "
        "loading and training are skipped and its data and release are measured again.",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())
