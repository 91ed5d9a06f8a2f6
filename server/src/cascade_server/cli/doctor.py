"""`cascade doctor`: check what serving needs, and say what to fix."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from functools import partial

import grpc
import sqlalchemy as sa
import typer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from cascade_server.artifacts.manifest import read_verified
from cascade_server.artifacts.registry import ReleaseRegistry
from cascade_server.errors import CascadeError
from cascade_server.release_probe import PROBED, probe
from cascade_server.rpc.app import ensure_free
from cascade_server.security import TokenStore, read_tls
from cascade_server.settings import ServiceName, Settings
from cascade_server.storage import migrations
from cascade_server.storage.database import database_url, make_engine

_FREE_DISK_BYTES = 2 * 2**30
"""Below this much free space under HOME, training and publishing may run out."""


class Verdict(StrEnum):
    """How a check came out."""

    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Finding:
    """One check: what was looked at, how it came out, what to do."""

    check: str
    verdict: Verdict
    detail: str


def doctor() -> None:
    """Check settings, the database and its migrations, the catalog, the active release
    (files and models, loaded in a child process), TLS and token files, the servers'
    ports and disk space; print what to fix. Exit code 1 when a check fails."""
    findings = list(_findings())
    table = Table("check", "result", "detail / what to do", show_lines=False)
    colours = {Verdict.OK: "green", Verdict.WARN: "yellow", Verdict.FAIL: "bold red"}
    for finding in findings:
        colour = colours[finding.verdict]
        table.add_row(finding.check, f"[{colour}]{finding.verdict}[/]", finding.detail)
    Console().print(table)
    if any(f.verdict is Verdict.FAIL for f in findings):
        raise typer.Exit(1)


def _findings() -> Iterator[Finding]:
    try:
        settings = Settings()
    except ValidationError as error:
        yield Finding("settings", Verdict.FAIL, f"{error}; fix the CASCADE_* variables")
        return
    yield Finding("settings", Verdict.OK, f"home {settings.home.resolve()}")
    yield from _files(settings)
    yield from _database(settings)
    yield from _ports(settings)
    yield _disk(settings)


def _files(settings: Settings) -> Iterator[Finding]:
    try:
        tls = read_tls(settings)
        mode = "off" if tls is None else "mutual" if tls.client_ca else "on"
        yield Finding("tls", Verdict.OK, f"TLS {mode}")
    except CascadeError as error:
        yield Finding("tls", Verdict.FAIL, error.message)
    if settings.auth_tokens_file is None:
        yield Finding("auth", Verdict.WARN, "no CASCADE_AUTH_TOKENS_FILE: every caller is let in")
        return
    try:
        TokenStore.load(settings.auth_tokens_file)
        yield Finding("auth", Verdict.OK, f"tokens from {settings.auth_tokens_file}")
    except CascadeError as error:
        yield Finding("auth", Verdict.FAIL, error.message)


def _database(settings: Settings) -> Iterator[Finding]:
    where = "external" if settings.database_url else f"embedded in {settings.home / 'pgdata'}"
    try:
        with database_url(settings) as url:
            engine = make_engine(url, pool_size=1)
            try:
                yield from _with_engine(settings, engine, where)
            finally:
                engine.dispose()
    except CascadeError as error:
        yield Finding("database", Verdict.FAIL, error.message)
    except Exception as error:
        yield Finding(
            "database",
            Verdict.FAIL,
            f"cannot reach the {where} database ({type(error).__name__}: {error}); "
            "check CASCADE_DATABASE_URL and that Postgres runs",
        )


def _with_engine(settings: Settings, engine: sa.Engine, where: str) -> Iterator[Finding]:
    with engine.connect() as connection:
        version = connection.scalar(sa.text("SHOW server_version"))
    yield Finding("database", Verdict.OK, f"Postgres {version} ({where})")
    current, head = migrations.current_revision(engine), migrations.HEAD_REVISION
    if current != head:
        yield Finding(
            "migrations",
            Verdict.FAIL,
            f"at {current or 'none'}, this code needs {head}: run `cascade db upgrade`",
        )
        return
    yield Finding("migrations", Verdict.OK, f"at {head}")
    with engine.connect() as connection:
        items, users, events = connection.execute(
            sa.text(
                "SELECT (SELECT count(*) FROM items), (SELECT count(*) FROM users),"
                " (SELECT count(*) FROM events)"
            )
        ).one()
    catalog = f"{items:,} items, {users:,} users, {events:,} events"
    if not items or not events:
        yield Finding(
            "catalog",
            Verdict.WARN,
            f"{catalog}: load data with `cascade demo-data` or `cascade import`",
        )
    else:
        yield Finding("catalog", Verdict.OK, catalog)
    yield from _release(ReleaseRegistry(engine, settings.home / "releases"))


def _release(registry: ReleaseRegistry) -> Iterator[Finding]:
    active = registry.active()
    if active is None:
        yield Finding(
            "release",
            Verdict.WARN,
            "none published: the servers serve the baseline; run `cascade train all`",
        )
        return
    path = registry.path_of(active)
    try:
        read_verified(path)
        for component in PROBED:
            probe(path, component)
    except CascadeError as error:
        yield Finding(
            "release",
            Verdict.FAIL,
            f"{active}: {error.message}; `cascade release rollback` or publish a new one",
        )
        return
    rejected = next((r.rejections for r in registry.list() if r.release_id == active), ())
    if rejected:
        yield Finding("release", Verdict.FAIL, f"{active} was refused: {'; '.join(rejected)}")
        return
    yield Finding("release", Verdict.OK, f"{active}: files match, models load")


def _ports(settings: Settings) -> Iterator[Finding]:
    for service in ServiceName:
        port = settings.port(service)
        serving = partial(_serving, settings, port)
        yield _port(f"{service.value} port", settings.host, port, serving)
        if settings.metrics:
            metrics = settings.metrics_port(service)
            yield _port(f"{service.value} metrics", settings.host, metrics, None)


def _port(check: str, host: str, port: int, serving: Callable[[], bool] | None) -> Finding:
    try:
        ensure_free(host, port)  # the servers' own probe
        return Finding(check, Verdict.OK, f"{host}:{port} free")
    except OSError:
        pass
    if serving is not None and serving():
        return Finding(check, Verdict.OK, f"{host}:{port}: a server answers SERVING")
    return Finding(
        check,
        Verdict.WARN,
        f"{host}:{port} is taken by something else; stop it or set another port",
    )


def _serving(settings: Settings, port: int) -> bool:
    with grpc.insecure_channel(f"{settings.host}:{port}") as channel:
        try:
            status = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.RpcError:
            return False
    return bool(status.status == health_pb2.HealthCheckResponse.SERVING)


def _disk(settings: Settings) -> Finding:
    home = settings.home.resolve()
    existing = next((p for p in (home, *home.parents) if p.exists()), home.anchor)
    free = shutil.disk_usage(existing).free
    detail = f"{free / 2**30:.1f} GiB free under {existing}"
    if free < _FREE_DISK_BYTES:
        return Finding("disk", Verdict.WARN, f"{detail}: training and publishing need more")
    return Finding("disk", Verdict.OK, detail)
