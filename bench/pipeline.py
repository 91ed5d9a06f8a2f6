"""What the end-to-end benchmarks share: a fresh database, `cascade` steps, served ports."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psutil
import sqlalchemy as sa
from sqlalchemy.engine import make_url

CASCADE = [sys.executable, "-m", "cascade_server"]
PORT_NAMES = ("BLENDING", "RETRIEVAL", "RANKING", "CATALOG")


def machine() -> str:
    """The machine a benchmark ran on, for its report."""
    memory = psutil.virtual_memory().total / 2**30
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {memory:.0f} GiB, "
        f"Python {platform.python_version()}"
    )


def machine_speed() -> dict[str, float | None]:
    """How fast this machine is right now, to read one run's numbers against another's
    (the machines are shared and vary several-fold between sessions): the median of five
    runs of a million-step Python loop and of fifty 500-row gathers from a 256 MiB
    array (what the servers' requests are made of), how much of the last minute tasks
    waited for a core (``/proc/pressure/cpu``; None where the kernel has no PSI), and
    the share of CPU time the hypervisor gave elsewhere while this ran (``StolenTime``)."""
    stolen = StolenTime()
    rng = np.random.default_rng(0)
    table = rng.random((1 << 19, 64))
    rows = rng.integers(0, len(table), (50, 500))

    def loop() -> float:
        started = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i
        return time.perf_counter() - started

    def gathers() -> float:
        started = time.perf_counter()
        for chosen in rows:
            table[chosen].sum()
        return (time.perf_counter() - started) / len(rows)

    pressure = None
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        pressure = float(dict(f.split("=") for f in line.split()[1:])["avg60"])
    except (OSError, IndexError, KeyError, ValueError):
        pass
    return {
        "python_loop_ms": float(np.median([loop() for _ in range(5)])) * 1000,
        "gather_500_rows_ms": float(np.median([gathers() for _ in range(5)])) * 1000,
        "cpu_waiting_pct_last_minute": pressure,
        "cpu_stolen_pct": stolen.percent(),
    }


class StolenTime:
    """The share of the machine's CPU time (all cores) that the hypervisor gave to other
    guests since this was made: ``/proc/stat``'s steal column. On a shared virtual
    machine a run with time stolen is slower for reasons outside it (this project's
    machines have shown over 20 % during a load point); None where the kernel does not
    report it."""

    def __init__(self) -> None:
        self._start = _cpu_ticks()

    def percent(self) -> float | None:
        """Stolen share of the CPU time since this was made, in percent."""
        now = _cpu_ticks()
        if self._start is None or now is None:
            return None
        return _stolen_pct(self._start, now)


STEAL_FREE_PCT = 1.0
"""A window in which the host stole less than this share of the CPU counts as free of it."""


class StealWindows:
    """The host's steal in fixed windows while a load runs, to read its latencies with
    and without it: on this project's machines half-second windows in which the host
    took 15 % or more of the CPU had a median latency several times that of the others,
    and they set the p99."""

    def __init__(self, step_s: float = 0.5) -> None:
        self._step_s = step_s
        self._starts: list[float] = []
        self._stolen: list[float] = []

    async def run(self, stop: asyncio.Event) -> None:
        """Sample every step (on the monotonic clock) until ``stop`` is set."""
        last, began = _cpu_ticks(), time.monotonic()
        while last is not None and not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._step_s)
            now, ended = _cpu_ticks(), time.monotonic()
            if now is None:
                return
            self._starts.append(began)
            self._stolen.append(_stolen_pct(last, now))
            last, began = now, ended

    def steal_free(self, sent: list[tuple[float, float]]) -> dict[str, float] | None:
        """p50 and p99 (ms) of the answered requests (``(monotonic time sent, latency s)``
        each) sent in windows with less than ``STEAL_FREE_PCT`` stolen, and their share
        of all answered; None without steal figures or with under 100 such requests."""
        kept = []
        for at, latency in sent:
            window = bisect.bisect_right(self._starts, at) - 1
            if 0 <= window < len(self._stolen) and self._stolen[window] < STEAL_FREE_PCT:
                kept.append(latency)
        if len(kept) < 100:
            return None
        ms = np.asarray(kept) * 1000
        return {
            "share": len(kept) / len(sent),
            "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)),
        }


def _cpu_ticks() -> tuple[int, int] | None:
    """(stolen, all) CPU ticks since boot, over every core."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal (guest time is inside user)
    ticks = [int(f) for f in fields[1:9]]
    return ticks[7], sum(ticks)


def _stolen_pct(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The stolen share, in percent, of the CPU ticks between two ``_cpu_ticks``."""
    total = after[1] - before[1]
    return 100.0 * (after[0] - before[0]) / total if total else 0.0


def describe_speed(speed: dict[str, float | None]) -> str:
    """``machine_speed``'s numbers as one line."""
    waiting = speed["cpu_waiting_pct_last_minute"]
    stolen = speed.get("cpu_stolen_pct")
    return (
        f"a million-step Python loop {speed['python_loop_ms']:.1f} ms, a 500-row gather "
        f"{speed['gather_500_rows_ms']:.3f} ms, tasks waiting for a core "
        + ("n/a" if waiting is None else f"{waiting:.0f} %")
        + " of the minute before, CPU time stolen by the host meanwhile "
        + ("n/a" if stolen is None else f"{stolen:.0f} %")
    )


def step(timings: dict[str, float], name: str, env: dict[str, str], *args: str) -> None:
    """Run ``cascade *args`` (it must succeed) and record its seconds as ``name``."""
    started = time.perf_counter()
    print(f"== cascade {' '.join(args)}", file=sys.stderr, flush=True)
    subprocess.run([*CASCADE, *args], env=env, check=True)
    timings[name] = time.perf_counter() - started


STEADY = {
    "PYTHONHASHSEED": "0",  # the same set and dict orders in every run
    "CASCADE_LOG_LEVEL": "WARNING",
    "CASCADE_RELEASE_POLL_SECONDS": "86400",
    "CASCADE_SNAPSHOT_REFRESH_SECONDS": "86400",
    "CASCADE_STATUS_REFRESH_SECONDS": "86400",
}
"""Settings for servers whose requests are compared: no background refresh lands in
the middle of a measurement."""


def trained_home(home: Path | None, prefix: str, timings: dict[str, float]) -> Path:
    """A CASCADE_HOME with a trained release: ``home`` when it has one; else ``home`` (a
    new directory named with ``prefix`` when None) with the demo data generated and
    trained, the steps' seconds recorded in ``timings``."""
    home = home or Path(tempfile.mkdtemp(prefix=prefix))
    if not (home / "releases").is_dir():
        env = {**os.environ, "CASCADE_HOME": str(home), "CASCADE_LOG_LEVEL": "WARNING"}
        step(timings, "db upgrade", env, "db", "upgrade")
        step(timings, "demo data", env, "demo-data")
        step(timings, "train all", env, "train", "all")
    return home


def checkout_env(checkout: Path) -> dict[str, str]:
    """The environment that makes ``cascade`` run another checkout's code."""
    code = [checkout / "server" / "src", checkout / "client" / "src"]
    return {"PYTHONPATH": os.pathsep.join(map(str, code))}


def fresh_database(server_url: str) -> str:
    """A new, empty database on ``server_url``'s server; its URL."""
    name = f"cascade_bench_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    """Drop the database ``fresh_database`` made."""
    parsed = make_url(url)
    engine = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')
    engine.dispose()


def shell_settings() -> dict[str, str]:
    """The ``CASCADE_*`` settings this shell gives: benchmarks let them win over their
    own defaults (``CASCADE_LOG_LEVEL=INFO`` measures the servers as they log by default)."""
    return {k: v for k, v in os.environ.items() if k.startswith("CASCADE_")}


def embedded_url(home: Path) -> str:
    """The URL of the embedded Postgres under ``home`` (started if needed)."""
    from cascade_server.storage.database import EmbeddedPostgres

    embedded = EmbeddedPostgres(home / "pgdata")
    return embedded.start()


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_serving(target: str, timeout_s: float = 120.0, interval_s: float = 0.5) -> None:
    """Wait until the gRPC health service at ``target`` reports SERVING (checking every
    ``interval_s``)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                request = health_pb2.HealthCheckRequest()
                if stub.Check(request, timeout=1).status == 1:  # type: ignore[attr-defined]
                    return
            except grpc.RpcError:
                pass
            time.sleep(interval_s)
    raise RuntimeError(f"the server at {target} did not become SERVING")


def serving_env(
    env: dict[str, str], home: Path, database: str | None
) -> tuple[dict[str, str], dict[str, int]]:
    """``env`` for `cascade serve all` on free ports, sharing the CLI's database."""
    ports = {name: free_port() for name in PORT_NAMES}
    server_env = {
        **env,
        **{f"CASCADE_{name}_PORT": str(p) for name, p in ports.items()},
        **{f"CASCADE_{name}_METRICS_PORT": str(free_port()) for name in PORT_NAMES},
    }
    if not database:
        # The servers must share the embedded database the CLI created.
        server_env["CASCADE_DATABASE_URL"] = embedded_url(home)
    return server_env, ports


def percentiles(samples_s: list[float]) -> dict[str, float]:
    """How many samples, and their p50, p99 and mean in ms."""
    ms = np.array(samples_s) * 1000
    return {
        "requests": len(samples_s),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(statistics.fmean(ms)),
    }


def write_report(
    out: Path, stem: str, report: dict[str, Any], lines: list[str], stamp: str = ""
) -> None:
    """Write ``report`` as JSON and ``lines`` plus its step timings as Markdown to
    ``out/<stem>-<stamp>.{json,md}`` (stamp: now, by default), and print the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = stamp or datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    (out / f"{stem}-{stamp}.json").write_text(json.dumps(report, indent=2))
    lines = [*lines, "", "| step | seconds |", "|---|---|"]
    lines += [f"| {step} | {seconds} |" for step, seconds in report["timings_s"].items()]
    markdown = "\n".join(lines) + "\n"
    (out / f"{stem}-{stamp}.md").write_text(markdown)
    print(markdown)
