"""A throwaway certificate authority for TLS tests, made with the openssl command."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Certificates:
    """PEM files: the CA, a server certificate for 127.0.0.1/localhost, a client one."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_certificates(directory: Path) -> Certificates:
    """A CA and two certificates it signed, valid for a day."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req",
        "-x509",
        *curve,
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
        "-days",
        "1",
        "-subj",
        "/CN=cascade-test-ca",
    )
    names = directory / "san.ext"
    names.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    signed = {}
    for who in ("server", "client"):
        key, request, cert = (directory / f"{who}.{ext}" for ext in ("key", "csr", "pem"))
        _openssl("req", *curve, "-keyout", str(key), "-out", str(request), "-subj", f"/CN={who}")
        _openssl(
            "x509",
            "-req",
            "-in",
            str(request),
            "-CA",
            str(ca),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            str(cert),
            "-extfile",
            str(names),
        )
        signed[who] = (cert, key)
    return Certificates(ca, *signed["server"], *signed["client"])
