"""TLS for the gateway's port (reloaded from disk without a restart) and for its own channels.

:class:`CertificateReloader` is the certificate-configuration fetcher of
``grpc.dynamic_ssl_server_credentials``: gRPC calls it on every new handshake; it looks at the
files' modification stamps (at most every ``check_interval_s``) and, when they changed, reads
them again. A new certificate and key are checked to belong together (stdlib ``ssl``) before
they are used, so a half-written rotation keeps the previous pair and is logged, never a
failed handshake for everyone. Existing connections keep the certificate they started with.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from gateway.security_config import ClientTlsConfig, ServerTlsConfig

logger = logging.getLogger(__name__)

Stamp = tuple[tuple[int, int], ...]


class TlsError(ValueError):
    """A certificate, key or CA file is missing, unreadable or does not fit."""


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def check_pair(cert_file: Path, key_file: Path) -> None:
    """Raise :class:`TlsError` unless ``key_file`` is the private key of ``cert_file``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(
            f"{cert_file} and {key_file} are not a certificate and its key: {exc}"
        ) from None


class CertificateReloader:
    """Serves the current certificate configuration of ``config``; see the module docstring."""

    def __init__(
        self, config: ServerTlsConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._config = config
        self._stamp: Stamp = ()
        self._checked = -float("inf")
        self.reloads = 0
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self._current = self._load()

    @property
    def config(self) -> ServerTlsConfig:
        return self._config

    def _files(self) -> list[Path]:
        c = self._config
        return [c.cert_file, c.key_file, *([c.client_ca_file] if c.client_ca_file else [])]

    def _stamp_now(self) -> Stamp:
        stamps = []
        for path in self._files():
            try:
                stat = os.stat(path)
            except OSError:
                stamps.append((-1, -1))
            else:
                stamps.append((stat.st_mtime_ns, stat.st_size))
        return tuple(stamps)

    def _load(self) -> grpc.ServerCertificateConfiguration:
        c = self._config
        stamp = self._stamp_now()
        check_pair(c.cert_file, c.key_file)
        key, chain = _read(c.key_file, "TLS key"), _read(c.cert_file, "TLS certificate")
        roots = _read(c.client_ca_file, "client CA") if c.client_ca_file else None
        self._stamp = stamp
        return grpc.ssl_server_certificate_configuration([(key, chain)], roots)

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials that ask this object for the certificate on each handshake."""
        return grpc.dynamic_ssl_server_credentials(
            self._current,
            self,
            require_client_authentication=(
                self._config.client_ca_file is not None and self._config.require_client_cert
            ),
        )

    def update(self, config: ServerTlsConfig) -> None:
        """Use other files from now on (config reload); raises :class:`TlsError` if unusable."""
        with self._lock:
            previous = self._config
            self._config = config
            try:
                self._current = self._load()
            except TlsError:
                self._config = previous
                raise
            self._pending = self._current
            self.reloads += 1

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's fetcher: a new configuration when the files changed, else None."""
        with self._lock:
            if self._pending is not None:
                pending, self._pending = self._pending, None
                return pending
            now = self._clock()
            if now - self._checked < self._config.check_interval_s:
                return None
            self._checked = now
            if self._stamp_now() == self._stamp:
                return None
            try:
                self._current = self._load()
            except TlsError as exc:  # mid-rotation or broken: keep serving the old pair
                logger.error("TLS files changed but cannot be used; keeping the old ones: %s", exc)
                self._stamp = self._stamp_now()
                return None
            self.reloads += 1
            logger.info("TLS certificate reloaded from %s", self._config.cert_file)
            return self._current


def channel_credentials(
    ca_file: Path | None = None, cert_file: Path | None = None, key_file: Path | None = None
) -> grpc.ChannelCredentials:
    """Client TLS credentials from PEM files (``cert_file`` + ``key_file``: mutual TLS)."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_file, "CA") if ca_file else None,
        private_key=_read(key_file, "TLS key") if key_file else None,
        certificate_chain=_read(cert_file, "TLS certificate") if cert_file else None,
    )


def endpoint_credentials(config: ClientTlsConfig) -> grpc.ChannelCredentials:
    """Credentials of the gateway's channel to one TLS Triton endpoint."""
    return channel_credentials(config.ca_file, config.cert_file, config.key_file)
