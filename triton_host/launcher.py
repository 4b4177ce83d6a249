"""Run the bundled ``tritonserver`` as a managed subprocess, and the ``lmforge triton`` command.

>>> with TritonServer(Path("repo")) as server:
...     client = tritonclient.grpc.InferenceServerClient(server.grpc_url)

``start()`` prepares the backend directory and environment (:mod:`triton_host.bundled`),
picks free ports where none are given and launches the server in its own session (process
group); ``wait_ready()`` polls ``/v2/health/ready``; ``stop()`` sends SIGTERM, then SIGKILL.
Whether it stopped or died (even by SIGKILL), ``stop()`` and ``cleanup()`` leave nothing behind:
the python-backend stubs left in its process group are killed and the shared-memory regions
under its own prefix (``/dev/shm/<prefix>*``) are removed. ``restart()`` starts it again on the
same ports, so clients reconnect. The server's output goes to a log file and to this module's
logger; a server that exits or is not ready in time raises :class:`TritonStartError` carrying
the tail of that log.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO

import psutil

from lmforge_core.net import LOCALHOST, free_ports
from triton_host.bundled import (
    Interpreter,
    TritonDistribution,
    TritonNotInstalledError,
    prepare_backend_directory,
    server_environment,
)

logger = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
MODEL_CONTROL_MODES = ("none", "poll", "explicit")
_TAIL_LINES = 60

__all__ = [
    "TritonNotInstalledError",
    "TritonServer",
    "TritonStartError",
    "free_ports",
    "register",
]


class TritonStartError(RuntimeError):
    """tritonserver exited or did not become ready; ``log_tail`` holds its last lines."""

    def __init__(self, reason: str, log_tail: str, returncode: int | None = None) -> None:
        self.reason = reason
        self.log_tail = log_tail
        self.returncode = returncode
        super().__init__(f"{reason}\n--- tritonserver log (tail) ---\n{log_tail}")


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM it when the parent goes away."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes whose process group is ``pgid``."""
    members = []
    for process in psutil.process_iter(["status"]):
        if process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            if os.getpgid(process.pid) == pgid:
                members.append(process.pid)
        except OSError:  # gone meanwhile
            continue
    return members


def kill_group(pgid: int, timeout: float = 5.0) -> list[int]:
    """SIGKILL every live member of process group ``pgid``; returns their pids."""
    members = group_members(pgid)
    if not members:
        return []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return members


def remove_shm_regions(prefix: str, folder: Path = SHM_DIR) -> list[str]:
    """Delete the shared-memory regions whose names start with ``prefix``; returns them."""
    if not prefix:
        raise ValueError("an empty prefix would match every region")
    removed = []
    for region in folder.glob(f"{prefix}*"):
        with contextlib.suppress(FileNotFoundError):
            region.unlink()
            removed.append(region.name)
    return removed


class TritonServer:
    """One ``tritonserver`` process serving ``repository``; usable as a context manager."""

    def __init__(
        self,
        repository: Path,
        *,
        grpc_port: int | None = None,
        http_port: int | None = None,
        metrics_port: int | None = None,
        host: str = LOCALHOST,
        model_control_mode: str = "none",
        log_verbose: int = 0,
        log_file: Path | None = None,
        extra_args: Sequence[str] = (),
        venv: Path | None = None,
    ) -> None:
        if model_control_mode not in MODEL_CONTROL_MODES:
            raise ValueError(
                f"model_control_mode must be one of {MODEL_CONTROL_MODES}, got {model_control_mode!r}"
            )
        self.repository = Path(repository).resolve()
        wanted = [grpc_port, http_port, metrics_port]
        picked = iter(free_ports(sum(p is None for p in wanted)))
        self.grpc_port, self.http_port, self.metrics_port = (
            p if p is not None else next(picked) for p in wanted
        )
        self.host = host
        self.model_control_mode = model_control_mode
        self.log_verbose = log_verbose
        self.extra_args = tuple(extra_args)
        self._venv = venv
        self._log_file_arg = log_file
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._reader: threading.Thread | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self.log_path: Path | None = None
        self.shm_prefix = ""

    # -- addresses ---------------------------------------------------------------------
    @property
    def _client_host(self) -> str:
        return LOCALHOST if self.host in ("0.0.0.0", "") else self.host

    @property
    def grpc_url(self) -> str:
        return f"{self._client_host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self._client_host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._client_host}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self) -> str:
        return "".join(self._tail)

    # -- lifecycle ---------------------------------------------------------------------
    def command(self, backend_directory: Path, binary: Path) -> list[str]:
        # A distinct shared-memory prefix lets several servers share one machine, and lets
        # cleanup() find exactly this server's regions.
        if not self.shm_prefix:
            self.shm_prefix = f"lmforge_{uuid.uuid4().hex[:12]}"
        shm_prefix = self.shm_prefix
        return [
            str(binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={backend_directory}",
            f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            f"--model-control-mode={self.model_control_mode}",
            f"--log-verbose={self.log_verbose}",
            *self.extra_args,
        ]

    def start(self) -> TritonServer:
        if self._process is not None:
            raise RuntimeError("this TritonServer was already started")
        if not self.repository.is_dir():
            raise TritonStartError(f"model repository {self.repository} is not a directory", "")
        dist = TritonDistribution.find()
        venv = self._venv
        interpreter = Interpreter.current() if venv is None else Interpreter.of_venv(venv)
        self._workdir = tempfile.TemporaryDirectory(prefix="lmforge-triton-")
        workdir = Path(self._workdir.name)
        backends = prepare_backend_directory(workdir / "backends", dist, interpreter)
        self.log_path = self._log_file_arg or workdir / "tritonserver.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = self.command(backends, dist.binary)
        logger.info(
            "starting tritonserver: repository=%s grpc=%s http=%s",
            self.repository,
            self.grpc_url,
            self.http_url,
        )
        logger.debug("command: %s", " ".join(cmd))
        self._process = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=server_environment(dist, interpreter),
            cwd=workdir,
            start_new_session=True,  # a Ctrl-C in the terminal reaches us, we stop it
            preexec_fn=_die_with_parent,
        )
        log_handle = self.log_path.open("ab")
        self._reader = threading.Thread(
            target=self._pump_output,
            args=(self._process.stdout, log_handle),
            name=f"tritonserver-log-{self._process.pid}",
            daemon=True,
        )
        self._reader.start()
        return self

    def _pump_output(self, stream: IO[bytes] | None, sink: IO[bytes]) -> None:
        if stream is None:
            return
        with sink, stream:
            for raw in iter(stream.readline, b""):
                sink.write(raw)
                sink.flush()
                line = raw.decode("utf-8", errors="replace")
                self._tail.append(line)
                logger.debug("tritonserver: %s", line.rstrip())

    def ready(self) -> bool:
        """True when the server answers ``/v2/health/ready`` with 200."""
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def wait_ready(self, timeout: float = 120.0) -> None:
        if self._process is None:
            raise RuntimeError("start() the server before waiting for it")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self._process.poll()
            if code is not None:
                self._join_reader()
                raise TritonStartError(
                    f"tritonserver exited with code {code} before becoming ready",
                    self.log_tail(),
                    code,
                )
            if self.ready():
                logger.info("tritonserver ready (pid %d)", self._process.pid)
                return
            time.sleep(0.25)
        tail = self.log_tail()
        self.stop()
        raise TritonStartError(f"tritonserver not ready after {timeout:.0f} s", tail)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; then :meth:`cleanup`.
        Returns the exit code."""
        process = self._process
        if process is not None and process.poll() is None:
            logger.info("stopping tritonserver (pid %d)", process.pid)
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                logger.warning("tritonserver did not stop in %.0f s; killing it", timeout)
                with contextlib.suppress(ProcessLookupError):
                    # the stubs share its process group; take them along
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        self.cleanup()
        self._join_reader()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
        return None if process is None else process.returncode

    def cleanup(self) -> list[str]:
        """After the server ended (stopped, crashed or SIGKILLed): kill what is left of its
        process group (python-backend stubs) and remove its shared-memory regions. Returns
        what it removed (``pid <n>`` and file names); does nothing while the server runs."""
        process = self._process
        if process is None or process.poll() is None:
            return []
        removed = [f"pid {pid}" for pid in kill_group(process.pid)]
        if self.shm_prefix:
            removed += remove_shm_regions(self.shm_prefix)
        if removed:
            logger.info("tritonserver (pid %d) left %s; removed", process.pid, ", ".join(removed))
        return removed

    def restart(self, ready_timeout: float = 120.0) -> None:
        """Stop (or clean up after) the server and start it again on the same ports."""
        self.stop()
        self._process = None
        self._tail.clear()
        self.shm_prefix = ""
        self.start()
        self.wait_ready(ready_timeout)

    def _join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=5)

    def __enter__(self) -> TritonServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# -- lmforge triton -------------------------------------------------------------------------
def _serve(args: argparse.Namespace) -> int:
    server = TritonServer(
        Path(args.repository),
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        host=args.host,
        model_control_mode=args.model_control_mode,
        log_verbose=args.log_verbose,
        log_file=Path(args.log_file) if args.log_file else None,
    )
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s", signal.Signals(signum).name)
        stop_requested.set()

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        server.wait_ready(args.ready_timeout)
        print(f"tritonserver ready: grpc {server.grpc_url}  http {server.http_url}", flush=True)
        print(f"metrics {server.metrics_url}  log {server.log_path}", flush=True)
        while not stop_requested.wait(0.5):
            if not server.is_running():
                logger.error("tritonserver exited with code %s", server.returncode)
                return 1
        return 0
    except (TritonStartError, TritonNotInstalledError) as exc:
        logger.error("%s", exc)
        return 1
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "triton",
        help="run the bundled tritonserver on a model repository (foreground)",
        description="Start the tritonserver from the nvidia-pytriton wheel on a model "
        "repository, print its URLs once ready and stop it on SIGTERM/SIGINT.",
    )
    parser.add_argument("--repository", required=True, help="model repository folder")
    parser.add_argument("--grpc-port", type=int, default=None, help="default: a free port")
    parser.add_argument("--http-port", type=int, default=None, help="default: a free port")
    parser.add_argument("--metrics-port", type=int, default=None, help="default: a free port")
    parser.add_argument("--host", default=LOCALHOST, help="address to bind (default %(default)s)")
    parser.add_argument("--model-control-mode", default="none", choices=MODEL_CONTROL_MODES)
    parser.add_argument("--log-verbose", type=int, default=0)
    parser.add_argument("--log-file", default=None, help="also write the server log here")
    parser.add_argument("--ready-timeout", type=float, default=180.0, help="seconds")
    parser.set_defaults(handler=_serve)
