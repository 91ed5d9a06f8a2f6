"""Cascade's settings: one typed object, read once from ``CASCADE_*`` variables.

``Settings()`` reads the environment (and a ``.env`` file when present); tests build
``Settings(...)`` with explicit values instead of touching the environment. Nothing
else in the package reads the environment: the object is passed down.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, PositiveFloat, PositiveInt, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceName(StrEnum):
    """The four servers Cascade runs, each its own process."""

    BLENDING = "blending"
    RETRIEVAL = "retrieval"
    RANKING = "ranking"
    CATALOG = "catalog"


class RankingMode(StrEnum):
    """Which of a release's rankers score candidates."""

    AUTO = "auto"
    """What the release's own validation chose: light+heavy if the heavy ranker helped."""
    LIGHT_HEAVY = "light_heavy"
    LIGHT = "light"
    HEAVY = "heavy"


class LogFormat(StrEnum):
    """How log lines are rendered."""

    CONSOLE = "console"
    JSON = "json"


class EventLoop(StrEnum):
    """The asyncio event loop a server runs on."""

    UVLOOP = "uvloop"
    ASYNCIO = "asyncio"


class Settings(BaseSettings):
    """Every setting, with its default. Each field is ``CASCADE_<FIELD NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix="CASCADE_", env_file=".env", extra="ignore", frozen=True
    )

    home: Path = Field(
        default=Path(".cascade"),
        description="State directory; the embedded database lives in HOME/pgdata.",
    )
    database_url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of an external Postgres, e.g. "
            "postgresql+psycopg://user@host:5432/db. Unset: an embedded Postgres under HOME/pgdata."
        ),
    )
    host: str = Field(default="127.0.0.1", description="Address the servers bind to.")
    blending_port: int = Field(default=50051, ge=0, le=65535, description="Blending (front door).")
    retrieval_port: int = Field(default=50052, ge=0, le=65535, description="Retrieval server.")
    ranking_port: int = Field(default=50053, ge=0, le=65535, description="Ranking server.")
    catalog_port: int = Field(default=50054, ge=0, le=65535, description="Catalog server.")
    retrieval_target: str | None = Field(
        default=None,
        description="Where blending reaches retrieval (host:port). Unset: HOST:RETRIEVAL_PORT.",
    )
    ranking_target: str | None = Field(
        default=None,
        description="Where blending reaches ranking (host:port). Unset: HOST:RANKING_PORT.",
    )
    metrics: bool = Field(
        default=True, description="Serve Prometheus metrics over HTTP (/metrics) from every server."
    )
    blending_metrics_port: int = Field(
        default=9151, ge=0, le=65535, description="Blending's metrics port (0: any free port)."
    )
    retrieval_metrics_port: int = Field(default=9152, ge=0, le=65535, description="Retrieval's.")
    ranking_metrics_port: int = Field(default=9153, ge=0, le=65535, description="Ranking's.")
    catalog_metrics_port: int = Field(default=9154, ge=0, le=65535, description="Catalog's.")
    process_index: int = Field(
        default=0,
        ge=0,
        le=15,
        description=(
            "Set by `cascade serve all` for the later processes of a stage that runs several: "
            "process i serves metrics on the stage's metrics port + 10 * i."
        ),
    )
    blending_processes: int = Field(
        default=1,
        ge=1,
        le=16,
        description=(
            "Processes `cascade serve all` runs for blending, sharing its port (SO_REUSEPORT)."
        ),
    )
    retrieval_processes: int = Field(
        default=1, ge=1, le=16, description="Processes for retrieval, sharing its port."
    )
    ranking_processes: int = Field(
        default=1, ge=1, le=16, description="Processes for ranking, sharing its port."
    )
    circuit_failures: int = Field(
        default=5,
        ge=0,
        description=(
            "Failed calls in a row after which the front door stops calling a stage for the "
            "cool-down and serves its fallback at once (0: never)."
        ),
    )
    circuit_cool_down_seconds: PositiveFloat = Field(
        default=5.0, description="How long an open circuit skips a stage before one probe call."
    )
    max_concurrent_calls: int = Field(
        default=32,
        ge=0,
        description=(
            "Calls a server works on at once; past it, new calls are refused at once with "
            "RESOURCE_EXHAUSTED (reason OVERLOADED) instead of queueing. 0: no limit. Health "
            "checks and reflection are never refused."
        ),
    )
    reflection: bool = Field(default=True, description="Serve gRPC server reflection.")
    tls_cert_file: Path | None = Field(
        default=None,
        description=(
            "PEM certificate chain the servers present; with TLS_KEY_FILE every server "
            "listens with TLS only (unset: plaintext)."
        ),
    )
    tls_key_file: Path | None = Field(default=None, description="PEM private key of TLS_CERT_FILE.")
    tls_client_ca_file: Path | None = Field(
        default=None,
        description=(
            "PEM CA bundle: servers then require client certificates it signed (mutual TLS); "
            "the front door presents TLS_CERT_FILE to retrieval and ranking."
        ),
    )
    tls_ca_file: Path | None = Field(
        default=None,
        description=(
            "PEM CA bundle the front door trusts for retrieval and ranking (unset: the system's)."
        ),
    )
    auth_tokens_file: Path | None = Field(
        default=None,
        description=(
            "JSON file of accepted bearer tokens (by SHA-256) and their scopes; set, every call "
            "but health checks and reflection needs 'authorization: Bearer <token>' "
            "(`cascade auth add-token` writes it)."
        ),
    )
    stage_token: SecretStr | None = Field(
        default=None,
        description="Bearer token (read scope) the front door sends to retrieval and ranking.",
    )
    grace_seconds: PositiveFloat = Field(
        default=5.0, description="How long in-flight calls may run on shutdown."
    )
    workers: PositiveInt = Field(
        default=4, description="Threads per server for CPU work (scoring, filtering, database)."
    )
    event_loop: EventLoop = Field(
        default=EventLoop.UVLOOP,
        description=(
            "The servers' event loop: uvloop (libuv; less CPU per call) or asyncio "
            "(the standard library's)."
        ),
    )
    snapshot_refresh_seconds: PositiveFloat = Field(
        default=30.0,
        description="How often servers check Postgres for new events and catalog changes.",
    )
    snapshot_file: bool = Field(
        default=True,
        description=(
            "Keep the serving snapshot in HOME/snapshots (one file per database, rewritten "
            "at most every 5 minutes), so a restarted server serves from it at once and "
            "catches up with Postgres in the background."
        ),
    )
    status_refresh_seconds: PositiveFloat = Field(
        default=2.0,
        description=(
            "How often servers apply item status changes (hidden, deleted) and new "
            "impression and hide events between full snapshot refreshes, so such items "
            "stop appearing within seconds."
        ),
    )
    popularity_half_life_days: PositiveFloat = Field(
        default=7.0, description="Half-life of an engagement's weight in popularity."
    )
    history_length: PositiveInt = Field(
        default=50, description="Recent engaged items per user used for co-engagement."
    )
    neighbours_per_item: PositiveInt = Field(
        default=50, description="Co-engaged neighbours kept per item."
    )
    release_check_in_child: bool = Field(
        default=True,
        description=(
            "Check each new release in a child process at background priority before the "
            "server loads it: the checksums of what it reads, and its Annoy and LightGBM "
            "models, so a file that crashes a native library takes down the child, not the "
            "server, and hashing gigabytes does not take the server's CPU."
        ),
    )
    release_loads_in_turn: bool = Field(
        default=True,
        description=(
            "Servers sharing a CASCADE_HOME load a release that replaces a served one one at "
            "a time (a file lock in HOME/releases), so a swap takes less of the machine from "
            "the requests they serve meanwhile; a server's first load does not wait."
        ),
    )
    release_load_switch_interval_ms: PositiveFloat = Field(
        default=0.5,
        description=(
            "While a server loads a release beside its requests, a thread waiting for "
            "Python's interpreter lock gets it within this many ms (Python's default: 5), "
            "so requests do not queue behind the load at each of their thread crossings."
        ),
    )
    release_poll_seconds: PositiveFloat = Field(
        default=5.0, description="How often servers check for a newly activated release."
    )
    ann_candidates: int = Field(
        default=300, ge=0, le=2000, description="Default candidates from the two-tower index."
    )
    popular_candidates: int = Field(
        default=200, ge=0, le=2000, description="Default candidates from the popular source."
    )
    co_engagement_candidates: int = Field(
        default=300, ge=0, le=2000, description="Default candidates from co-engagement."
    )
    category_candidates: int = Field(
        default=100,
        ge=0,
        le=2000,
        description="Default candidates from the popular items of the user's main categories.",
    )
    trending_candidates: int = Field(
        default=100, ge=0, le=2000, description="Default candidates from the trending source."
    )
    trending_half_life_hours: PositiveFloat = Field(
        default=24.0,
        description="Half-life of the short-term engagement trending compares with popularity.",
    )
    fresh_candidates: int = Field(
        default=50,
        ge=0,
        le=2000,
        description=(
            "Default candidates from the fresh side index: items the serving release does "
            "not know yet (created after it was trained), newest first."
        ),
    )
    fresh_max_items: int = Field(
        default=5000,
        ge=0,
        le=100_000,
        description="The most items the fresh side index holds (the newest).",
    )
    source_budget_ms: int = Field(
        default=100,
        ge=1,
        le=60_000,
        description=(
            "Time budget of the retrieval candidate sources (they run one after another "
            "while each is quick; when one is slow the rest move to another thread); a "
            "source not done within it is skipped and reported in `degraded`."
        ),
    )
    source_handoff_ms: float = Field(
        default=5.0,
        gt=0.0,
        le=60_000,
        description=(
            "How long a request's candidate sources, run one after another on one thread, "
            "wait on one that has not finished before another thread takes the rest (each "
            "usually takes a millisecond or two; more threads cost CPU in lock hand-offs)."
        ),
    )
    seen_ttl_hours: float = Field(
        default=24.0,
        ge=0.0,
        description=(
            "Items shown to a user (impression events) this recently are not recommended "
            "again; 0 turns it off. Hidden items are filtered for good."
        ),
    )
    seen_max_items: int = Field(
        default=500, ge=0, le=100_000, description="Recent impressions remembered per user."
    )
    random_walk_candidates: int = Field(
        default=200,
        ge=0,
        le=2000,
        description="Default candidates from random walks on the engagement graph.",
    )
    random_walk_steps: int = Field(
        default=20_000,
        ge=100,
        le=1_000_000,
        description="Steps (item → user → item hops) the random walks of one request take.",
    )
    random_walk_restart: float = Field(
        default=0.5,
        gt=0.0,
        lt=1.0,
        description="Probability that a walk jumps back to a start item after each hop.",
    )
    ranking_mode: RankingMode = Field(
        default=RankingMode.AUTO,
        description=(
            "auto (the release's validated choice), light_heavy (heavy re-scores the light "
            "top N), light, or heavy alone."
        ),
    )
    heavy_top_n: PositiveInt = Field(
        default=50, description="How many light-ranked candidates the heavy ranker re-scores."
    )
    recommend_candidates: int = Field(
        default=500,
        ge=10,
        le=2000,
        description=(
            "Candidates a Recommend call retrieves and ranks for a first page (later pages "
            "add the items already served). Fewer: faster; more: deeper pages and recall."
        ),
    )
    recommend_deadline_ms: PositiveInt = Field(
        default=500, description="Deadline of a Recommend call when the caller sets none."
    )
    retrieval_timeout_ms: PositiveFloat = Field(
        default=150, description="Blending's time budget for the retrieval call."
    )
    ranking_timeout_ms: PositiveFloat = Field(
        default=150, description="Blending's time budget for the ranking call."
    )
    page_token_ttl_seconds: PositiveInt = Field(
        default=3600, description="How long a page token stays valid."
    )
    policy_file: Path | None = Field(
        default=None,
        description=(
            "Blending policy file (YAML or JSON) that `cascade train all` and `cascade "
            "release publish` put in the release. Unset: Cascade's default policy. "
            "`cascade policy publish FILE` changes the policy of the active release."
        ),
    )
    log_level: str = Field(default="INFO", description="Log level (DEBUG, INFO, WARNING...).")
    log_format: LogFormat = Field(default=LogFormat.CONSOLE, description="console or json.")

    def port(self, service: ServiceName) -> int:
        """The port a server listens on."""
        return {
            ServiceName.BLENDING: self.blending_port,
            ServiceName.RETRIEVAL: self.retrieval_port,
            ServiceName.RANKING: self.ranking_port,
            ServiceName.CATALOG: self.catalog_port,
        }[service]

    def metrics_port(self, service: ServiceName) -> int:
        """The port of this process's metrics endpoint (0: any free port)."""
        base = {
            ServiceName.BLENDING: self.blending_metrics_port,
            ServiceName.RETRIEVAL: self.retrieval_metrics_port,
            ServiceName.RANKING: self.ranking_metrics_port,
            ServiceName.CATALOG: self.catalog_metrics_port,
        }[service]
        return base + 10 * self.process_index if base else 0

    def processes(self, service: ServiceName) -> int:
        """How many processes serve ``service`` on its port (the catalog always has one)."""
        return {
            ServiceName.BLENDING: self.blending_processes,
            ServiceName.RETRIEVAL: self.retrieval_processes,
            ServiceName.RANKING: self.ranking_processes,
        }.get(service, 1)

    def target(self, service: ServiceName) -> str:
        """Where another server reaches ``service``."""
        configured = {
            ServiceName.RETRIEVAL: self.retrieval_target,
            ServiceName.RANKING: self.ranking_target,
        }.get(service)
        return configured or f"{self.host}:{self.port(service)}"
