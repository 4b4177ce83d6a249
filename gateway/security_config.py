"""The security sections of the gateway config: TLS on the gateway's port, TLS to Triton, API keys.

Example::

    server:
      tls:
        cert_file: /etc/lmforge/tls/server.crt      # PEM chain, reloaded when it changes
        key_file: /etc/lmforge/tls/server.key
        client_ca_file: /etc/lmforge/tls/clients-ca.crt   # set: mutual TLS
    triton:
      url: triton:8001
      tls: {ca_file: /etc/lmforge/tls/triton-ca.crt}     # TLS to Triton (per endpoint)
    auth:
      public_health: true          # grpc.health.v1 without a key (probes)
      public_reflection: false
      keys:
        - name: search
          sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
          models: [minilm]         # logical models; "*" = all
          rpcs: [Embed, ListModels]
          rate_per_s: 50           # token bucket: refill rate ...
          burst: 100               # ... and size
          max_concurrent: 8        # RPCs of this key in flight

Keys are stored as the SHA-256 (hex) of the secret a caller sends in
``authorization: Bearer <secret>``; ``lmforge-gateway hash-key`` prints it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from gateway.routing_config import NAME_PATTERN
from lmforge_core.strict import StrictModel

Rpc = Literal["Classify", "Embed", "Generate", "GenerateStream", "ListModels"]
ALL_RPCS: tuple[Rpc, ...] = ("Classify", "Embed", "Generate", "GenerateStream", "ListModels")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class ServerTlsConfig(StrictModel):
    """TLS on the gateway's gRPC port; with ``client_ca_file``, mutual TLS."""

    cert_file: Path = Field(description="PEM certificate chain of the gateway")
    key_file: Path = Field(description="PEM private key of that certificate")
    client_ca_file: Path | None = Field(
        default=None, description="PEM CA bundle that client certificates must chain to (mTLS)"
    )
    require_client_cert: bool = Field(
        default=True, description="with client_ca_file: refuse clients without a certificate"
    )
    check_interval_s: float = Field(
        default=1.0, ge=0, description="how often the files are checked for changes (at most)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> ServerTlsConfig:
        if not self.require_client_cert and self.client_ca_file is None:
            raise ValueError("require_client_cert: false only makes sense with client_ca_file")
        return self


class ClientTlsConfig(StrictModel):
    """TLS from the gateway to one Triton endpoint; ``cert_file`` + ``key_file`` for mTLS."""

    ca_file: Path | None = Field(default=None, description="PEM roots; default: the system's")
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _pair(self) -> ClientTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError(
                f"cert_file ({self.cert_file}) and key_file ({self.key_file}) go together"
            )
        return self


class ApiKeyConfig(StrictModel):
    """One caller: the hash of its secret, what it may call and how much."""

    name: str = Field(pattern=NAME_PATTERN, description="shown in logs and metrics")
    sha256: str = Field(description="hex SHA-256 of the secret (lmforge-gateway hash-key)")
    models: tuple[str, ...] = Field(default=("*",), min_length=1, description='"*": every model')
    rpcs: tuple[Rpc, ...] = Field(default=ALL_RPCS, min_length=1)
    rate_per_s: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="requests/s; null: unlimited"
    )
    burst: int | None = Field(default=None, ge=1, description="bucket size; default ≈ 1 s")
    max_concurrent: int | None = Field(default=None, ge=1, description="RPCs in flight")

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        value = value.strip().lower()
        if not _SHA256_HEX.match(value):
            raise ValueError("must be 64 hex digits (the SHA-256 of the key)")
        return value

    @model_validator(mode="after")
    def _burst(self) -> ApiKeyConfig:
        if self.burst is not None and self.rate_per_s is None:
            raise ValueError(f"key {self.name!r}: burst {self.burst} needs rate_per_s")
        return self


class AuthConfig(StrictModel):
    """API keys. Absent section: no authentication (every caller may call everything)."""

    enabled: bool = True
    public_health: bool = Field(default=True, description="grpc.health.v1 without a key")
    public_reflection: bool = Field(default=False, description="server reflection without a key")
    keys: tuple[ApiKeyConfig, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> AuthConfig:
        names: dict[str, int] = {}
        hashes: dict[str, int] = {}
        for index, key in enumerate(self.keys):
            if key.name in names:
                raise ValueError(f"keys.{index}.name {key.name!r} repeats keys.{names[key.name]}")
            if key.sha256 in hashes:
                raise ValueError(
                    f"keys.{index} ({key.name!r}) has the same sha256 as keys.{hashes[key.sha256]}"
                )
            names[key.name] = index
            hashes[key.sha256] = index
        return self
