"""A private CA and gateway certificates made with ``openssl`` (for tests, demos and a first
deployment; bring your own PKI in production). Each certificate names the addresses it serves
as IP subject alternative names, so clients verify hostnames as usual."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from pathlib import Path

from herd.platform.errors import ConfigError
from herd.replication.federation.config import TlsConfig

OPENSSL_TIMEOUT_S = 60.0


def _openssl(*args: str, cwd: Path) -> None:
    if shutil.which("openssl") is None:
        raise ConfigError("openssl is not installed", field="tls")
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                            timeout=OPENSSL_TIMEOUT_S)
    if result.returncode != 0:
        raise ConfigError(f"openssl {args[0]} failed: {result.stderr.strip()[-500:]}",
                          field="tls")


def make_ca(directory: Path, days: int = 7) -> Path:
    """A self-signed CA (``ca.pem`` / ``ca.key``) in ``directory``; returns the CA cert path."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", str(days),
             "-subj", "/CN=herd federation CA", cwd=directory)
    (directory / "ca.key").chmod(0o600)
    return directory / "ca.pem"


def make_certificate(directory: Path, name: str, addresses: list[str],
                     days: int = 7) -> TlsConfig:
    """A certificate for gateway ``name`` signed by the CA in ``directory`` (see
    :func:`make_ca`), valid for ``addresses`` (IPs or DNS names)."""
    sans = ",".join(f"IP:{a}" if _is_ip(a) else f"DNS:{a}" for a in addresses)
    (directory / f"{name}.ext").write_text(f"subjectAltName={sans}\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
             cwd=directory)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", str(days),
             "-extfile", f"{name}.ext", cwd=directory)
    (directory / f"{name}.key").chmod(0o600)
    return TlsConfig(cert=directory / f"{name}.pem", key=directory / f"{name}.key",
                     ca=directory / "ca.pem")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
