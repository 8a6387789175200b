"""The ``Federation`` config: this region, every region's gateway URL, the shared token and TLS.

YAML (``Federation.from_yaml``)::

    region: us-east                       # this cluster's region
    listen: 0.0.0.0:7070                  # where this gateway binds (default: port of own URL)
    regions:                              # every region's gateway, as this region reaches it
      us-east: https://10.0.0.1:7070
      us-west: https://10.0.1.1:7070
    token_file: /etc/herd/federation.token   # shared by every region; or token: <hex>
    tls: {cert: gw.pem, key: gw.key, ca: ca.pem}   # optional; then every URL is https
    max_body_bytes: 8388608
    request_timeout_s: 5

The token is handled like herd's Ray token (``herd.platform.auth``): a hex secret in a file of
mode 0600 (:func:`write_token_file`), compared in constant time by the gateway.
"""

from __future__ import annotations

import os
import secrets
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from herd.platform.errors import ConfigError
from herd.platform.validation import field_error, load_yaml_model, validate_model

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
MIN_TOKEN_CHARS = 16


def write_token_file(path: str | Path) -> Path:
    """Create ``path`` (mode 0600) holding a new random token; returns the path."""
    target = Path(path)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))
    return target


class TlsConfig(BaseModel):
    """Certificate and key of this gateway, and the CA that signs every peer's certificate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cert: Path
    key: Path
    ca: Path
    verify_hostname: bool = True

    @field_validator("cert", "key", "ca")
    @classmethod
    def _readable(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.ca))
        context.load_cert_chain(str(self.cert), str(self.key))
        return context

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca))
        context.check_hostname = self.verify_hostname
        return context


class Federation(BaseModel):
    """How this cluster's gateway listens and reaches the other regions' gateways."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    region: str = Field(min_length=1, max_length=100)
    regions: dict[str, str]
    listen: str | None = None
    token: SecretStr | None = None
    token_file: Path | None = None
    tls: TlsConfig | None = None
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, gt=0, le=1 << 30)
    request_timeout_s: float = Field(default=5.0, gt=0, le=600)

    @field_validator("regions")
    @classmethod
    def _urls(cls, value: dict[str, str]) -> dict[str, str]:
        for name, url in value.items():
            parts = urlsplit(url)
            if not name or parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"region {name!r}: expected an http(s)://HOST:PORT URL, "
                                 f"got {url!r}")
        return {name: url.rstrip("/") for name, url in value.items()}

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is not None:
            host, _, port = value.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"expected HOST:PORT, got {value!r}")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> Federation:
        if self.region not in self.regions:
            raise field_error(("region",), self.region,
                              f"not one of the regions {sorted(self.regions)}")
        if len(self.regions) < 2:
            raise field_error(("regions",), sorted(self.regions),
                              "a federation needs at least two regions")
        if (self.token is None) == (self.token_file is None):
            raise field_error(("token",), None, "set exactly one of token and token_file")
        if self.token is not None and len(self.token.get_secret_value()) < MIN_TOKEN_CHARS:
            raise field_error(("token",), "<hidden>",
                              f"must be at least {MIN_TOKEN_CHARS} characters")
        if self.token_file is not None and not self.token_file.is_file():
            raise field_error(("token_file",), str(self.token_file), "no such file")
        scheme = "https" if self.tls else "http"
        for name, url in self.regions.items():
            if urlsplit(url).scheme != scheme:
                raise field_error(("regions", name), url,
                                  f"must be an {scheme} URL ({'with' if self.tls else 'without'}"
                                  f" tls configured)")
        return self

    # -------------------------------------------------------------------------------- loading
    @classmethod
    def from_yaml(cls, path: str | Path) -> Federation:
        return load_yaml_model(cls, path)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> Federation:
        return validate_model(cls, data, source=source)

    # -------------------------------------------------------------------------------- views
    @property
    def peers(self) -> dict[str, str]:
        """Every other region and its gateway URL."""
        return {name: url for name, url in self.regions.items() if name != self.region}

    def listen_address(self) -> tuple[str, int]:
        if self.listen:
            host, _, port = self.listen.rpartition(":")
            return host, int(port)
        own = urlsplit(self.regions[self.region])
        return "0.0.0.0", own.port or (443 if own.scheme == "https" else 80)

    def secret(self) -> str:
        """The shared token (read from ``token_file`` each time, so a rotated file is used)."""
        if self.token is not None:
            return self.token.get_secret_value()
        assert self.token_file is not None
        text = self.token_file.read_text().strip()
        if len(text) < MIN_TOKEN_CHARS:
            raise ConfigError(f"token file holds fewer than {MIN_TOKEN_CHARS} characters",
                              field="token_file", value=str(self.token_file))
        return text
