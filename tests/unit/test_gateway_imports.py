"""The gateway stays light: it imports nothing of the trainer, the embedded Triton launcher or
the composition root, none of the heavy ML stacks, and its distribution dependencies (what the
gateway container installs) carry none of them either."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import gateway

ROOT = Path(__file__).resolve().parents[2]
# top-level packages the gateway must never import (tokenizers is fine: it may tokenize)
FORBIDDEN_PACKAGES = ("torch", "transformers", "deepspeed", "onnxruntime", "onnx", "pytriton")
# project modules outside the gateway it must never import
FORBIDDEN_MODULES = (
    "trainer",
    "triton_host.launcher",
    "triton_host.bundled",
    "lmforge.cli",
    "lmforge.up",
)
# distributions that must not be base (gateway) dependencies
FORBIDDEN_DISTRIBUTIONS = (
    "torch",
    "transformers",
    "deepspeed",
    "onnxruntime",
    "onnx",
    "nvidia-pytriton",
)


def _forbidden(name: str) -> bool:
    return name.split(".")[0] in FORBIDDEN_PACKAGES or any(
        name == m or name.startswith(m + ".") for m in FORBIDDEN_MODULES
    )


def gateway_modules() -> list[str]:
    return sorted(
        m.name
        for m in pkgutil.walk_packages(gateway.__path__, prefix="gateway.")
        if not m.name.endswith("__main__")
        and (not m.name.startswith("lmforge_client._proto") or m.name.endswith("_pb2"))
    )


def test_importing_every_gateway_module_loads_nothing_forbidden() -> None:
    modules = gateway_modules()
    assert {"gateway.server", "gateway.triton_backend", "gateway.cli"} <= set(modules)
    script = textwrap.dedent(
        f"""
        import importlib, sys
        for name in {modules!r}:
            importlib.import_module(name)
        print("\\n".join(sorted(sys.modules)))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    loaded = [m for m in result.stdout.split() if _forbidden(m)]
    assert loaded == [], f"the gateway loaded {loaded}"


def test_no_gateway_source_file_imports_anything_forbidden_even_lazily() -> None:
    offenders = []
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        if "_proto" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if _forbidden(n)]
    assert offenders == []


def test_base_dependencies_are_the_gateways_only() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = [
        dep.split(";")[0].split("[")[0].split("=")[0].split("<")[0].split(">")[0].strip().lower()
        for dep in project["dependencies"]
    ]
    assert "grpcio" in names and "tritonclient" in names
    assert [n for n in names if n in FORBIDDEN_DISTRIBUTIONS] == []
    extras = project["optional-dependencies"]
    assert "nvidia-pytriton==0.7.0" in extras["triton"]
    assert any(d.startswith("torch") for d in extras["train"])
