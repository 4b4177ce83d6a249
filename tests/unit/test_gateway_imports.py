"""The gateway must stay light: no torch, transformers or deepspeed, even indirectly."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import textwrap

import gateway

HEAVY = ("torch", "transformers", "deepspeed")


def gateway_modules() -> list[str]:
    return sorted(
        m.name
        for m in pkgutil.walk_packages(gateway.__path__, prefix="gateway.")
        if not m.name.startswith("gateway._proto") or m.name.endswith("_pb2")
    )


def test_gateway_modules_import_without_torch_transformers_or_deepspeed() -> None:
    modules = gateway_modules()
    assert "gateway.server" in modules and "gateway.triton_backend" in modules
    script = textwrap.dedent(
        f"""
        import importlib, sys
        for name in {modules!r}:
            importlib.import_module(name)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
        print(",".join(heavy))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"heavy modules imported: {result.stdout.strip()}"
