"""How each stage is assembled from settings: its components, its servicer, its data."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, TypeVar

import grpc
import sqlalchemy as sa

from cascade.blending.v1 import blending_service_pb2_grpc
from cascade.catalog.v1 import catalog_service_pb2_grpc
from cascade.ranking.v1 import ranking_service_pb2_grpc
from cascade.retrieval.v1 import retrieval_service_pb2_grpc
from cascade_client import AsyncRankingClient, AsyncRetrievalClient, ChannelOption
from cascade_server.artifacts.load_turns import load_turn
from cascade_server.artifacts.manifest import Manifest, read_manifest, read_verified
from cascade_server.artifacts.registry import ReleaseRegistry
from cascade_server.artifacts.watcher import ReleaseWatcher
from cascade_server.blending.circuit import BreakerConfig
from cascade_server.blending.policy import BlendingPolicies
from cascade_server.blending.recommend import Recommender, RecommendLimits
from cascade_server.blending.release import (
    BLENDING_ARTIFACTS,
    BlendingRelease,
    BlendingReleaseLoader,
)
from cascade_server.blending.stage import BlendingStage
from cascade_server.catalog.repository import CatalogRepository
from cascade_server.catalog.service import CatalogService
from cascade_server.errors import NotReadyError
from cascade_server.features.engagement import EngagementSnapshot, SignalConfig
from cascade_server.features.refresh import SnapshotHolder, SnapshotSource
from cascade_server.features.snapshot_file import SnapshotFile
from cascade_server.logs import get_logger
from cascade_server.pipeline.types import SourceKind
from cascade_server.priority import quick_lock_handoffs
from cascade_server.ranking.models import RANKING_ARTIFACTS, LearnedRanker
from cascade_server.ranking.scorers import BaselineScorer
from cascade_server.ranking.stage import RankingStage
from cascade_server.release_probe import probe
from cascade_server.retrieval.fresh import FreshItemIndex
from cascade_server.retrieval.models import RetrievalModels, retrieval_artifacts
from cascade_server.retrieval.sources import (
    CategoryPopularCandidateSource,
    CoEngagementCandidateSource,
    PopularCandidateSource,
    RandomWalkCandidateSource,
    TrendingCandidateSource,
)
from cascade_server.retrieval.stage import RetrievalStage
from cascade_server.rpc import (
    blending_servicer,
    catalog_servicer,
    ranking_servicer,
    retrieval_servicer,
)
from cascade_server.rpc.app import Background, Binding
from cascade_server.rpc.downstream import GrpcRankingBackend, GrpcRetrievalBackend
from cascade_server.rpc.executor import BlockingRunner
from cascade_server.security import read_tls
from cascade_server.settings import ServiceName, Settings
from cascade_server.storage.engagement_reader import (
    read_engagement,
    read_fingerprint,
    read_item_status_changes,
    read_recent_seen_events,
)

T = TypeVar("T")
_log = get_logger(__name__)


def signal_config(settings: Settings) -> SignalConfig:
    """The engagement-signal knobs from the settings."""
    return SignalConfig(
        popularity_half_life_days=settings.popularity_half_life_days,
        history_length=settings.history_length,
        neighbours_per_item=settings.neighbours_per_item,
        trending_half_life_hours=settings.trending_half_life_hours,
        seen_ttl_hours=settings.seen_ttl_hours,
        seen_max_items=settings.seen_max_items,
    )


def snapshot_holder(settings: Settings, engine: sa.Engine) -> SnapshotHolder:
    """A snapshot holder reading ``engine`` with the settings' signal knobs (and keeping
    its snapshot in a file of this database's, when the settings say so)."""
    config = signal_config(settings)
    database = hashlib.sha256(engine.url.render_as_string(hide_password=True).encode())
    return SnapshotHolder(
        read_data=lambda: read_engagement(engine),
        read_fingerprint=lambda: read_fingerprint(engine),
        config=config,
        read_status_changes=lambda since: read_item_status_changes(engine, since),
        read_seen_events=lambda after: read_recent_seen_events(engine, after),
        snapshot_file=SnapshotFile(
            settings.home / "snapshots" / f"{database.hexdigest()[:16]}.npz", config
        )
        if settings.snapshot_file
        else None,
    )


def keep_snapshot(settings: Settings, holder: SnapshotHolder) -> Background:
    """The background task that keeps ``holder`` current."""
    return lambda stop, ready: holder.keep_fresh(
        settings.snapshot_refresh_seconds, ready, stop, settings.status_refresh_seconds
    )


def keep_release(settings: Settings, watcher: ReleaseWatcher[Any]) -> Background:
    """The background task that follows the active release."""
    return lambda stop, ready: watcher.keep_fresh(settings.release_poll_seconds, stop, ready)


def serving_state(holder: SnapshotSource, models: ReleaseWatcher[Any]) -> Callable[[], object]:
    """What a stage's caches depend on: the snapshot and the release it serves."""
    return lambda: (holder.current().snapshot_id, models.current().release_id)


def keep_warm(
    key: Callable[[], object], warm: Callable[[], None], interval_s: float = 0.5
) -> Background:
    """Re-warm a stage's caches soon after its snapshot or release changes (``key``), so
    no request pays for rebuilding them. Never holds up SERVING (the server warms up
    once itself before that)."""

    async def run(stop: asyncio.Event, ready: Callable[[], None]) -> None:
        ready()
        last: object = None
        while not stop.is_set():
            try:
                current = key()
                if last is None:
                    last = current  # the server's own warm-up covers the first state
                elif current != last:
                    await asyncio.to_thread(warm)
                    last = current
            except NotReadyError:
                pass  # no snapshot yet
            except Exception:
                _log.exception("warm-up failed; requests will fill the caches")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)

    return run


def release_watcher(
    settings: Settings,
    engine: sa.Engine,
    load: Callable[[Path, Manifest], T],
    name: str,
    artifacts: Collection[str] | Callable[[Manifest], Collection[str]],
) -> ReleaseWatcher[T | None]:
    """Follows the active release in Postgres, loading it from ``HOME/releases`` with
    ``load`` after checking it (every artifact's size; the SHA-256 of the ``artifacts``
    this server reads, or of those ``artifacts(manifest)`` names, and the native loads,
    in a child process by default: ``release_probe``). A release whose
    ``artifacts`` match the serving one's (by their manifest checksums), with the same
    config and metrics, is served with what is loaded already (after checking that every
    artifact is there with its recorded size)."""
    registry = ReleaseRegistry(engine, settings.home / "releases")

    def read(manifest: Manifest) -> Collection[str]:
        return artifacts(manifest) if callable(artifacts) else artifacts

    def inputs(release_id: str) -> str:
        # Every artifact must be there with its size even when nothing is loaded again.
        manifest = read_verified(registry.path_of(release_id), hashed=())
        return manifest.inputs(read(manifest))

    def load_release(release_id: str) -> T:
        path = registry.path_of(release_id)
        if not settings.release_check_in_child:
            manifest = read_verified(path, read(read_manifest(path)))
        else:
            # The checksums too are checked in the child, at background priority: hashing
            # a million items' release took this server's cores from its requests for seconds.
            manifest = read_verified(path, hashed=())
            probe(path, name, read(manifest))
        with quick_lock_handoffs(settings.release_load_switch_interval_ms / 1000):
            return load(path, manifest)

    return ReleaseWatcher(
        read_active=registry.active,
        load=load_release,
        baseline=None,
        name=name,
        on_reject=lambda release_id, reason: registry.record_rejection(release_id, name, reason),
        inputs=inputs,
        replace_turn=(
            (lambda: load_turn(registry.root, name)) if settings.release_loads_in_turn else None
        ),
    )


def prepared(
    load: Callable[[Path, Manifest], T],
    prepare: Callable[[T, EngagementSnapshot], object],
    holder: SnapshotSource,
) -> Callable[[Path, Manifest], T]:
    """``load``, then ``prepare`` what it loaded for the snapshot being served (its maps
    to the live items) before the watcher swaps it in, so the requests right after a swap
    find the maps built (each takes tens of ms at a million items, and they all waited
    for it). Before the first snapshot there is nothing to prepare: the warm-up does it."""

    def load_prepared(path: Path, manifest: Manifest) -> T:
        value = load(path, manifest)
        with contextlib.suppress(NotReadyError):
            prepare(value, holder.current())
        return value

    return load_prepared


def _prepare_vectors(release: BlendingRelease, snapshot: EngagementSnapshot) -> None:
    if release.vectors is not None:
        release.vectors.prepare(snapshot)


def retrieval(settings: Settings, engine: sa.Engine, runner: BlockingRunner) -> Binding:
    """RetrievalService: the release's Annoy source (when published), co-engagement, random
    walks, the user's categories, trending, popular and fresh items."""
    holder = snapshot_holder(settings, engine)
    models = release_watcher(
        settings,
        engine,
        prepared(RetrievalModels, RetrievalModels.prepare, holder),
        "retrieval",
        retrieval_artifacts,
    )
    stage = RetrievalStage(
        holder,
        [
            CoEngagementCandidateSource(),
            RandomWalkCandidateSource(settings.random_walk_steps, settings.random_walk_restart),
            CategoryPopularCandidateSource(),
            TrendingCandidateSource(),
            PopularCandidateSource(),
        ],
        {
            SourceKind.ANN: settings.ann_candidates,
            SourceKind.CO_ENGAGEMENT: settings.co_engagement_candidates,
            SourceKind.RANDOM_WALK: settings.random_walk_candidates,
            SourceKind.CATEGORY_POPULAR: settings.category_candidates,
            SourceKind.TRENDING: settings.trending_candidates,
            SourceKind.POPULAR: settings.popular_candidates,
            SourceKind.FRESH: settings.fresh_candidates,
        },
        models,
        fresh=FreshItemIndex(settings.fresh_max_items),
        source_budget_s=settings.source_budget_ms / 1000,
        source_handoff_s=settings.source_handoff_ms / 1000,
        workers=2 * settings.workers,
    )
    servicer = retrieval_servicer.RetrievalServicer(stage, runner)
    return Binding(
        retrieval_servicer.SERVICE_NAME,
        lambda server: retrieval_service_pb2_grpc.add_RetrievalServiceServicer_to_server(
            servicer, server
        ),
        [
            keep_snapshot(settings, holder),
            keep_release(settings, models),
            keep_warm(serving_state(holder, models), stage.warm),
        ],
        [stage.close],
        warm=stage.warm,
    )


def ranking(settings: Settings, engine: sa.Engine, runner: BlockingRunner) -> Binding:
    """RankingService: the release's light ranker when published, else the baseline scorer."""
    holder = snapshot_holder(settings, engine)
    models = release_watcher(
        settings,
        engine,
        prepared(
            lambda path, manifest: LearnedRanker(
                path, manifest, mode=settings.ranking_mode, heavy_top_n=settings.heavy_top_n
            ),
            LearnedRanker.prepare,
            holder,
        ),
        "ranking",
        RANKING_ARTIFACTS,
    )
    stage = RankingStage(holder, BaselineScorer(), models)
    servicer = ranking_servicer.RankingServicer(stage, runner)
    return Binding(
        ranking_servicer.SERVICE_NAME,
        lambda server: ranking_service_pb2_grpc.add_RankingServiceServicer_to_server(
            servicer, server
        ),
        [
            keep_snapshot(settings, holder),
            keep_release(settings, models),
            keep_warm(serving_state(holder, models), stage.warm),
        ],
        warm=stage.warm,
    )


def blending(settings: Settings, engine: sa.Engine, runner: BlockingRunner) -> Binding:
    """BlendingService, reaching retrieval and ranking at their configured targets, with the
    release's blending policy (the default one before the first release)."""
    holder = snapshot_holder(settings, engine)
    releases = release_watcher(
        settings,
        engine,
        prepared(BlendingReleaseLoader(), _prepare_vectors, holder),
        "blending",
        BLENDING_ARTIFACTS,
    )
    default = BlendingRelease(BlendingPolicies.default())

    def release() -> BlendingRelease:
        return releases.current().value or default

    secure = _stage_credentials(settings)
    token = settings.stage_token.get_secret_value() if settings.stage_token else None
    retrieval_clients = [
        AsyncRetrievalClient(
            settings.target(ServiceName.RETRIEVAL), secure=secure, options=options, token=token
        )
        for options in _connections(settings, ServiceName.RETRIEVAL)
    ]
    ranking_clients = [
        AsyncRankingClient(
            settings.target(ServiceName.RANKING), secure=secure, options=options, token=token
        )
        for options in _connections(settings, ServiceName.RANKING)
    ]
    blending_stage = BlendingStage()
    recommender = Recommender(
        holder,
        GrpcRetrievalBackend(retrieval_clients),
        GrpcRankingBackend(ranking_clients),
        blending_stage,
        RecommendLimits(
            retrieval_timeout_s=settings.retrieval_timeout_ms / 1000,
            ranking_timeout_s=settings.ranking_timeout_ms / 1000,
            page_token_ttl_s=settings.page_token_ttl_seconds,
            candidates=settings.recommend_candidates,
        ),
        release,
        BreakerConfig(settings.circuit_failures, settings.circuit_cool_down_seconds),
    )
    servicer = blending_servicer.BlendingServicer(
        recommender, blending_stage, holder, release, runner, settings
    )
    return Binding(
        blending_servicer.SERVICE_NAME,
        lambda server: blending_service_pb2_grpc.add_BlendingServiceServicer_to_server(
            servicer, server
        ),
        [
            keep_snapshot(settings, holder),
            keep_release(settings, releases),
            keep_warm(
                lambda: (holder.current().snapshot_id, releases.current().release_id),
                recommender.warm,
            ),
        ],
        [client.close for client in [*retrieval_clients, *ranking_clients]],
        warm=recommender.warm,
    )


def _stage_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """TLS for the front door's calls when the servers use TLS: trusting the configured CA,
    and presenting the servers' own certificate when they require client certificates."""
    tls = read_tls(settings)
    if tls is None:
        return None
    mutual = tls.client_ca is not None
    return grpc.ssl_channel_credentials(
        root_certificates=tls.ca,
        private_key=tls.key if mutual else None,
        certificate_chain=tls.certificate if mutual else None,
    )


def _connections(settings: Settings, service: ServiceName) -> list[list[ChannelOption]]:
    """Channel options for each connection to ``service``: one, or four per process when
    several processes share its port (the kernel assigns each connection to a process
    at random, so a few per process spread the calls evenly enough)."""
    processes = settings.processes(service)
    if processes == 1:
        return [[]]
    # A channel of its own subchannel pool opens a connection of its own.
    return [[("grpc.use_local_subchannel_pool", 1)] for _ in range(4 * processes)]


def catalog(settings: Settings, engine: sa.Engine, runner: BlockingRunner) -> Binding:
    """CatalogService over the database."""
    servicer = catalog_servicer.CatalogServicer(CatalogService(CatalogRepository(engine)), runner)
    return Binding(
        catalog_servicer.SERVICE_NAME,
        lambda server: catalog_service_pb2_grpc.add_CatalogServiceServicer_to_server(
            servicer, server
        ),
    )
