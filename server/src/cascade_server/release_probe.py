"""Check a release in a child process before a server loads it itself.

Annoy and LightGBM are native libraries: a damaged file could crash them, and a crash
in a server takes every request with it. Hashing the gigabytes a server reads from a
million-item release takes seconds of CPU. A server therefore first runs::

    python -m cascade_server.release_probe RELEASE_DIR COMPONENT [ARTIFACT ...]

which checks the SHA-256 of the named artifacts against the manifest, then loads what
``COMPONENT`` would hand to a native library and uses it once (retrieval: its models
with the Annoy index, as the server loads them; ranking: the LightGBM model; blending
hands nothing to one). Exit 0: it works; exit 1: it does not (the reason is the last
line of stderr); killed by a signal: it crashed the library. Only exit 0 lets the
server load the release (and validate the rest itself).

The child runs at a lower CPU priority (``priority.lower_priority``), in a process of
its own: it checks a release while the servers answer requests on the same cores, and
neither its hashing nor its loading takes a server's GIL.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Collection
from pathlib import Path

import numpy as np

from cascade_server.artifacts.manifest import CorruptReleaseError, read_verified
from cascade_server.priority import lower_priority

PROBED = ("retrieval", "ranking")
"""The components whose models go through native libraries."""


def _check_retrieval(path: Path) -> None:
    """Annoy: load the retrieval models as the server would (the index the release
    searches with, checked against the item list and searched once by the warm-up)."""
    from cascade_server.artifacts.manifest import read_manifest
    from cascade_server.retrieval.models import RetrievalModels

    RetrievalModels(path, read_manifest(path))


def _check_ranker(path: Path) -> None:
    """LightGBM: load the light ranker and score one row."""
    import lightgbm as lgb

    from cascade_server.ranking.models import LIGHT_RANKER_FILE

    booster = lgb.Booster(model_file=str(path / LIGHT_RANKER_FILE))
    booster.predict(np.zeros((1, booster.num_feature())))


_CHECKS: dict[str, Callable[[Path], None]] = {
    "retrieval": _check_retrieval,
    "ranking": _check_ranker,
}


def probe(
    path: Path, component: str, hashed: Collection[str] = (), timeout_s: float = 600.0
) -> None:
    """Check the ``hashed`` artifacts of the release at ``path`` and load it as
    ``component`` would, in a child process; raise CorruptReleaseError saying why when
    the child fails or crashes."""
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "cascade_server.release_probe",
                str(path),
                component,
                *sorted(hashed),
            ],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as error:
        raise CorruptReleaseError(
            f"loading the release in a child process took over {timeout_s:g} s"
        ) from error
    if done.returncode == 0:
        return
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        raise CorruptReleaseError(f"loading the release crashed a child process ({name})")
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    raise CorruptReleaseError(
        f"the release failed its check in a child process: {lines[-1] if lines else 'no reason'}"
    )


def main(argv: list[str]) -> int:
    """Check the checksums of artifacts ``argv[2:]`` of release ``argv[0]``, then the
    native parts component ``argv[1]`` loads; exit 1 with the reason."""
    path, component, hashed = Path(argv[0]), argv[1], argv[2:]
    lower_priority()
    try:
        if hashed:
            read_verified(path, hashed)
        check = _CHECKS.get(component)
        if check is not None:
            check(path)
    except Exception as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
