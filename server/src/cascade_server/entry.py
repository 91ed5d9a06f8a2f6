"""The ``cascade`` command's entry point.

Every command except those that serve runs at a lower CPU priority
(``priority.lower_priority``), set before the command line's modules are imported (the
imports alone take seconds of CPU), so that activating a release or training on a
machine that serves does not take the CPU from the servers.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from cascade_server.priority import lower_priority

SERVING_COMMANDS = frozenset({"serve", "demo"})
"""Commands that run servers: they keep the normal priority."""


def command_name(argv: Sequence[str]) -> str:
    """The command ``argv`` (the arguments after the program's name) runs; "" for none."""
    return next((arg for arg in argv if not arg.startswith("-")), "")


def main() -> None:
    """Run the ``cascade`` command line."""
    command = command_name(sys.argv[1:])
    if command not in SERVING_COMMANDS:
        lower_priority()
    from cascade_server.cli import main as run

    run(command)
