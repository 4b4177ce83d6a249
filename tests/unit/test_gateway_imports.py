"""The gateway stays light: it imports nothing of the trainer, the embedded Triton launcher or
the composition root, none of the heavy ML stacks, and its distribution dependencies (what the
gateway container installs) carry none of them either."""

from __future__ import annotations

import os
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


def _lint_imports(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_import_contracts_in_pyproject_hold() -> None:
    """Layers and forbidden imports (import-linter reads lazy imports too)."""
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_import_contracts_catch_an_arrow_that_runs_back_up(tmp_path: Path) -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    section = config["tool"]["importlinter"]
    roots = section["root_packages"]
    named = [m for c in section["contracts"] for m in c.get("forbidden_modules", [])]
    for module in [*roots, *(m for m in named if m.split(".")[0] in roots)]:
        parts = module.split(".")
        for depth in range(1, len(parts) + 1):  # every package on the way, then the module
            package = tmp_path.joinpath(*parts[:depth])
            if depth < len(parts) or len(parts) == 1:
                package.mkdir(exist_ok=True)
                (package / "__init__.py").touch()
            else:
                package.with_suffix(".py").touch()
    # planted: the gateway imports the trainer, the client imports the gateway
    (tmp_path / "gateway" / "planted.py").write_text("import trainer\n")
    (tmp_path / "lmforge_client" / "planted.py").write_text("from gateway import planted\n")
    lines = ["[tool.importlinter]", f"root_packages = {section['root_packages']!r}"]
    lines.append("include_external_packages = true")
    for contract in section["contracts"]:
        lines.append("[[tool.importlinter.contracts]]")
        lines += [
            f"{key} = {value!r}".replace("True", "true").replace("False", "false")
            for key, value in contract.items()
        ]
    (tmp_path / "pyproject.toml").write_text("\n".join(lines) + "\n")
    result = _lint_imports(tmp_path, pythonpath=tmp_path)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "gateway.planted -> trainer" in result.stdout
    assert "lmforge_client.planted -> gateway.planted" in result.stdout


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
