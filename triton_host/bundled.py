"""Locate the ``tritonserver`` shipped in the ``nvidia-pytriton`` wheel and prepare its runtime.

The wheel carries the server binary, the python backend and one python-backend stub per
CPython minor version. Three things must hold for python-backend models to load (see the
project's environment notes):

1. the stub built for the interpreter's minor version sits in the backend directory passed
   with ``--backend-directory``;
2. the server runs with ``PATH``/``VIRTUAL_ENV`` of the environment whose packages the
   models import (the embedded interpreter finds its ``site-packages`` through ``PATH``);
3. ``LD_LIBRARY_PATH`` starts with that interpreter's ``LIBDIR`` so the stub links the
   matching ``libpython`` and not a system copy.

This module does those three things and nothing else; :mod:`triton_host.launcher` runs
the process.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

STUB_NAME = "triton_python_backend_stub"
PYTHON_BACKEND = "python"


class TritonNotInstalledError(RuntimeError):
    """The bundled ``tritonserver`` (from ``nvidia-pytriton``) cannot be found."""


@dataclass(frozen=True)
class Interpreter:
    """The Python environment the python-backend models run in."""

    prefix: Path  # the venv (``sys.prefix``) whose ``bin/`` goes first on PATH
    version: str  # "3.11"
    libdir: Path  # where ``libpython3.X.so`` lives

    @classmethod
    def current(cls) -> Interpreter:
        libdir = sysconfig.get_config_var("LIBDIR") or str(Path(sys.base_prefix) / "lib")
        return cls(
            prefix=Path(sys.prefix),
            version=f"{sys.version_info.major}.{sys.version_info.minor}",
            libdir=Path(libdir),
        )

    @classmethod
    def of_venv(cls, venv: Path) -> Interpreter:
        """Describe another environment by asking its own interpreter."""
        venv = venv.resolve()
        if venv == Path(sys.prefix).resolve():
            return cls.current()
        python = venv / "bin" / "python"
        if not python.exists():
            raise TritonNotInstalledError(f"no interpreter at {python}")
        probe = (
            "import json, sys, sysconfig; print(json.dumps({'version': '%d.%d' % "
            "sys.version_info[:2], 'libdir': sysconfig.get_config_var('LIBDIR')}))"
        )
        out = subprocess.run(
            [str(python), "-c", probe], check=True, capture_output=True, text=True, timeout=60
        ).stdout
        info = json.loads(out)
        return cls(prefix=venv, version=info["version"], libdir=Path(info["libdir"]))


@dataclass(frozen=True)
class TritonDistribution:
    """Paths inside the installed ``nvidia-pytriton`` wheel."""

    root: Path  # .../site-packages/pytriton/tritonserver

    @classmethod
    def find(cls) -> TritonDistribution:
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise TritonNotInstalledError(
                "the 'nvidia-pytriton' package is not installed; it carries the tritonserver "
                "binary (pip install nvidia-pytriton==0.7.0)"
            )
        root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
        dist = cls(root=root)
        if not dist.binary.exists():
            raise TritonNotInstalledError(f"no tritonserver binary at {dist.binary}")
        return dist

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def python_backend(self) -> Path:
        return self.root / "backends" / PYTHON_BACKEND

    @property
    def libs(self) -> Path:
        """Shared libraries auditwheel moved out of the binaries (libcudart, ...)."""
        return self.root.parent.parent / "nvidia_pytriton.libs"

    def stub(self, version: str) -> Path:
        path = self.root / "python_backend_stubs" / version / STUB_NAME
        if not path.exists():
            available = sorted(p.name for p in (self.root / "python_backend_stubs").iterdir())
            raise TritonNotInstalledError(
                f"no python backend stub for Python {version} in nvidia-pytriton "
                f"(available: {', '.join(available)})"
            )
        return path


def prepare_backend_directory(
    dest: Path, dist: TritonDistribution, interpreter: Interpreter
) -> Path:
    """Create ``dest/python/`` holding the python backend plus the stub for ``interpreter``.

    Returns ``dest``, the value for ``--backend-directory``.
    """
    backend = dest / PYTHON_BACKEND
    backend.mkdir(parents=True, exist_ok=True)
    for item in dist.python_backend.iterdir():
        if item.is_file():
            target = backend / item.name
            if not target.exists():
                target.symlink_to(item)
    stub_target = backend / STUB_NAME
    if not stub_target.exists():
        shutil.copy2(dist.stub(interpreter.version), stub_target)
    logger.debug("prepared python backend for Python %s in %s", interpreter.version, backend)
    return dest


def server_environment(
    dist: TritonDistribution, interpreter: Interpreter, base: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment ``tritonserver`` must run with (rules 2 and 3)."""
    env = dict(os.environ if base is None else base)
    bin_dir = str(interpreter.prefix / "bin")
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "/usr/bin:/bin")])
    env["VIRTUAL_ENV"] = str(interpreter.prefix)
    env.pop("PYTHONHOME", None)
    library_path = [str(interpreter.libdir), str(dist.libs)]
    if env.get("LD_LIBRARY_PATH"):
        library_path.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(library_path)
    return env
