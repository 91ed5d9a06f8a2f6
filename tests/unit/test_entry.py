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


# Builds the command line for the given command and prints which of the command
# modules (and the training code, and LightGBM) were imported.
MODULES = """
import sys
from cascade_server.cli import COMMANDS, build_app
app = build_app(sys.argv[1])
names = {f"cascade_server.cli.{m}" for m, _, _ in COMMANDS.values()}
names |= {"cascade_server.offline.train", "lightgbm"}
print(" ".join(sorted(n.rsplit(".", 1)[-1] for n in names if n in sys.modules)))
"""


def imported_for(command: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", MODULES, command], capture_output=True, text=True, check=True
    )
    return set(done.stdout.split())


def test_a_command_imports_only_its_own_module():
    assert imported_for("policy") == {"policy"}
    assert imported_for("doctor") == {"doctor"}
    everything = imported_for("")  # `cascade --help` lists every command
    assert {
        "serving",
        "data",
        "models",
        "policy",
        "auth",
        "doctor",
        "train",
        "lightgbm",
    } <= everything


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["policy", "--help"], ["check", "publish"]),
        (["policy", "publish", "--help"], ["--verify"]),
        (["doctor", "--help"], ["Check settings"]),
        (["--help"], ["serve", "train", "policy", "doctor"]),
    ],
)
def test_help_works_for_a_command_built_alone(args, shown):
    done = subprocess.run(
        [sys.executable, "-m", "cascade_server", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr
    for text in shown:
        assert text in done.stdout
