"""Commands that build and ship models: `train`, `build-index`, `release`, `evaluate`."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.table import Table

from cascade_server.artifacts.registry import ReleaseRegistry
from cascade_server.blending.policy import BlendingPolicies
from cascade_server.cli.common import console, load_settings, migrated_engine, progress_bars
from cascade_server.offline.evaluate import (
    CatalogRecall,
    Metrics,
    RankingCase,
    agreement,
    evaluate,
    read_ncf_cases,
    stage_metrics,
)
from cascade_server.offline.index import IndexConfig
from cascade_server.offline.ranker import RankerConfig, RankerReport
from cascade_server.offline.train import build_item_index, publish, train_ranker, train_retrieval
from cascade_server.offline.two_tower import TwoTowerConfig
from cascade_server.rpc.bindings import signal_config
from cascade_server.settings import RankingMode, ServiceName, Settings

train_app = typer.Typer(help="Train models into the current build.", no_args_is_help=True)
release_app = typer.Typer(
    help="Publish, list, activate and roll back releases.", no_args_is_help=True
)

BuildDir = Annotated[
    Path | None,
    typer.Option(help="The build directory; default: CASCADE_HOME/build.", show_default=False),
]


def _build_dir(settings: Settings, build_dir: Path | None) -> Path:
    return build_dir or settings.home / "build"


def configured_policies(settings: Settings) -> BlendingPolicies:
    """The policy file releases are published with: CASCADE_POLICY_FILE, or the default."""
    if settings.policy_file is None:
        return BlendingPolicies.default()
    return BlendingPolicies.load(settings.policy_file)


def _registry(settings: Settings, engine: sa.Engine) -> ReleaseRegistry:
    return ReleaseRegistry(engine, settings.home / "releases")


@train_app.command("retrieval")
def train_retrieval_command(
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training pairs.")] = 3,
    dim: Annotated[int, typer.Option(min=8, help="Embedding dimensions.")] = 64,
    build_dir: BuildDir = None,
) -> None:
    """Start a build: train the two-tower model on the engagement data in the database.

    Exports a SavedModel with `query` and `candidate` signatures and every item's
    embedding; `cascade build-index` then indexes them.
    """
    settings = load_settings()
    config = TwoTowerConfig(epochs=epochs, embedding_dim=dim)
    with migrated_engine(settings) as engine, progress_bars() as progress:
        build = train_retrieval(engine, _build_dir(settings, build_dir), config, progress)
    console.print(f"two-tower model trained into {build.path}")


@train_app.command("ranker")
def train_ranker_command(
    negatives: Annotated[
        int, typer.Option(min=1, help="Sampled negatives per training group.")
    ] = 49,
    build_dir: BuildDir = None,
) -> None:
    """Add the ranking features and the LightGBM LambdaRank light ranker to the build.

    Base models (iALS, EASE, item-kNN, RP3beta, popularity, category affinity) are fitted
    on the data minus one held-out item per user; the ranker learns to rank each held-out
    item among sampled unseen items; the base models are then refitted on all data.
    """
    settings = load_settings()
    config = RankerConfig(negatives=negatives)
    with migrated_engine(settings) as engine, progress_bars() as progress:
        report = train_ranker(engine, _build_dir(settings, build_dir), config, progress)
    _print_ranker_report(report)


@train_app.command("all")
def train_all_command(
    epochs: Annotated[int, typer.Option(min=1, help="Two-tower passes over the data.")] = 3,
    negatives: Annotated[
        int, typer.Option(min=1, help="Sampled negatives per ranker training group.")
    ] = 49,
    publish_release: Annotated[
        bool, typer.Option("--publish/--no-publish", help="Publish the build when done.")
    ] = True,
    build_dir: BuildDir = None,
) -> None:
    """Train everything on the data in the database and publish it as one release.

    Two-tower model → Annoy and clustered indexes (recall measured) → base models,
    LightGBM light ranker and TensorFlow heavy ranker (validated on held-out items) →
    publish and activate.
    Running servers swap the new release in without dropping a request.
    """
    settings = load_settings()
    path = _build_dir(settings, build_dir)
    policies = configured_policies(settings)  # a broken policy file fails before training
    with migrated_engine(settings) as engine:
        with progress_bars() as progress:
            train_retrieval(engine, path, TwoTowerConfig(epochs=epochs), progress)
            index = build_item_index(engine, path, IndexConfig())
            ranker = train_ranker(engine, path, RankerConfig(negatives=negatives), progress)
        console.print(
            f"index: {index.items:,} items; Annoy at search_k {index.search_k:,}: "
            f"{index.recall_at_k}, {index.annoy_ms:.2f} ms; {index.clusters:,} clusters at "
            f"{index.probes} probes: {index.clustered_recall_at_k}, {index.clustered_ms:.2f} ms; "
            f"exact {index.exact_ms:.2f} ms per 500-item query; serves by {index.search} search"
        )
        _print_ranker_report(ranker)
        if publish_release:
            manifest = publish(path, _registry(settings, engine), policies)
            console.print(f"published and activated release {manifest.release_id}")


def build_index_command(
    trees: Annotated[int, typer.Option(min=1, help="Annoy trees (more: better recall).")] = 50,
    search_k: Annotated[
        int,
        typer.Option(
            min=0,
            help="Nodes searched per query; 0: the smallest of trees x 500 x (1, 2, 4, 8, 16) "
            "whose recall@500 against exact search reaches --target-recall.",
        ),
    ] = 0,
    target_recall: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="The recall@500 a tuned search_k must reach.")
    ] = 0.95,
    clusters: Annotated[
        int,
        typer.Option(
            min=0,
            help="Clusters of the clustered index; 0: about 4 x sqrt(items), a power of two.",
        ),
    ] = 0,
    probes: Annotated[
        int,
        typer.Option(
            min=0,
            help="Clusters searched per query; 0: the fewest whose recall@500 against exact "
            "search reaches --target-recall.",
        ),
    ] = 0,
    search: Annotated[
        str,
        typer.Option(
            help="How servers search: annoy, clustered (the items of the clusters nearest the "
            "query, scored exactly), exact (numpy over every item), or auto: the fastest of "
            "those reaching --target-recall at the build."
        ),
    ] = "auto",
    jobs: Annotated[
        int,
        typer.Option(
            min=1,
            help="Threads building trees; 1 (the default) builds the same index every time.",
        ),
    ] = 1,
    build_dir: BuildDir = None,
) -> None:
    """Index the build's item embeddings with Annoy and a clustered index; report each one's
    recall@K against exact search and its time per query, and choose how servers search."""
    settings = load_settings()
    with migrated_engine(settings) as engine:
        report = build_item_index(
            engine,
            _build_dir(settings, build_dir),
            IndexConfig(
                n_trees=trees,
                search_k=search_k,
                target_recall=target_recall,
                search=search,
                clusters=clusters,
                probes=probes,
                jobs=jobs,
            ),
        )
    table = Table("index", "value")
    table.add_row("items", f"{report.items:,}")
    table.add_row("trees", str(report.n_trees))
    table.add_row("search_k", f"{report.search_k:,}")
    table.add_row("clusters / probes", f"{report.clusters:,} / {report.probes:,}")
    table.add_row("serves by", f"{report.search} search")
    table.add_row(
        "Annoy / clustered / exact ms",
        f"{report.annoy_ms:.2f} / {report.clustered_ms:.2f} / {report.exact_ms:.2f}",
    )
    for name, value in report.recall_at_k.items():
        table.add_row(f"Annoy {name}", f"{value:.4f}")
    for name, value in report.clustered_recall_at_k.items():
        table.add_row(f"clustered {name}", f"{value:.4f}")
    table.add_row("seconds", f"{report.build_seconds:.1f}")
    Console().print(table)


def _print_ranker_report(report: RankerReport) -> None:
    table = Table("validation (held-out item among sampled negatives)", "HR@10", "NDCG@10")
    for name, metrics in report.validation.items():
        table.add_row(name, f"{metrics['hr@10']:.4f}", f"{metrics['ndcg@10']:.4f}")
    Console().print(table)
    if report.heavy is not None:
        console.print(f"heavy ranker heads: {', '.join(report.heavy.heads)}")
    console.print(
        f"{report.groups:,} training groups, {report.validation_groups:,} validation groups, "
        f"{report.rounds} rounds, {report.seconds:.0f} s"
    )


@release_app.command("publish")
def release_publish(build_dir: BuildDir = None) -> None:
    """Publish the build as a release and make it active (servers swap it in). The release
    carries the blending policy of CASCADE_POLICY_FILE (default: Cascade's own)."""
    settings = load_settings()
    policies = configured_policies(settings)
    with migrated_engine(settings) as engine:
        manifest = publish(_build_dir(settings, build_dir), _registry(settings, engine), policies)
    console.print(f"published and activated release {manifest.release_id}")


@release_app.command("list")
def release_list() -> None:
    """Every release, newest first, with its status, offline metrics, and the servers'
    refusals to load it (a damaged release keeps the previous one serving)."""
    settings = load_settings()
    with migrated_engine(settings) as engine:
        rows = _registry(settings, engine).list()
    table = Table("release", "status", "created", "activated", "metrics", "rejected by")
    for row in rows:
        table.add_row(
            row.release_id,
            row.status,
            f"{row.created_at:%Y-%m-%d %H:%M:%S}",
            f"{row.activated_at:%Y-%m-%d %H:%M:%S}" if row.activated_at else "",
            ", ".join(f"{k}" for k in row.metrics),
            "\n".join(row.rejections),
        )
    Console().print(table)


@release_app.command("activate")
def release_activate(
    release_id: Annotated[str, typer.Argument(help="The release to serve.")],
) -> None:
    """Make a published release active again, after checking its files."""
    settings = load_settings()
    with migrated_engine(settings) as engine:
        _registry(settings, engine).activate(release_id)
    console.print(f"release {release_id} is active")


@release_app.command("rollback")
def release_rollback() -> None:
    """Re-activate the release that was active before the current one."""
    settings = load_settings()
    with migrated_engine(settings) as engine:
        manifest = _registry(settings, engine).rollback()
    console.print(f"rolled back to release {manifest.release_id}")


def evaluate_command(
    test_rating: Annotated[
        Path, typer.Option(help="NCF test file: `user<TAB>item[...]`, one held-out item per user.")
    ],
    test_negative: Annotated[
        Path, typer.Option(help="NCF negatives file: `(user,item)<TAB>neg1<TAB>...`, same order.")
    ],
    served: Annotated[
        bool,
        typer.Option(
            "--served/--offline-only",
            help="Also rank every case through the running ranking server and compare.",
        ),
    ] = True,
    target: Annotated[
        str | None,
        typer.Option(help="Ranking server host:port; default: CASCADE_RANKING_TARGET / port."),
    ] = None,
    limit: Annotated[
        int, typer.Option(min=0, help="Evaluate only the first N users (0: all).")
    ] = 0,
    recommend_users: Annotated[
        int,
        typer.Option(
            min=0,
            help="Also rank the whole catalog for this many test users through the running "
            "front door (Recommend, 100 items) and report recall@K/NDCG@K; 0: skip.",
        ),
    ] = 0,
    blending_target: Annotated[
        str | None,
        typer.Option(
            help="Front door host:port for --recommend-users and --blended; default: settings."
        ),
    ] = None,
    blended: Annotated[
        bool,
        typer.Option(
            "--blended/--not-blended",
            help="Also pass every served ranking through the front door's BlendCandidates "
            "with the home-feed policy of the active release, and score the page it returns.",
        ),
    ] = False,
) -> None:
    """HR@10 and NDCG@10 of the active release on an NCF leave-one-out test split.

    Each user's held-out item is ranked among its candidates (the item and its sampled
    negatives, de-duplicated) offline, in this process, by every stage of the active
    release alone and stacked (TopPop, two-tower, light, heavy, light+heavy), and —
    unless `--offline-only` — by the running ranking server through its gRPC API. The
    served ranks are compared user by user with the offline ranks of the serving mode
    (`CASCADE_RANKING_MODE`): both come from the same code, so any difference is a bug.
    """
    settings = load_settings()
    cases = read_ncf_cases(test_rating, test_negative)
    if limit:
        cases = cases[:limit]
    mode_row = {
        RankingMode.LIGHT_HEAVY: "light+heavy",
        RankingMode.LIGHT: "light",
        RankingMode.HEAVY: "heavy",
    }
    with migrated_engine(settings) as engine, progress_bars() as progress:
        rows, serving_mode = stage_metrics(
            engine,
            settings.home / "releases",
            cases,
            signal_config(settings),
            mode=settings.ranking_mode,
            heavy_top_n=settings.heavy_top_n,
            on_progress=progress,
        )
        ranking_target = target or settings.target(ServiceName.RANKING)
        front = blending_target or settings.target(ServiceName.BLENDING)
        served_metrics = _evaluate_served(cases, ranking_target, progress) if served else None
        blended_metrics = (
            _evaluate_served(cases, ranking_target, progress, blending_target=front)
            if blended
            else None
        )
    served_row = mode_row[serving_mode]
    table = Table(f"NCF protocol, {len(cases):,} users", "HR@10", "NDCG@10")
    for name, metrics in rows.items():
        label = f"{name} (offline){' — serving mode' if name == served_row else ''}"
        table.add_row(label, f"{metrics.hit_rate:.4f}", f"{metrics.ndcg:.4f}")
    if served_metrics is not None:
        table.add_row(
            f"{served_row} (served, gRPC RankCandidates)",
            f"{served_metrics.hit_rate:.4f}",
            f"{served_metrics.ndcg:.4f}",
        )
        same = agreement(served_metrics, rows[served_row])
        table.add_row("same rank served vs offline", f"{same:.2%}", "")
    if blended_metrics is not None:
        table.add_row(
            f"{served_row} → BlendCandidates, home-feed policy (served)",
            f"{blended_metrics.hit_rate:.4f}",
            f"{blended_metrics.ndcg:.4f}",
        )
    Console().print(table)
    if recommend_users:
        recall = _catalog_recall(cases[:recommend_users], front)
        catalog = Table(
            f"full catalog through Recommend (page of 100), {recall.cases:,} users",
            "K",
            "recall@K",
            "NDCG@K",
        )
        values = recall.summary()
        for k in recall.ks:
            catalog.add_row(str(k), f"{values[f'recall@{k}']:.4f}", f"{values[f'ndcg@{k}']:.4f}")
        Console().print(catalog)


def _catalog_recall(cases: list[RankingCase], target: str) -> CatalogRecall:
    from cascade.blending.v1 import blending_service_pb2
    from cascade_client import BlendingClient

    recall = CatalogRecall()
    with BlendingClient(target) as client:
        for case in cases:
            page = client.recommend(
                blending_service_pb2.RecommendRequest(user_id=case.user_id, page_size=100),
                timeout=10.0,
            )
            recall.add([item.item_id for item in page.items], case.positive)
    return recall


def _evaluate_served(
    cases: list[RankingCase],
    target: str,
    progress: Callable[[str, float], None],
    *,
    blending_target: str | None = None,
) -> Metrics:
    """Rank every case through RankCandidates; with ``blending_target``, then blend the
    ranking through BlendCandidates (home-feed policy) and score the page."""
    from cascade.blending.v1 import blending_service_pb2
    from cascade.common.v1 import context_pb2
    from cascade.ranking.v1 import ranking_service_pb2
    from cascade_client import BlendingClient, RankingClient

    step = "blended" if blending_target else "served"
    with ExitStack() as stack:
        client = stack.enter_context(RankingClient(target))
        front = stack.enter_context(BlendingClient(blending_target)) if blending_target else None

        def rank(case: RankingCase) -> list[str]:
            context = context_pb2.RequestContext(
                user_id=case.user_id, surface=context_pb2.SURFACE_HOME_FEED
            )
            response = client.rank_candidates(
                ranking_service_pb2.RankCandidatesRequest(
                    context=context, item_ids=case.candidates
                ),
                timeout=10.0,
            )
            if front is None:
                return [c.item_id for c in response.candidates]
            page = front.blend_candidates(
                blending_service_pb2.BlendCandidatesRequest(
                    context=context, candidates=response.candidates, page_size=100
                ),
                timeout=10.0,
            )
            return [item.item_id for item in page.items]

        metrics, _ = evaluate(cases, rank, on_case=lambda n: progress(step, n / len(cases)))
    return metrics
