"""``cascade serve all``: run each stage as its own process and stop them all together.

The supervisor starts the four servers (``python -m cascade_server serve <stage>``;
as many processes of a stage as its ``CASCADE_<STAGE>_PROCESSES`` says, sharing its
port) with the same settings and one database URL, forwards SIGINT/SIGTERM to them, and
exits when they have all stopped. When any server exits on its own, the others are
stopped too and the supervisor exits with an error: a partial deployment is never
left running. One-off jobs (``cascade demo`` trains the first release this way) run
beside the servers; their exit, successful or not, is logged and nothing else.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cascade_server.logs import get_logger
from cascade_server.settings import ServiceName

_log = get_logger(__name__)

START_ORDER = (
    ServiceName.RETRIEVAL,
    ServiceName.RANKING,
    ServiceName.CATALOG,
    ServiceName.BLENDING,
)


@dataclass
class Child:
    """One supervised server process."""

    service: ServiceName
    process: subprocess.Popen[bytes]


class Supervisor:
    """Starts, watches and stops the stage processes."""

    def __init__(
        self,
        services: Sequence[ServiceName] = START_ORDER,
        *,
        processes: Mapping[ServiceName, int] | None = None,
        env: Mapping[str, str] | None = None,
        grace_s: float = 5.0,
        jobs: Sequence[Sequence[str]] = (),
    ) -> None:
        self._services = tuple(services)
        self._processes = dict(processes or {})
        self._jobs = [list(job) for job in jobs]
        self._running_jobs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._env = dict(os.environ if env is None else env)
        self._grace_s = grace_s
        self._children: list[Child] = []
        self._stopping = False

    def run(self) -> int:
        """Run until a signal (exit 0) or until a server dies (exit 1)."""
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            for service in self._services:
                for index in range(self._processes.get(service, 1)):
                    self._children.append(Child(service, self._spawn(service, index)))
            _log.info("started", servers=[c.service.value for c in self._children])
            for job in self._jobs:
                command = [sys.executable, "-m", "cascade_server", *job]
                self._running_jobs.append((" ".join(job), subprocess.Popen(command, env=self._env)))
            while not self._stopping:
                self._reap_jobs()
                for child in self._children:
                    code = child.process.poll()
                    if code is not None:
                        _log.error(
                            "a server exited; stopping the others",
                            service=child.service.value,
                            exit_code=code,
                        )
                        self._stop_all()
                        return 1
                time.sleep(0.2)
            self._stop_all()
            return 0
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _reap_jobs(self) -> None:
        for name, process in list(self._running_jobs):
            code = process.poll()
            if code is None:
                continue
            self._running_jobs.remove((name, process))
            if code == 0:
                _log.info("job finished", job=name)
            else:
                _log.error("job failed; the servers keep running", job=name, exit_code=code)

    def _spawn(self, service: ServiceName, index: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "cascade_server", "serve", service.value],
            env={**self._env, "CASCADE_PROCESS_INDEX": str(index)},
            # Own process group: a terminal's Ctrl-C reaches the supervisor only, and the
            # supervisor decides the shutdown order.
            start_new_session=True,
        )

    def _on_signal(self, signum: int, frame: object) -> None:
        _log.info("signal received; stopping the servers", signal=signal.Signals(signum).name)
        self._stopping = True

    def _stop_all(self) -> None:
        for _, job in self._running_jobs:
            if job.poll() is None:
                job.send_signal(signal.SIGTERM)
        for child in reversed(self._children):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._grace_s + 5.0
        for child in self._children:
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _log.warning("server did not stop in time; killing it", service=child.service.value)
                child.process.kill()
                child.process.wait()
        _log.info("all servers stopped")
