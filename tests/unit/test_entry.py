"""The `cascade` entry point: every command but the serving ones runs at a lower CPU
priority, set before the command line is imported."""

import os
import subprocess
import sys

import pytest

from cascade_server.entry import command_name
from cascade_server.priority import BACKGROUND_NICENESS

# Runs the entry point in a fresh interpreter with the given arguments, then prints the
# process's niceness as the command left it.
RUN = """
import os, sys
from cascade_server.entry import main
sys.argv = ["cascade", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print("niceness", os.nice(0))
"""


def niceness_after(*args: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", RUN, *args], capture_output=True, text=True, check=True
    )
    return int(done.stdout.rsplit("niceness", 1)[1])


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["serve", "all"], "serve"),
        (["--help"], ""),
        ([], ""),
        (["release", "activate", "r1"], "release"),
        (["--install-completion", "demo"], "demo"),
    ],
)
def test_the_command_is_the_first_argument_that_is_not_an_option(argv, name):
    assert command_name(argv) == name


def test_batch_commands_run_below_the_servers_priority():
    base = os.nice(0)
    assert niceness_after("release", "--help") == min(base + BACKGROUND_NICENESS, 19)
    assert niceness_after("serve", "--help") == base
