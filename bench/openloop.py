"""An open-loop load generator on grpc.aio, and the servers' CPU and memory while it runs.

Open loop: request ``i`` is due at ``start + i / rate`` whatever happened to earlier
requests, and its latency counts from that due time, so a server that falls behind
shows its queueing in the numbers instead of slowing the generator down (the
"coordinated omission" of closed-loop tools). How late the generator itself sent each
request is measured too (``send_late_*``): it is part of every latency, and a
generator short of CPU shows there first.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import math
import os
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psutil
from prometheus_client.parser import text_string_to_metric_families


@dataclass
class LoadResult:
    """What one run at one rate measured."""

    rate: float
    duration_s: float
    latencies_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    degraded: int = 0
    """Answers that said a stage or source fell back (their ``degraded`` field)."""
    send_late_s: list[float] = field(default_factory=list)
    """Per request due, how long after its due time the generator got to it (sent it,
    or counted it as ``CLIENT_BACKLOG``)."""
    kernel_s: list[float] = field(default_factory=list)
    """Per answered request (aligned with ``latencies_s``), the CPU time the machine's busy
    kernel threads ran while it was out (empty without a ``KernelThreads``)."""

    def summary(self) -> dict[str, float]:
        """p50/p90/p99/max in ms, achieved throughput, and the error count."""
        ms = np.asarray(self.latencies_s) * 1000 if self.latencies_s else np.zeros(1)
        late_ms = np.asarray(self.send_late_s) * 1000 if self.send_late_s else np.zeros(1)
        return {
            "rate": self.rate,
            "requests": len(self.latencies_s) + sum(self.errors.values()),
            "p50_ms": float(np.percentile(ms, 50)),
            "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(ms.max()),
            "throughput": len(self.latencies_s) / self.elapsed_s if self.elapsed_s else 0.0,
            "errors": float(sum(self.errors.values())),
            "degraded": float(self.degraded),
            "send_late_p50_ms": float(np.percentile(late_ms, 50)),
            "send_late_p99_ms": float(np.percentile(late_ms, 99)),
        }


async def open_loop(
    call: Callable[[int], Awaitable[Any]],
    rate: float,
    duration_s: float,
    *,
    max_in_flight: int = 5000,
    on_done: Callable[[int, float], None] | None = None,
    kernel: KernelThreads | None = None,
) -> LoadResult:
    """Send ``call(i)`` at ``rate`` per second for ``duration_s`` seconds.

    A call that raises counts as an error by its gRPC status name; an answer whose
    ``degraded`` field is not empty counts as degraded (it is in the latencies too). Past
    ``max_in_flight`` outstanding calls a due request is not sent and counts as
    ``CLIENT_BACKLOG`` (the bound keeps a collapsed server from exhausting memory).
    ``on_done(i, latency)`` sees every successful call (for time series and for what
    each request asked). With ``kernel``, each answered request also records how long
    those kernel threads ran while it was out (``LoadResult.kernel_s``).
    """
    loop = asyncio.get_running_loop()
    result = LoadResult(rate, duration_s)
    count = int(rate * duration_s)
    start = time.monotonic() + 0.01
    pending: set[asyncio.Task[None]] = set()
    timer = DueTimer(loop)

    async def one(i: int, due: float) -> None:
        kernel_before = kernel.runtime_ns() if kernel is not None else 0
        try:
            response = await call(i)
        except grpc.aio.AioRpcError as error:
            result.errors[error.code().name] += 1
            return
        except Exception as error:
            code = getattr(error, "code", None)
            result.errors[
                code.name if isinstance(code, grpc.StatusCode) else type(error).__name__
            ] += 1
            return
        latency = time.monotonic() - due
        result.latencies_s.append(latency)
        if kernel is not None:
            result.kernel_s.append((kernel.runtime_ns() - kernel_before) / 1e9)
        if getattr(response, "degraded", None):
            result.degraded += 1
        if on_done is not None:
            on_done(i, latency)

    try:
        for i in range(count):
            due = start + i / rate
            await timer.sleep_until(due)
            result.send_late_s.append(time.monotonic() - due)
            if len(pending) >= max_in_flight:
                result.errors["CLIENT_BACKLOG"] += 1
                continue
            task = asyncio.create_task(one(i, due))
            pending.add(task)
            task.add_done_callback(pending.discard)
    finally:
        timer.close()
    if pending:
        await asyncio.wait(pending)
    result.elapsed_s = time.monotonic() - start
    return result


class KernelThreads:
    """The machine's busy kernel threads, and the CPU time they have run.

    A kernel thread can hold a core without being preempted (on a kernel built without
    preemption, until it yields): a request thread woken on that core waits for it even
    when the other core is idle. On the machines these benchmarks were written on,
    ``kdamond`` (the kernel's memory-access monitor, which the virtual machine runs)
    took a core about five times a second, for 2.3 ms at the median and up to 20 ms, and
    a request it overlapped was about 2 ms slower at the median (docs/performance.md,
    item 86). Busy: children of
    ``kthreadd`` that ran at least ``min_share`` of a core since boot. Reading their
    run time (``/proc/PID/schedstat``) takes about a microsecond per thread.
    """

    def __init__(self, threads: dict[str, int]) -> None:
        self.names = sorted(threads)
        self._fds: list[int] = []
        for pid in threads.values():
            with contextlib.suppress(OSError):  # ended since it was found
                self._fds.append(os.open(f"/proc/{pid}/schedstat", os.O_RDONLY))

    @classmethod
    def find(cls, min_share: float = 0.002) -> KernelThreads | None:
        """The kernel threads that ran at least ``min_share`` of a core since boot; None
        where there are none (or no ``/proc``)."""
        try:
            uptime_ns = float(Path("/proc/uptime").read_text().split()[0]) * 1e9
        except OSError:
            return None
        busy: dict[str, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                # pid (comm) state ppid ...; comm may hold spaces and parentheses
                text = stat.read_text()
                ppid = int(text[text.rindex(")") + 2 :].split()[1])
                if ppid != 2:
                    continue
                run_ns = int((stat.parent / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            if run_ns >= min_share * uptime_ns:
                busy[text[text.index("(") + 1 : text.rindex(")")]] = int(stat.parent.name)
        return cls(busy) if busy else None

    def runtime_ns(self) -> int:
        """The CPU time, in ns, the threads have run since boot."""
        return sum(int(os.pread(fd, 64, 0).split()[0]) for fd in self._fds)

    def close(self) -> None:
        """Close the threads' files."""
        for fd in self._fds:
            os.close(fd)
        self._fds = []


class DueTimer:
    """Sleeps until a time on the monotonic clock (``time.monotonic()``), to a tenth of a
    millisecond.

    asyncio rounds every wait up to the next whole millisecond (epoll's unit), and
    uvloop keeps its clock in whole milliseconds, so a request due at ``t`` went out up
    to 1 ms after ``t`` (0.67 ms at the median, measured at 50/s) and that delay counted
    in its latency. A Linux timerfd armed at the due time on the same clock
    (``CLOCK_MONOTONIC``) wakes the loop about 0.1 ms after it instead. Where there is
    no timerfd, this falls back to ``asyncio.sleep``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._fd = -1
        self._due = 0.0
        self._woken: asyncio.Future[None] | None = None
        create = getattr(_LIBC, "timerfd_create", None)
        if create is not None:
            self._fd = create(time.CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd >= 0:  # watched for the timer's whole life: no epoll change per wait
            loop.add_reader(self._fd, self._expired)

    async def sleep_until(self, when: float) -> None:
        """Return at ``when`` (``time.monotonic()``), or at once if it has passed."""
        if when <= time.monotonic():
            return
        if self._fd < 0:
            await asyncio.sleep(when - time.monotonic())
            return
        seconds = int(when)
        spec = _ITimerSpec(_TimeSpec(0, 0), _TimeSpec(seconds, int((when - seconds) * 1e9)))
        self._due, self._woken = when, self._loop.create_future()
        try:
            if _LIBC.timerfd_settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None):
                raise OSError(ctypes.get_errno(), "timerfd_settime failed")
            await self._woken
        finally:
            self._woken = None

    def _expired(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._fd, 8)
        # An expiry left over from a wait that was cancelled is not this one's.
        woken = self._woken
        if woken is not None and time.monotonic() >= self._due and not woken.done():
            woken.set_result(None)

    def close(self) -> None:
        """Release the timerfd."""
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1


class _TimeSpec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _ITimerSpec(ctypes.Structure):
    _fields_ = [("it_interval", _TimeSpec), ("it_value", _TimeSpec)]


_LIBC = ctypes.CDLL(None, use_errno=True)
_TFD_TIMER_ABSTIME = 1


@dataclass
class ProcessUsage:
    """CPU (in cores: 1.0 is one core busy) and resident memory of one process."""

    name: str
    cpu_cores: float
    rss_mib: float


class UsageMeter:
    """Measures the CPU time and RSS of named groups of processes over an interval (a
    stage served by several processes: their sum), and with ``durations`` what the
    servers timed themselves."""

    def __init__(
        self,
        processes: dict[str, list[psutil.Process]],
        durations: ServerDurations | None = None,
    ) -> None:
        self.processes = processes
        self.durations = durations
        self._start: dict[str, float] = {}
        self._started = 0.0

    def start(self) -> None:
        """Begin an interval."""
        if self.durations is not None:
            self.durations.start()
        self._started = time.perf_counter()
        self._start = {name: _cpu(group) for name, group in self.processes.items()}

    def stop(self) -> list[ProcessUsage]:
        """Each process's mean CPU use and current RSS over the interval."""
        wall = time.perf_counter() - self._started
        return [
            ProcessUsage(
                name,
                (_cpu(group) - self._start[name]) / wall if wall else 0.0,
                sum(p.memory_info().rss for p in group) / 2**20,
            )
            for name, group in self.processes.items()
        ]


BUDGET_S = 0.006
"""A stage's p99 budget: the servers' call-duration histograms have a bucket there."""


class ServerDurations:
    """The servers' own time per call over an interval, from the call-duration histogram
    each serves (``cascade_rpc_duration_seconds``: from the interceptor's start to its
    end, by method), read before and after: the part of a latency spent inside a server,
    apart from the generator, gRPC and the wait before the handler runs."""

    def __init__(self, metrics_ports: dict[str, int]) -> None:
        self._ports = metrics_ports
        self._before: dict[tuple[str, str], dict[float, float]] = {}

    def start(self) -> None:
        """Begin an interval."""
        self._before = self._read()

    def stop(self, min_calls: float) -> list[dict[str, Any]]:
        """Per server and method with at least ``min_calls`` calls in the interval: the
        calls, p50 and p99 in ms (estimated within their buckets, as Prometheus'
        ``histogram_quantile`` does) and the share within ``BUDGET_S``."""
        out = []
        for (server, method), after in sorted(self._read().items()):
            before = self._before.get((server, method), {})
            counts = {le: n - before.get(le, 0.0) for le, n in after.items()}
            calls = counts.get(math.inf, 0.0)
            if calls < max(min_calls, 1):
                continue
            out.append(
                {
                    "server": server,
                    "method": method.rsplit("/", 1)[-1],
                    "calls": calls,
                    "p50_ms": _bucket_quantile(counts, 0.5) * 1000,
                    "p99_ms": _bucket_quantile(counts, 0.99) * 1000,
                    "within_budget": counts.get(BUDGET_S, math.nan) / calls,
                }
            )
        return out

    def _read(self) -> dict[tuple[str, str], dict[float, float]]:
        """(server, method) → cumulative count per bucket bound, from every server."""
        buckets: dict[tuple[str, str], dict[float, float]] = {}
        for server, port in self._ports.items():
            url = f"http://127.0.0.1:{port}/metrics"
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    text = response.read().decode()
            except OSError:  # metrics off, or the server is gone: nothing to report
                continue
            for family in text_string_to_metric_families(text):
                if family.name != "cascade_rpc_duration_seconds":
                    continue
                for sample in family.samples:
                    if sample.name.endswith("_bucket"):
                        key = (server, sample.labels["method"])
                        buckets.setdefault(key, {})[float(sample.labels["le"])] = sample.value
        return buckets


def _bucket_quantile(counts: dict[float, float], q: float) -> float:
    """The ``q`` quantile of cumulative bucket ``counts`` (bound → calls at or under
    it), linear within the bucket that holds it; the highest finite bound when that is
    the open-ended one."""
    bounds = sorted(counts)
    target = q * counts[math.inf]
    lower, below = 0.0, 0.0
    for bound in bounds:
        if counts[bound] >= target:
            if math.isinf(bound):
                return lower
            inside = counts[bound] - below
            return lower + (bound - lower) * ((target - below) / inside if inside else 1.0)
        lower, below = bound, counts[bound]
    return lower


class CpuTimeline:
    """CPU use in fixed steps, by group: each stage's server processes, the processes
    they start (``"<stage> check"``: a release check), and this process's other
    children but the `cascade serve` supervisor (``"command"``: a `cascade` command it
    runs). A process counts from the step it is first seen in, so one shorter than a
    step may be missed."""

    def __init__(self, processes: dict[str, list[psutil.Process]], step_s: float = 0.5) -> None:
        self._servers = {p.pid: name for name, group in processes.items() for p in group}
        self._step_s = step_s
        self._last: dict[int, float] = {}
        self.steps: list[tuple[float, dict[str, float]]] = []
        """(seconds since ``run`` began, {group: cores}) per step."""

    async def run(self, stop: asyncio.Event) -> None:
        """Sample every step until ``stop`` is set."""
        began = time.perf_counter()
        self._sample()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._step_s)
            used = self._sample()
            self.steps.append(
                (time.perf_counter() - began, {k: v / self._step_s for k, v in used.items()})
            )

    def _sample(self) -> dict[str, float]:
        used: dict[str, float] = {}
        groups = dict(self._servers)
        for pid, name in self._servers.items():
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(pid).children(recursive=True):
                    groups[child.pid] = f"{name} check"
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if child.pid not in groups and "serve" not in child.cmdline():
                    groups[child.pid] = "command"
        for pid, group in groups.items():
            with contextlib.suppress(psutil.Error):
                total = _cpu_seconds(psutil.Process(pid))
                if pid in self._last:
                    used[group] = used.get(group, 0.0) + total - self._last[pid]
                self._last[pid] = total
        return used


def server_processes(supervisor_pid: int, names: Sequence[str]) -> dict[str, list[psutil.Process]]:
    """The `cascade serve all` children by stage name (from their command lines)."""
    found: dict[str, list[psutil.Process]] = {}
    for child in psutil.Process(supervisor_pid).children(recursive=True):
        command = " ".join(child.cmdline())
        for name in names:
            if f"serve {name}" in command:
                found.setdefault(name, []).append(child)
    return found


def _cpu(group: list[psutil.Process]) -> float:
    return sum(_cpu_seconds(p) for p in group)


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)
