"""service_config.json, the channel options built from it, and the client's import footprint."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from typing import Any

import pytest

from cascade.blending.v1 import blending_service_pb2
from cascade.catalog.v1 import catalog_service_pb2
from cascade.ranking.v1 import ranking_service_pb2
from cascade.retrieval.v1 import retrieval_service_pb2
from cascade_client import channel_options, default_timeout
from cascade_client._channel import service_config

FILES = (blending_service_pb2, retrieval_service_pb2, ranking_service_pb2, catalog_service_pb2)

EXPECTED_TIMEOUTS = {
    "/cascade.blending.v1.BlendingService/Recommend": 1.0,
    "/cascade.blending.v1.BlendingService/BlendCandidates": 0.5,
    "/cascade.retrieval.v1.RetrievalService/RetrieveCandidates": 0.5,
    "/cascade.ranking.v1.RankingService/RankCandidates": 0.5,
    "/cascade.catalog.v1.CatalogService/GetItems": 2.0,
    "/cascade.catalog.v1.CatalogService/ListItems": 2.0,
    "/cascade.catalog.v1.CatalogService/ListUsers": 2.0,
    "/cascade.catalog.v1.CatalogService/UpsertItems": 5.0,
    "/cascade.catalog.v1.CatalogService/UpsertUsers": 5.0,
    "/cascade.catalog.v1.CatalogService/LogEvents": 5.0,
}


def _generated_methods() -> set[str]:
    """Every RPC of every generated service, as ``/package.Service/Method``."""
    return {
        f"/{service.full_name}/{method.name}"
        for file in FILES
        for service in file.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }


def _configured_methods(config: dict[str, Any]) -> list[str]:
    return [
        f"/{name['service']}/{name['method']}"
        for method_config in config["methodConfig"]
        for name in method_config["name"]
    ]


def test_every_configured_method_exists_and_every_method_is_configured_once() -> None:
    configured = _configured_methods(service_config())
    assert sorted(configured) == sorted(set(configured)), "a method is configured twice"
    assert set(configured) == _generated_methods()


def test_timeouts_are_the_agreed_ones() -> None:
    assert set(EXPECTED_TIMEOUTS) == _generated_methods()
    for method, seconds in EXPECTED_TIMEOUTS.items():
        assert default_timeout(method) == seconds


def test_unknown_methods_have_no_default_timeout() -> None:
    with pytest.raises(KeyError):
        default_timeout("/cascade.blending.v1.BlendingService/Nope")


def test_only_unavailable_is_retried_with_the_agreed_policy() -> None:
    config = service_config()
    for method_config in config["methodConfig"]:
        assert method_config["waitForReady"] is False
        assert method_config["retryPolicy"] == {
            "maxAttempts": 3,
            "initialBackoff": "0.05s",
            "maxBackoff": "1s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
    assert config["retryThrottling"] == {"maxTokens": 10, "tokenRatio": 0.1}


def test_channel_options_enable_retries_and_leave_timeouts_to_the_calls() -> None:
    options = dict(channel_options())
    assert options["grpc.enable_retries"] == 1
    assert options["grpc.keepalive_time_ms"] == 30_000
    assert options["grpc.keepalive_timeout_ms"] == 10_000
    assert options["grpc.max_receive_message_length"] == 16 * 1024 * 1024
    channel_config = json.loads(options["grpc.service_config"])
    assert _configured_methods(channel_config) == _configured_methods(service_config())
    assert all("timeout" not in entry for entry in channel_config["methodConfig"])
    assert all("retryPolicy" in entry for entry in channel_config["methodConfig"])
    assert channel_config["retryThrottling"] == service_config()["retryThrottling"]


def test_extra_channel_options_replace_defaults_of_the_same_name() -> None:
    options = channel_options(
        [("grpc.keepalive_time_ms", 60_000), ("grpc.primary_user_agent", "t")]
    )
    assert [name for name, _ in options].count("grpc.keepalive_time_ms") == 1
    assert dict(options)["grpc.keepalive_time_ms"] == 60_000
    assert dict(options)["grpc.primary_user_agent"] == "t"


def test_the_service_config_is_package_data() -> None:
    file = resources.files("cascade_client").joinpath("service_config.json")
    assert json.loads(file.read_text("utf-8")) == service_config()
    assert resources.files("cascade_client").joinpath("py.typed").is_file()


def test_importing_the_client_pulls_in_no_server_or_ml_dependency() -> None:
    forbidden = (
        "numpy",
        "scipy",
        "tensorflow",
        "lightgbm",
        "annoy",
        "sqlalchemy",
        "cascade_server",
    )
    script = (
        "import sys, cascade_client\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r})\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""
