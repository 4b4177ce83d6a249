"""The tritonserver launcher's preparation steps (no server is started here)."""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

import pytest

from triton_host.bundled import (
    STUB_NAME,
    Interpreter,
    TritonDistribution,
    prepare_backend_directory,
    server_environment,
)
from triton_host.launcher import TritonServer, TritonStartError, free_ports


def test_free_ports_are_distinct() -> None:
    ports = free_ports(3)
    assert len(set(ports)) == 3 and all(p > 0 for p in ports)


def test_server_picks_free_ports_only_where_none_given() -> None:
    server = TritonServer(Path("."), grpc_port=18001)
    assert server.grpc_port == 18001
    assert len({server.grpc_port, server.http_port, server.metrics_port}) == 3
    assert server.grpc_url == "127.0.0.1:18001"
    assert server.http_url == f"http://127.0.0.1:{server.http_port}"


def test_server_rejects_unknown_model_control_mode() -> None:
    with pytest.raises(ValueError, match="model_control_mode"):
        TritonServer(Path("."), model_control_mode="sometimes")


def test_command_passes_repository_ports_and_backend_directory(tmp_path: Path) -> None:
    server = TritonServer(
        tmp_path, model_control_mode="explicit", extra_args=["--exit-timeout-secs=5"]
    )
    cmd = server.command(tmp_path / "backends", Path("/bin/tritonserver"))
    assert f"--model-repository={tmp_path.resolve()}" in cmd
    assert f"--backend-directory={tmp_path / 'backends'}" in cmd
    assert f"--grpc-port={server.grpc_port}" in cmd
    assert "--model-control-mode=explicit" in cmd
    assert cmd[-1] == "--exit-timeout-secs=5"


def test_environment_puts_venv_first_on_path_and_libdir_first_on_library_path() -> None:
    dist = TritonDistribution.find()
    interpreter = Interpreter.current()
    env = server_environment(dist, interpreter, {"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/x"})
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.prefix) / "bin")
    assert env["VIRTUAL_ENV"] == sys.prefix
    parts = env["LD_LIBRARY_PATH"].split(os.pathsep)
    assert parts[0] == sysconfig.get_config_var("LIBDIR")
    assert parts[-1] == "/x"


def test_backend_directory_holds_python_backend_and_matching_stub(tmp_path: Path) -> None:
    dist = TritonDistribution.find()
    interpreter = Interpreter.current()
    backends = prepare_backend_directory(tmp_path / "backends", dist, interpreter)
    python = backends / "python"
    assert (python / "libtriton_python.so").exists()
    assert (python / "triton_python_backend_utils.py").exists()
    stub = python / STUB_NAME
    expected = dist.stub(f"{sys.version_info.major}.{sys.version_info.minor}")
    assert stub.read_bytes() == expected.read_bytes()
    assert os.access(stub, os.X_OK)


def test_start_on_missing_repository_raises_typed_error(tmp_path: Path) -> None:
    with pytest.raises(TritonStartError, match="not a directory"):
        TritonServer(tmp_path / "nope").start()
