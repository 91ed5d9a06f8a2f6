"""Quality benchmark: import an NCF split, train everything, serve, and score through the API.

    .venv/bin/python bench/quality.py                      # ML-1M from ../shared/datasets
    .venv/bin/python bench/quality.py --train T --test-rating R --test-negative N

Runs the whole pipeline a user runs, on a fresh database (an embedded Postgres in a
temporary CASCADE_HOME, or a new database on --database-url's server): `cascade db
upgrade`, `cascade import --format ncf`, `cascade train all`, then `cascade serve
all` on free ports, and scores every test user's candidates through
RankingService/RankCandidates, next to each stage's offline numbers (TopPop,
two-tower, light ranker, heavy ranker, light+heavy), plus full-catalog recall@K of
the held-out items through BlendingService/Recommend for --recommend-users users.
Writes JSON and Markdown to bench/results/ and prints the Markdown table. Any
NCF-format split works unchanged.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline import (
    CASCADE,
    drop_database,
    fresh_database,
    machine,
    serving_env,
    step,
    wait_serving,
    write_report,
)

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "datasets" / "ml-1m"
PUBLISHED = {  # ../shared/datasets/README.md, NCF split of ML-1M, HR@10 / NDCG@10
    "TopPop": (0.4531, 0.2542),
    "NeuMF (He et al. 2017)": (0.730, 0.447),
    "iALS (irspack re-run)": (0.7310, 0.4521),
}


def main() -> int:
    args = _arguments()
    for path in (args.train, args.test_rating, args.test_negative):
        if not path.exists():
            print(
                f"{path} does not exist; pass --train/--test-rating/--test-negative",
                file=sys.stderr,
            )
            return 2
    home = Path(tempfile.mkdtemp(prefix="cascade-quality-"))
    env = {
        **os.environ,
        "CASCADE_HOME": str(home),
        "CASCADE_LOG_LEVEL": "WARNING",
        "COLUMNS": "200",
    }
    database = fresh_database(args.database_url) if args.database_url else None
    if database:
        env["CASCADE_DATABASE_URL"] = database
    timings: dict[str, float] = {}
    started = time.perf_counter()
    try:
        step(timings, "db upgrade", env, "db", "upgrade")
        step(timings, "import", env, "import", "--format", "ncf", str(args.train))
        step(timings, "train all", env, "train", "all")
        server_env, ports = serving_env(env, home, database)
        seconds, results = _serve_and_evaluate(server_env, ports, args)
        timings["evaluate"] = seconds
        timings["total"] = time.perf_counter() - started
    finally:
        if database:
            drop_database(database)
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "train": str(args.train),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "results": results,
    }
    _write(report, args.out)
    return 0


def _serve_and_evaluate(
    env: dict[str, str], ports: dict[str, int], args: argparse.Namespace
) -> tuple[float, dict[str, dict[str, float | str]]]:
    server = subprocess.Popen([*CASCADE, "serve", "all"], env=env, stderr=subprocess.DEVNULL)
    try:
        for port in ports.values():
            wait_serving(f"127.0.0.1:{port}")
        started = time.perf_counter()
        result = subprocess.run(
            [
                *CASCADE, "evaluate",
                "--test-rating", str(args.test_rating),
                "--test-negative", str(args.test_negative),
                "--target", f"127.0.0.1:{ports['RANKING']}",
                "--blending-target", f"127.0.0.1:{ports['BLENDING']}", "--blended",
                "--recommend-users", str(args.recommend_users),
            ],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        print(result.stdout)
        return time.perf_counter() - started, _parse_table(result.stdout)
    finally:
        server.terminate()
        server.wait(60)


def _parse_table(text: str) -> dict[str, dict[str, float | str]]:
    rows: dict[str, dict[str, float | str]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 4 and cells[0].isdigit():
            rows[f"Recommend, full catalog, K={cells[0]}"] = {
                "recall@K": float(cells[1]),
                "ndcg@K": float(cells[2]),
            }
        elif len(cells) == 3 and re.fullmatch(r"[\d.]+%?", cells[1] or "x"):
            if cells[1].endswith("%"):
                rows[cells[0]] = {"agreement": cells[1]}
            else:
                rows[cells[0]] = {"hr@10": float(cells[1]), "ndcg@10": float(cells[2])}
    return rows


def _write(report: dict[str, Any], out: Path) -> None:
    lines = [
        f"# Quality on {report['train']}",
        "",
        f"{report['date']} — {report['machine']}",
        "",
        "| ranking | HR@10 | NDCG@10 |",
        "|---|---|---|",
    ]
    results = report["results"]
    assert isinstance(results, dict)
    for name, metrics in results.items():
        if "hr@10" in metrics:
            lines.append(f"| {name} | {metrics['hr@10']:.4f} | {metrics['ndcg@10']:.4f} |")
        elif "agreement" in metrics:
            lines.append(f"| {name} | {metrics['agreement']} | |")
    for name, (hr, ndcg) in PUBLISHED.items():
        lines.append(f"| published: {name} | {hr:.4f} | {ndcg:.4f} |")
    catalog = {k: v for k, v in results.items() if "recall@K" in v}
    if catalog:
        lines += [
            "",
            "| held-out item in the Recommend page | recall@K | NDCG@K |",
            "|---|---|---|",
        ]
        for name, metrics in catalog.items():
            lines.append(f"| {name} | {metrics['recall@K']:.4f} | {metrics['ndcg@K']:.4f} |")
    write_report(out, "quality", report, lines)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", type=Path, default=SHARED / "ml-1m.train.pairs.gz")
    parser.add_argument("--test-rating", type=Path, default=SHARED / "ml-1m.test.rating")
    parser.add_argument("--test-negative", type=Path, default=SHARED / "ml-1m.test.negative")
    parser.add_argument(
        "--database-url",
        help="A Postgres server to create a fresh database on (default: embedded Postgres).",
    )
    parser.add_argument(
        "--recommend-users",
        type=int,
        default=1000,
        help="Users whose full-catalog Recommend pages are scored (0: skip).",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())
