"""Instructions each server executes per request, counted by callgrind: the servers' CPU
work in a unit that neither the machine's speed nor the host's steal moves.

    make bench-instructions                       # demo data, generated and trained first
    .venv/bin/python bench/instructions.py --home HOME --requests 100 --top 25
    git worktree add /tmp/base COMMIT             # then, against that version:
    .venv/bin/python bench/instructions.py --home HOME --baseline /tmp/base

On a shared machine two runs of the same code can differ by 30 % in time, and the host
may take half of the CPU in a second (docs/performance.md, items 62 and 63): a change
worth 5 % cannot be seen in latency or CPU time there. Instructions can: for the same
code, data and requests they repeat to about a percent, whatever else the machine does
(two counts can even run at once). They are not time (a cache miss costs what an
instruction does not), so read them beside the load runs, not instead of them.

How: retrieval, ranking and blending each run as `cascade serve STAGE` under
`valgrind --tool=callgrind` (Debian's `valgrind`) on a home with a trained release
(``--home``, for instance one that `bench/load.py --home` prepared; else a new one).
Each gets `PYTHONHASHSEED=0` and time budgets far above what the slowed servers need
(so no stage skips work and nothing is degraded: the script checks every answer), and
background refreshes are put off beyond the run. What each server executes idle (its
timers) is counted first, per second. Then, for each measured method, requests are
sent one at a time from this process (not counted): a warm-up, a callgrind dump that
zeroes the counters, ``--requests`` requests, and a dump whose total, less the idle
rate over the seconds they took, is the servers' instructions for them. The report
gives instructions per request by server and where they go by library (the
interpreter, gRPC, numpy, LightGBM, Annoy, ...) and by function. With ``--baseline``
a second set of servers runs another checkout's code (through ``PYTHONPATH``) and
gets the same requests at the same time; the report adds the ratios of the counts.
Under callgrind the servers run about 50 times slower, so a count takes minutes: this
is a tool to compare code with, not a load test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from load import STAGES, Workload, sample_users
from pipeline import (
    CASCADE,
    STEADY,
    checkout_env,
    embedded_url,
    machine,
    serving_env,
    shell_settings,
    trained_home,
    wait_serving,
    write_report,
)

ROOT = Path(__file__).resolve().parent.parent
METHODS = {
    "RetrieveCandidates (columns)": ("retrieval",),
    "RankCandidates (columns)": ("ranking",),
    "BlendCandidates": ("blending",),
    "Recommend": ("retrieval", "ranking", "blending"),
}
"""The measured methods, and the servers each one's request reaches."""
QUIET = {
    **STEADY,
    "CASCADE_SOURCE_BUDGET_MS": "60000",
    "CASCADE_SOURCE_HANDOFF_MS": "60000",  # one thread, as at full speed
    "CASCADE_RETRIEVAL_TIMEOUT_MS": "600000",
    "CASCADE_RANKING_TIMEOUT_MS": "600000",
    "CASCADE_RECOMMEND_DEADLINE_MS": "600000",
}
"""Settings under which the slowed servers do the work they do at full speed, and only it."""
CALL_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class CostLines:
    """A callgrind dump: its totals by event, and the self cost in instructions of each
    shared object and function."""

    events: dict[str, int]
    objects: Counter[str]
    functions: Counter[str]

    @property
    def total(self) -> int:
        """Instructions executed."""
        return self.events["Ir"]


def read_dump(path: Path) -> CostLines:
    """Parse a callgrind output file. A cost line right after ``calls=`` is the call's
    inclusive cost, which belongs to the callee, so it is not counted here."""
    names: dict[str, dict[str, str]] = {"ob": {}, "fn": {}}
    objects: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    events: dict[str, int] = {}
    current = {"ob": "?", "fn": "?"}
    after_call = False
    with path.open() as lines:
        for line in lines:
            if line.startswith("events:"):
                kinds = line.split()[1:]
            elif line.startswith("summary:"):
                counts = [int(v) for v in line.split()[1:]]
                events = dict(zip(kinds, counts + [0] * (len(kinds) - len(counts)), strict=True))
            elif line.startswith(("ob=", "fn=")):
                kind = line[:2]
                current[kind] = _name(names[kind], line[3:].rstrip("\n"))
            elif line.startswith(("cob=", "cfn=")):  # a callee's names, defined for later
                _name(names[line[1:3]], line[4:].rstrip("\n"))
            elif line.startswith("calls="):
                after_call = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                if after_call:
                    after_call = False
                    continue
                parts = line.split()
                if len(parts) > 1:  # the first event is Ir
                    cost = int(parts[1])
                    objects[current["ob"]] += cost
                    functions[f"{current['fn']} ({current['ob']})"] += cost
    return CostLines(events, objects, functions)


def estimated_cycles(events: dict[str, float]) -> float:
    """Callgrind's own estimate of cycles from a cache simulation (`callgrind_annotate`'s
    formula without branch simulation): 10 per first-level miss, 100 per last-level."""
    first = sum(events.get(e, 0.0) for e in ("I1mr", "D1mr", "D1mw"))
    last = sum(events.get(e, 0.0) for e in ("ILmr", "DLmr", "DLmw"))
    return events["Ir"] + 10 * first + 100 * last


def _name(table: dict[str, str], spec: str) -> str:
    """Resolve callgrind's name compression: ``(id) name`` defines, ``(id)`` refers."""
    if spec.startswith("("):
        ident, _, name = spec.partition(")")
        name = name.strip()
        if name:
            table[ident] = _short(name)
            return table[ident]
        return table.get(ident, ident + ")")
    return _short(spec)


def _short(name: str) -> str:
    return name.rsplit("/", 1)[-1] if name.startswith("/") else name


class Callgrind:
    """The servers under callgrind, and dumps of what each counted since the last."""

    def __init__(self, out: Path, cache_sim: bool) -> None:
        self.out = out
        self.cache_sim = cache_sim
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._dumps: Counter[str] = Counter()

    def start(self, stage: str, env: dict[str, str]) -> None:
        """Start ``cascade serve STAGE`` under callgrind, not counting yet."""
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",  # the start-up runs faster uncounted
            f"--cache-sim={'yes' if self.cache_sim else 'no'}",
            f"--callgrind-out-file={self.out / stage}.%p",
            *CASCADE,
            "serve",
            stage,
        ]
        with (self.out / f"{stage}.log").open("wb") as log:  # the child keeps its own copy
            self.processes[stage] = subprocess.Popen(command, env=env, stdout=log, stderr=log)

    def count(self) -> None:
        """Switch counting on in every server."""
        for process in self.processes.values():
            _control("--instr=on", process.pid)

    def dump(self, stage: str) -> Path:
        """Write what ``stage``'s server counted since its last dump (and zero it)."""
        process = self.processes[stage]
        if process.poll() is not None:
            raise RuntimeError(
                f"the {stage} server under callgrind exited ({process.returncode}): "
                f"see {self.out / stage}.log"
            )
        self._dumps[stage] += 1
        _control("--dump", process.pid)
        return self.out / f"{stage}.{process.pid}.{self._dumps[stage]}"

    def stop(self) -> None:
        """Stop the servers (their final dumps are not read)."""
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(120)
            except subprocess.TimeoutExpired:
                process.kill()


def _control(option: str, pid: int) -> None:
    subprocess.run(["callgrind_control", option, str(pid)], check=True, capture_output=True)


@contextmanager
def servers(
    home: Path, out: Path, cache_sim: bool, code: dict[str, str]
) -> Iterator[tuple[Callgrind, dict[str, int]]]:
    """The three stages' servers under callgrind on ``home`` (``code``: the environment
    that picks the code they run), SERVING; their ports."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CASCADE_HOME": str(home), **QUIET, **shell_settings(), **code}
    server_env, ports = serving_env(env, home, None)
    callgrind = Callgrind(out, cache_sim)
    try:
        for stage in STAGES:
            callgrind.start(stage, server_env)
        for stage in STAGES:
            wait_serving(f"127.0.0.1:{ports[stage.upper()]}", timeout_s=1800, interval_s=2)
            print(f"{stage}: serving under callgrind", file=sys.stderr, flush=True)
        callgrind.count()
        yield callgrind, ports
    finally:
        callgrind.stop()


Counts = dict[str, float]
"""Events (Ir: instructions; with the cache simulation, first- and last-level misses)."""


@dataclass(frozen=True)
class Counted:
    """What a method's requests cost each server they reached, and how long they took."""

    costs: dict[str, CostLines]
    seconds: float


async def count(
    callgrind: Callgrind, workload: Workload, requests: int, warm_up: int, idle_s: float
) -> tuple[dict[str, Counts], dict[str, Counted]]:
    """What each server executes per second idle (timers, background tasks); then for
    each measured method, what each server it reaches executed for ``requests``
    requests sent one at a time (after ``warm_up`` of them), and the seconds that took."""
    for stage in STAGES:
        callgrind.dump(stage)
    await asyncio.sleep(idle_s)
    idle = {
        stage: {e: v / idle_s for e, v in read_dump(callgrind.dump(stage)).events.items()}
        for stage in STAGES
    }
    print(f"idle, per second: {_millions({s: v['Ir'] for s, v in idle.items()})}", file=sys.stderr)
    calls = workload.calls()
    counted: dict[str, Counted] = {}
    for method, stages in METHODS.items():
        call = calls[method]
        for i in range(warm_up):
            _check(method, await call(i))
        for stage in stages:
            callgrind.dump(stage)
        started = time.perf_counter()
        for i in range(requests):
            _check(method, await call(warm_up + i))
        seconds = time.perf_counter() - started
        counted[method] = Counted({s: read_dump(callgrind.dump(s)) for s in stages}, seconds)
        per_request = {
            s: per_request_counts(c, idle[s], seconds, requests)["Ir"]
            for s, c in counted[method].costs.items()
        }
        print(f"{method}: {_millions(per_request)}", file=sys.stderr, flush=True)
    return idle, counted


def per_request_counts(cost: CostLines, idle: Counts, seconds: float, requests: int) -> Counts:
    """Each event per request, less what the server does idle in as many seconds."""
    counts = {e: (v - idle.get(e, 0.0) * seconds) / requests for e, v in cost.events.items()}
    if "D1mr" in counts:
        counts["cycles"] = estimated_cycles(counts)
    return counts


def _check(method: str, response: Any) -> None:
    """Counts are of full work only: a degraded answer (a skipped source, a fallback
    scorer) means a budget was too short for the slowed servers."""
    degraded = list(getattr(response, "degraded", ()))
    if degraded:
        raise RuntimeError(f"{method} answered degraded: {[d.message for d in degraded]}")


def _millions(values: Counts) -> str:
    return ", ".join(f"{stage} {value / 1e6:.2f} M" for stage, value in values.items())


def summarise(
    idle: dict[str, Counts], counted: dict[str, Counted], requests: int, top: int
) -> dict[str, Any]:
    """Per method: each event per request by server (less what the server executes idle
    over as long), and for each server the ``top`` libraries and functions by their
    share of its instructions."""
    out: dict[str, Any] = {}
    for method, measured in counted.items():
        per_request = {
            s: per_request_counts(c, idle[s], measured.seconds, requests)
            for s, c in measured.costs.items()
        }
        out[method] = {
            "per_request": per_request,
            "seconds": measured.seconds,
            "where": {
                stage: {
                    "libraries": _shares(cost.objects, cost.total, top),
                    "functions": _shares(cost.functions, cost.total, top),
                }
                for stage, cost in measured.costs.items()
            },
        }
    return out


def _shares(costs: Counter[str], total: int, top: int) -> list[dict[str, Any]]:
    return [
        {"name": name, "share": cost / total if total else 0.0}
        for name, cost in costs.most_common(top)
    ]


COLUMNS = {"Ir": "instructions", "cycles": "estimated cycles"}
"""The events the report's tables give (cycles with the cache simulation only)."""


def markdown(report: dict[str, Any]) -> list[str]:
    """The report's tables: each version's counts, their ratios, where the first
    version's instructions go."""
    versions = report["versions"]
    lines = [
        "# Instructions per request (callgrind)",
        "",
        f"{report['date']}, {report['machine']}; home {report['home']}; "
        f"{report['requests']} requests per method after {report['warm_up']} to warm up, "
        "one at a time, the versions counted at once. What each server executes idle (a "
        "second: "
        + "; ".join(
            f"{name} " + ", ".join(f"{s} {v['Ir'] / 1e6:.2f} M" for s, v in version["idle"].items())
            for name, version in versions.items()
        )
        + ") is taken off for each second a method's requests took.",
    ]
    per_request = {name: v["results"] for name, v in versions.items()}
    first = next(iter(per_request.values()))
    events = next(iter(next(iter(first.values()))["per_request"].values()))
    for event, title in COLUMNS.items():
        if event not in events:
            continue
        for name, results in per_request.items():
            lines += ["", f"{title.capitalize()} per request, in millions ({name}):", ""]
            lines += _table(results, lambda counts, stage: f"{counts[stage] / 1e6:.2f}", event)
        if len(per_request) == 2:
            (new_name, new), (old_name, old) = per_request.items()
            lines += ["", f"{title.capitalize()}: {new_name} / {old_name}:", ""]
            ratios = {
                method: {"per_request": _ratios(new[method], old[method], event)} for method in new
            }
            lines += _table(ratios, lambda counts, stage: f"{counts[stage]:.3f}", None)
    for method, result in first.items():
        for stage, where in result["where"].items():
            name = next(iter(per_request))
            lines += ["", f"## {method}, {stage}: where its instructions go ({name})", ""]
            lines += ["| library | share |", "|---|---|"]
            lines += [f"| {o['name']} | {o['share']:.1%} |" for o in where["libraries"]]
            lines += ["", "| function (library) | share |", "|---|---|"]
            lines += [f"| `{f['name']}` | {f['share']:.1%} |" for f in where["functions"]]
    return lines


def _ratios(new: dict[str, Any], old: dict[str, Any], event: str) -> dict[str, float]:
    ratios = {s: c[event] / old["per_request"][s][event] for s, c in new["per_request"].items()}
    total = sum(c[event] for c in old["per_request"].values())
    ratios["total"] = sum(c[event] for c in new["per_request"].values()) / total
    return ratios


def _table(
    results: dict[str, Any], cell: Callable[[dict[str, Any], str], str], event: str | None
) -> list[str]:
    """One row per method, one column per server and the total; ``event`` picks each
    server's count (None: the values are the cells already, total included)."""
    lines = ["| method | " + " | ".join(STAGES) + " | total |"]
    lines += ["|---|" + "---|" * (len(STAGES) + 1)]
    for method, result in results.items():
        counts = result["per_request"]
        if event is not None:
            counts = {s: c[event] for s, c in counts.items()}
            counts["total"] = sum(counts.values())
        cells = [cell(counts, s) if s in counts else "-" for s in (*STAGES, "total")]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def main() -> int:
    args = _arguments()
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed: apt-get install valgrind")
    timings: dict[str, float] = {}
    home = trained_home(args.home, "cascade-instructions-", timings)
    versions: dict[str, dict[str, str]] = {"this checkout": {}}
    if args.baseline:
        versions[f"baseline {args.baseline}"] = checkout_env(args.baseline)
    with tempfile.TemporaryDirectory(prefix="cascade-callgrind-") as scratch:
        started = time.perf_counter()
        with ExitStack() as stack:
            running = {
                name: stack.enter_context(
                    servers(home, Path(scratch) / f"v{i}", args.cache_sim, code)
                )
                for i, (name, code) in enumerate(versions.items())
            }
            counted = asyncio.run(_measure(running, home, args))
        timings["count"] = time.perf_counter() - started
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "home": str(home),
        "requests": args.requests,
        "warm_up": args.warm_up,
        "cache_sim": args.cache_sim,
        "versions": {
            name: {
                "idle": idle,
                "results": summarise(idle, by_method, args.requests, args.top),
            }
            for name, (idle, by_method) in counted.items()
        },
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    write_report(args.out, "instructions", report, markdown(report))
    return 0


async def _measure(
    running: dict[str, tuple[Callgrind, dict[str, int]]], home: Path, args: argparse.Namespace
) -> dict[str, tuple[dict[str, Counts], dict[str, Counted]]]:
    """Each version's counts, the versions counted at once over the same requests."""
    users = sample_users(embedded_url(home), args.users)
    workloads = {
        name: Workload(ports, users, timeout_s=CALL_TIMEOUT_S)
        for name, (_, ports) in running.items()
    }
    try:
        for workload in workloads.values():
            await workload.prepare()
        counts = await asyncio.gather(
            *(
                count(running[name][0], workload, args.requests, args.warm_up, args.idle)
                for name, workload in workloads.items()
            )
        )
        return dict(zip(workloads, counts, strict=True))
    finally:
        for workload in workloads.values():
            await workload.close()


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--home",
        type=Path,
        help="a CASCADE_HOME with a trained release (default: a new one, with the demo "
        "data generated and trained first, a few minutes)",
    )
    parser.add_argument("--requests", type=int, default=60, help="counted requests per method")
    parser.add_argument("--warm-up", type=int, default=10, help="uncounted requests before them")
    parser.add_argument(
        "--idle", type=float, default=10.0, help="seconds the servers' idle work is counted"
    )
    parser.add_argument(
        "--cache-sim",
        action="store_true",
        help="also simulate the caches: misses and estimated cycles per request (slower)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of another version (say, `git worktree add /tmp/base COMMIT`): its "
        "servers are counted at the same time on the same requests, and the report gives "
        "the ratios of this checkout's counts to its",
    )
    parser.add_argument("--users", type=int, default=60, help="users the requests cycle through")
    parser.add_argument("--top", type=int, default=15, help="libraries and functions listed")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())
