"""What the gateway image installs: its Dockerfile's build stage, replayed without Docker.

The COPY sources of ``deploy/docker/gateway.Dockerfile`` are copied into an empty folder and
every ``pip install`` of that stage is replayed as ``pip wheel --no-deps`` (the same
setuptools package discovery); the wheels' file lists are the image's Python files. None of
them may be benchmark, drill, rollout, trainer, host-side Triton or composition-root code.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.integration.test_deploy_manifests import instructions

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "docker" / "gateway.Dockerfile"
FORBIDDEN_TOP = ("benchmarks", "rollout", "trainer", "triton_host", "lmforge", "tests")


def _build_stage() -> list[tuple[str, str]]:
    steps = instructions(DOCKERFILE)
    second = [i for i, (k, _) in enumerate(steps) if k == "FROM"][1]
    return steps[:second]


@pytest.fixture(scope="module")
def image_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    context = tmp_path_factory.mktemp("context")
    wheels = tmp_path_factory.mktemp("wheels")
    targets: list[str] = []
    for keyword, arguments in _build_stage():
        if keyword == "COPY" and "--from" not in arguments:
            *sources, _dest = arguments.split()
            for source in sources:
                src = ROOT / source
                dest = context / (_dest if len(sources) == 1 and _dest != "./" else source)
                if src.is_dir():
                    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, dest)
        if keyword == "RUN" and "pip install" in arguments:
            for command in arguments.split("&&"):
                targets += [w for w in command.split() if w == "." or w.startswith("./")]
    assert targets == ["./clients/python", "."], targets
    for target in targets:
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
             "-w", str(wheels), target],
            cwd=context, check=True, capture_output=True, timeout=300,
        )  # fmt: skip
    files: list[str] = []
    for wheel in sorted(wheels.glob("*.whl")):
        files += zipfile.ZipFile(wheel).namelist()
    return files


def test_the_gateway_image_installs_no_benchmarks_drills_trainer_or_root_code(
    image_files: list[str],
) -> None:
    tops = {
        name.split("/")[0] for name in image_files if not name.split("/")[0].endswith(".dist-info")
    }
    assert {"gateway", "lmforge_client", "lmforge_core"} <= tops
    assert not tops & set(FORBIDDEN_TOP), sorted(tops & set(FORBIDDEN_TOP))


def test_the_gateway_image_carries_only_the_in_triton_files_the_gateway_imports(
    image_files: list[str],
) -> None:
    in_triton = sorted(n for n in image_files if n.startswith("triton_models/"))
    assert "triton_models/runtime/contract.py" in in_triton
    assert "triton_models/runtime/text.py" in in_triton
    models = [n for n in in_triton if n.split("/")[1] in ("generate", "onnx_encoder", "tokenize")]
    assert models == [], models
