"""CPU time each server spends per request, two versions side by side, their requests
interleaved: a time comparison that the machine's drift cannot tilt.

    .venv/bin/python bench/cputime.py --home HOME --baseline-env CASCADE_EVENT_LOOP=asyncio
    git worktree add /tmp/base COMMIT             # then, against that version's code:
    .venv/bin/python bench/cputime.py --home HOME --baseline /tmp/base

`bench/instructions.py` counts instructions, which repeat to a fraction of a percent but
leave out the kernel's work (the system calls and thread wake-ups of every gRPC call)
and what a cache miss costs. This script measures time instead, and makes it fair by
running both versions at once: retrieval, ranking and blending as `cascade serve
STAGE` twice on one home (with ``--home``; else demo data trained first), one set this
checkout's code, the other ``--baseline``'s code (through ``PYTHONPATH``) and/or this
code with the ``--baseline-env`` settings. For each method, requests go one at a time,
in blocks of ``--block`` to one version then the other (which goes first alternates),
for ``--rounds`` rounds; each server's CPU time is read around every block from its
CPU-time clock (to the nanosecond), its user and system split from psutil (in 10 ms
ticks) and its threads' context switches from ``/proc``. A block of each version is a
pair taken moments apart, so a slow minute slows both; the report gives, per method and
server, each version's CPU per request, the ratio of the two with its range over each
quarter of the rounds, and the latency of the serial requests. Degraded answers are
counted and reported, not hidden: both versions run the default budgets.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from instructions import METHODS
from load import STAGES, Workload, sample_users
from pipeline import (
    CASCADE,
    STEADY,
    checkout_env,
    describe_speed,
    embedded_url,
    machine,
    machine_speed,
    percentiles,
    serving_env,
    shell_settings,
    trained_home,
    wait_serving,
    write_report,
)

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def servers(home: Path, env: dict[str, str], log_dir: Path) -> Iterator[dict[str, Any]]:
    """The three stages' servers on ``home`` with ``env``, SERVING: their processes and ports."""
    server_env, ports = serving_env({**os.environ, "CASCADE_HOME": str(home), **env}, home, None)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for stage in STAGES:
            with (log_dir / f"{stage}.log").open("wb") as log:
                processes[stage] = subprocess.Popen(
                    [*CASCADE, "serve", stage], env=server_env, stdout=log, stderr=log
                )
        for stage in STAGES:
            wait_serving(f"127.0.0.1:{ports[stage.upper()]}", timeout_s=600)
        yield {
            "processes": {s: psutil.Process(p.pid) for s, p in processes.items()},
            "ports": ports,
        }
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()


def cpu(processes: dict[str, psutil.Process]) -> dict[str, tuple[float, float, int, float]]:
    """Each server's (user, system) CPU seconds so far, its threads' context switches
    (voluntary and not: each is a thread put to sleep or off its core), and its CPU
    seconds to the nanosecond (``cpu_seconds``)."""
    return {
        stage: (
            *process.cpu_times()[:2],
            context_switches(process.pid),
            cpu_seconds(process.pid),
        )
        for stage, process in processes.items()
    }


_LIBC = ctypes.CDLL(None, use_errno=True)


def cpu_seconds(pid: int) -> float:
    """The CPU time of process ``pid`` (all its threads, those ended included), read from
    its CPU-time clock (``clock_getcpuclockid(3)``) to the nanosecond. psutil's user and
    system times come in the kernel's 10 ms ticks: a block of 20 requests of 6 ms each
    reads 10 or 20 % off either way."""
    clock = ctypes.c_int()
    error = _LIBC.clock_getcpuclockid(pid, ctypes.byref(clock))
    if error:
        raise OSError(error, os.strerror(error))
    return time.clock_gettime(clock.value)


def context_switches(pid: int) -> int:
    """The context switches of the process's live threads (``/proc/PID/task/*/status``)."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            text = status.read_text()
        except OSError:  # the thread ended meanwhile
            continue
        for line in text.splitlines():
            if "ctxt_switches:" in line:
                total += int(line.split()[1])
    return total


async def measure(
    running: dict[str, dict[str, Any]], workloads: dict[str, Workload], args: argparse.Namespace
) -> dict[str, Any]:
    """Per method, per version: per-round CPU per request by server, latencies, degraded."""
    names = list(running)
    results: dict[str, Any] = {}
    for method, stages in METHODS.items():
        calls = {name: workloads[name].calls()[method] for name in names}
        for name in names:  # warm-up, not measured
            for i in range(args.warm_up):
                await calls[name](i)
        rounds: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name in names}
        latencies: dict[str, list[float]] = {name: [] for name in names}
        degraded = dict.fromkeys(names, 0)
        sent = 0
        for r in range(args.rounds):
            order = names if r % 2 == 0 else names[::-1]
            for name in order:
                processes = {s: running[name]["processes"][s] for s in stages}
                before = cpu(processes)
                for i in range(args.block):
                    started = time.perf_counter()
                    response = await calls[name](sent + i)
                    latencies[name].append(time.perf_counter() - started)
                    degraded[name] += bool(list(getattr(response, "degraded", ())))
                after = cpu(processes)
                rounds[name].append(
                    {
                        s: {
                            "user": (after[s][0] - before[s][0]) / args.block,
                            "system": (after[s][1] - before[s][1]) / args.block,
                            "switches": (after[s][2] - before[s][2]) / args.block,
                            "cpu": (after[s][3] - before[s][3]) / args.block,
                        }
                        for s in stages
                    }
                )
            sent += args.block
        results[method] = {
            name: {
                "rounds": rounds[name],
                "latency": percentiles(latencies[name]),
                "degraded": degraded[name],
            }
            for name in names
        }
        print(f"{method}: {_line(results[method], stages)}", file=sys.stderr, flush=True)
    return results


def per_request(rounds: list[dict[str, dict[str, float]]], stage: str, part: str = "") -> float:
    """A server's CPU seconds per request over all rounds (to the nanosecond, or one
    ``part``: "user" or "system", which come in 10 ms ticks, coarse against one block but
    unbiased in sum)."""
    return statistics.fmean(_value(r[stage], part) for r in rounds)


def ratios(
    new: list[dict[str, dict[str, float]]],
    old: list[dict[str, dict[str, float]]],
    stages: tuple[str, ...],
    groups: int = 4,
) -> tuple[float, list[float]]:
    """The new version's CPU per request over the old one's (``stages`` summed), over all
    rounds and over each of ``groups`` runs of consecutive rounds (the spread)."""

    def ratio(a: list[dict[str, dict[str, float]]], b: list[dict[str, dict[str, float]]]) -> float:
        total = sum(_value(r[s]) for r in b for s in stages)
        return sum(_value(r[s]) for r in a for s in stages) / max(total, 1e-12)

    size = max(1, len(new) // groups)
    parts = [
        ratio(new[i : i + size], old[i : i + size]) for i in range(0, len(new) - size + 1, size)
    ]
    return ratio(new, old), parts


def _value(cell: dict[str, float], part: str = "") -> float:
    return cell[part or "cpu"]


def switches(rounds: list[dict[str, dict[str, float]]], stage: str) -> float:
    """A server's context switches per request over all rounds."""
    return statistics.fmean(r[stage].get("switches", 0.0) for r in rounds)


def _line(method_result: dict[str, Any], stages: tuple[str, ...]) -> str:
    return "; ".join(
        f"{name}: " + ", ".join(f"{s} {1000 * per_request(v['rounds'], s):.2f} ms" for s in stages)
        for name, v in method_result.items()
    )


def markdown(report: dict[str, Any]) -> list[str]:
    """CPU per request by version and server, the ratios, the serial latencies."""
    names = list(report["versions"])
    lines = [
        "# CPU time per request, two versions interleaved",
        "",
        f"{report['date']}, {report['machine']}; {report['speed']}; home {report['home']}; "
        f"{report['rounds']} rounds of {report['block']} requests per version and method, "
        "one at a time, the versions alternating block by block.",
        "",
        "Versions: "
        + "; ".join(
            f"**{n}** ({', '.join(v) or 'this checkout as is'})"
            for n, v in report["versions"].items()
        )
        + ".",
        "",
        "CPU per request, ms (the server's CPU-time clock; in brackets the system part, in "
        "the kernel's 10 ms ticks, and the server's context switches per request):",
        "",
        "| method | version | " + " | ".join(STAGES) + " | total | p50 / p99 ms | degraded |",
        "|---|---|" + "---|" * (len(STAGES) + 3),
    ]
    for method, by_version in report["results"].items():
        stages = METHODS[method]
        for name in names:
            measured = by_version[name]
            cells = [
                f"{1000 * per_request(measured['rounds'], s):.2f} "
                f"({1000 * per_request(measured['rounds'], s, 'system'):.2f}; "
                f"{switches(measured['rounds'], s):.1f})"
                if s in stages
                else "-"
                for s in STAGES
            ]
            total = sum(per_request(measured["rounds"], s) for s in stages)
            latency = measured["latency"]
            lines.append(
                f"| {method} | {name} | " + " | ".join(cells) + f" | {1000 * total:.2f} | "
                f"{latency['p50_ms']:.2f} / {latency['p99_ms']:.2f} | "
                f"{measured['degraded']} of {latency['requests']} |"
            )
    if len(names) == 2:
        new, old = names
        lines += [
            "",
            f"CPU per request, {new} / {old}, over all rounds (in brackets: the lowest and "
            "highest over each quarter of the rounds):",
            "",
            "| method | " + " | ".join(STAGES) + " | total |",
            "|---|" + "---|" * (len(STAGES) + 1),
        ]
        for method, by_version in report["results"].items():
            stages = METHODS[method]
            cells = []
            groups: list[tuple[str, ...]] = [(s,) if s in stages else () for s in STAGES]
            for group in [*groups, stages]:
                if not group:
                    cells.append("-")
                    continue
                overall, parts = ratios(by_version[new]["rounds"], by_version[old]["rounds"], group)
                cells.append(f"{overall:.3f} ({min(parts):.3f} to {max(parts):.3f})")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def main() -> int:
    args = _arguments()
    timings: dict[str, float] = {}
    home = trained_home(args.home, "cascade-cputime-", timings)
    baseline_env = dict(pair.split("=", 1) for pair in args.baseline_env)
    if args.baseline:
        baseline_env |= checkout_env(args.baseline)
    if not baseline_env:
        raise SystemExit("give --baseline DIR and/or --baseline-env NAME=VALUE: two versions")
    # What each side runs: the settings this shell gives both, then the baseline's own.
    shared = shell_settings()
    versions = {
        "this": shared,
        "baseline": shared
        | {k: v for k, v in baseline_env.items() if k != "PYTHONPATH"}
        | ({"code": str(args.baseline)} if args.baseline else {}),
    }
    speed = describe_speed(machine_speed())
    print(f"machine: {speed}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cascade-cputime-") as scratch, ExitStack() as stack:
        running = {}
        for name, env in (("this", {}), ("baseline", baseline_env)):
            log_dir = Path(scratch) / name
            log_dir.mkdir()
            # The shell's settings win over the steady ones.
            running[name] = stack.enter_context(servers(home, {**STEADY, **shared, **env}, log_dir))
        results = asyncio.run(_run(running, home, args))
    timings["measure"] = time.perf_counter() - started
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "speed": speed,
        "home": str(home),
        "rounds": args.rounds,
        "block": args.block,
        "versions": {n: [f"{k}={v}" for k, v in env.items()] for n, env in versions.items()},
        "results": results,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    write_report(args.out, "cputime", report, markdown(report))
    return 0


async def _run(
    running: dict[str, dict[str, Any]], home: Path, args: argparse.Namespace
) -> dict[str, Any]:
    users = sample_users(embedded_url(home), args.users)
    workloads = {name: Workload(r["ports"], users, timeout_s=5.0) for name, r in running.items()}
    try:
        for workload in workloads.values():
            await workload.prepare()
        return await measure(running, workloads, args)
    finally:
        for workload in workloads.values():
            await workload.close()


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--home",
        type=Path,
        help="a CASCADE_HOME with a trained release (default: a new one, demo data trained first)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of the other version (`git worktree add /tmp/base COMMIT`)",
    )
    parser.add_argument(
        "--baseline-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting only the baseline's servers get (repeatable); with no --baseline "
        "they run this checkout's code, so the setting alone differs",
    )
    parser.add_argument("--rounds", type=int, default=20, help="blocks per version and method")
    parser.add_argument("--block", type=int, default=20, help="requests per block")
    parser.add_argument("--warm-up", type=int, default=30, help="unmeasured requests first")
    parser.add_argument("--users", type=int, default=60, help="users the requests cycle through")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())
