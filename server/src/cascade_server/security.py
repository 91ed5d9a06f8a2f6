"""Who may call: bearer tokens with scopes, and the TLS material servers and callers use.

Tokens live in a JSON file (``CASCADE_AUTH_TOKENS_FILE``) by their SHA-256 only, with a
name and scopes, so the file holds no secret a reader could replay::

    {"tokens": [{"name": "feed-service", "sha256": "9f86d0...", "scopes": ["read"]}]}

``read`` allows every query (recommendations, stages, catalog reads); ``write`` allows
catalog writes (items, users, events). ``cascade auth add-token`` makes a token and
adds its entry. Tokens are never logged: log lines name the token's ``name``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cascade_server.errors import ConfigurationError, PermissionDeniedError, UnauthenticatedError
from cascade_server.settings import Settings


class Scope(StrEnum):
    """What a token allows."""

    READ = "read"
    WRITE = "write"


WRITE_METHODS = frozenset(
    {
        "/cascade.catalog.v1.CatalogService/UpsertItems",
        "/cascade.catalog.v1.CatalogService/UpsertUsers",
        "/cascade.catalog.v1.CatalogService/LogEvents",
    }
)
"""Methods that change data and need the write scope; every other one needs read."""


def scope_of(method: str) -> Scope:
    """The scope ``method`` (``/package.Service/Method``) needs."""
    return Scope.WRITE if method in WRITE_METHODS else Scope.READ


def digest(token: str) -> str:
    """The SHA-256 a tokens file stores for ``token``."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class TokenEntry:
    """One accepted token: its name, the SHA-256 of its value, its scopes."""

    name: str
    sha256: str
    scopes: frozenset[Scope]


class TokenStore:
    """The tokens a server accepts, loaded once from the tokens file."""

    def __init__(self, entries: list[TokenEntry]) -> None:
        self._by_digest = {entry.sha256: entry for entry in entries}

    @classmethod
    def load(cls, path: Path) -> TokenStore:
        """Read ``path``; ConfigurationError saying what is wrong when it cannot be used."""
        try:
            raw = json.loads(path.read_text())
            entries = [
                TokenEntry(
                    str(item["name"]),
                    str(item["sha256"]).lower(),
                    frozenset(Scope(scope) for scope in item["scopes"]),
                )
                for item in raw["tokens"]
            ]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ConfigurationError(
                f"cannot use the tokens file {path} ({type(error).__name__}: {error}); "
                'expected {"tokens": [{"name", "sha256", "scopes": ["read", "write"]}]} '
                "(cascade auth add-token writes it)"
            ) from error
        return cls(entries)

    def authorize(self, method: str, authorization: str | None) -> str:
        """The name of the token that may call ``method``; raises UNAUTHENTICATED without
        a known bearer token, PERMISSION_DENIED when it lacks the method's scope."""
        if not authorization or not authorization.startswith("Bearer "):
            raise UnauthenticatedError(
                "this server needs a bearer token: send metadata 'authorization: Bearer <token>'"
            )
        wanted = digest(authorization.removeprefix("Bearer ").strip())
        entry = self._by_digest.get(wanted)
        if entry is None or not hmac.compare_digest(entry.sha256, wanted):
            raise UnauthenticatedError("the bearer token is not one this server accepts")
        scope = scope_of(method)
        if scope not in entry.scopes:
            raise PermissionDeniedError(entry.name, scope.value, method)
        return entry.name


def add_token(path: Path, name: str, scopes: frozenset[Scope]) -> str:
    """Make a new random token, add its entry to the tokens file at ``path`` (created
    readable by its owner only), and return the token: it is shown once, never stored."""
    token = secrets.token_urlsafe(32)
    existing = json.loads(path.read_text()) if path.exists() else {"tokens": []}
    if any(item.get("name") == name for item in existing["tokens"]):
        raise ConfigurationError(f"the tokens file {path} already has a token named {name!r}")
    existing["tokens"].append(
        {"name": name, "sha256": digest(token), "scopes": sorted(s.value for s in scopes)}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(existing, out, indent=2)
        out.write("\n")
    return token


@dataclass(frozen=True)
class TlsFiles:
    """PEM bytes for TLS: the server's certificate and key, the CA for client
    certificates (mutual TLS), and the CA callers trust."""

    certificate: bytes
    key: bytes
    client_ca: bytes | None
    ca: bytes | None


def read_tls(settings: Settings) -> TlsFiles | None:
    """The TLS material the settings name, or None for plaintext. ConfigurationError when
    a file is missing or only one of certificate and key is given."""
    cert_file, key_file = settings.tls_cert_file, settings.tls_key_file
    client_ca_file, ca_file = settings.tls_client_ca_file, settings.tls_ca_file
    if cert_file is None and key_file is None:
        if client_ca_file is not None:
            raise ConfigurationError(
                "CASCADE_TLS_CLIENT_CA_FILE needs CASCADE_TLS_CERT_FILE and CASCADE_TLS_KEY_FILE"
            )
        return None
    if cert_file is None or key_file is None:
        raise ConfigurationError(
            "set both CASCADE_TLS_CERT_FILE and CASCADE_TLS_KEY_FILE (or neither, for plaintext)"
        )

    def read(path: Path, setting: str) -> bytes:
        try:
            return path.read_bytes()
        except OSError as error:
            raise ConfigurationError(f"cannot read {setting} {path}: {error.strerror}") from error

    return TlsFiles(
        read(cert_file, "CASCADE_TLS_CERT_FILE"),
        read(key_file, "CASCADE_TLS_KEY_FILE"),
        read(client_ca_file, "CASCADE_TLS_CLIENT_CA_FILE") if client_ca_file else None,
        read(ca_file, "CASCADE_TLS_CA_FILE") if ca_file else None,
    )
