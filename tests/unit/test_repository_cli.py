"""``lmforge repo`` and ``lmforge triton`` registration stays light and parses its arguments."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from trainer.repository import commands
from triton_host import launcher


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmforge")
    subparsers = parser.add_subparsers(dest="command")
    commands.register(subparsers)
    launcher.register(subparsers)
    return parser


def test_registering_commands_imports_neither_torch_nor_gateway() -> None:
    code = (
        "import sys, trainer.repository.commands, triton_host.launcher; "
        "print(sorted(m for m in ('torch', 'transformers', 'onnx', 'gateway') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_repo_build_and_demo_arguments() -> None:
    args = _parser().parse_args(["repo", "build", "spec.yaml", "--out", "repo"])
    assert args.spec == "spec.yaml" and args.out == "repo" and callable(args.handler)
    demo = _parser().parse_args(["repo", "demo", "--out", "repo"])
    assert demo.min_accuracy == 0.85 and demo.handler is not args.handler


def test_triton_command_arguments() -> None:
    args = _parser().parse_args(["triton", "--repository", "r", "--grpc-port", "9001"])
    assert args.repository == "r" and args.grpc_port == 9001 and args.http_port is None
    assert callable(args.handler)


def test_repo_check_reports_missing_checkpoint(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("models:\n  - {name: m, task: embed, checkpoint: nowhere}\n")
    args = _parser().parse_args(["repo", "check", str(spec)])
    assert args.handler(args) == 1


def test_repo_build_returns_error_code_for_invalid_spec(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("models:\n  - {name: m, task: dance, checkpoint: x}\n")
    args = _parser().parse_args(["repo", "build", str(spec), "--out", str(tmp_path / "out")])
    assert args.handler(args) == 1
    assert not (tmp_path / "out").exists()
