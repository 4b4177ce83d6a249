"""A checkout stands alone: a copy of every file git would ship, alone in an empty folder,
resolves every dataset path of every example config and of the demo, and no tracked file
points outside the checkout."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# a relative path that climbs: "../x", "../../x/y.tsv" (resolved against the file that names it)
CLIMBING = re.compile(r"(?<![\w./])((?:\.\./)+[\w.-]+(?:/[\w.-]+)*)")


def _shipped_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and (ROOT / name).is_file()]


@pytest.fixture(scope="module")
def lone_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    copy = tmp_path_factory.mktemp("empty") / "lmforge"
    for name in _shipped_files():
        target = copy / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    assert sorted(p.name for p in copy.parent.iterdir()) == ["lmforge"]  # nothing beside it
    return copy


def test_every_example_config_and_the_demo_find_their_data_inside_the_copy(
    lone_copy: Path,
) -> None:
    script = textwrap.dedent(
        """
        import json, pathlib
        import trainer
        from trainer.datasets import dataset_file
        from trainer.repository.demo import DEMO_RUN_CONFIG
        from trainer.training.config import load_config

        root = pathlib.Path.cwd().resolve()
        assert pathlib.Path(trainer.__file__).resolve().is_relative_to(root), trainer.__file__
        paths = {}
        for config_file in sorted((root / "trainer" / "configs").glob("*.yaml")):
            config = load_config(config_file)
            for task in config.tasks:
                for split, source in (("train", task.train), ("dev", task.dev)):
                    if source is not None:
                        paths[f"{config_file.name}:{task.name}:{split}"] = str(source.path)
        paths["demo:dev"] = str(dataset_file("sst2", "dev"))
        paths["demo:run"] = str(DEMO_RUN_CONFIG)
        for task in load_config(DEMO_RUN_CONFIG).tasks:
            paths["demo:train"] = str(task.train.path)
        print(json.dumps(paths))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMFORGE_")}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=lone_copy,
        env={**env, "PYTHONPATH": str(lone_copy)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    paths = {key: Path(value) for key, value in json.loads(result.stdout).items()}
    assert len(paths) >= 30  # every example config has its data
    outside = {key: str(p) for key, p in paths.items() if not p.is_relative_to(lone_copy)}
    missing = {key: str(p) for key, p in paths.items() if not p.is_file()}
    assert outside == {} and missing == {}


def climbs_out(name: str, text: str) -> list[str]:
    """The relative paths in ``text`` (a file at ``name`` in the checkout) that, resolved against
    that file's folder, land outside the checkout."""
    folder = (ROOT / name).parent
    return [
        path
        for path in CLIMBING.findall(text)
        if not (folder / path).resolve().is_relative_to(ROOT.resolve())
    ]


def test_the_climbing_check_catches_a_path_beside_the_checkout() -> None:
    beside = "../" * 3 + "data/sst2/dev.tsv"  # built, so this file holds no such path itself
    assert climbs_out("trainer/configs/x.yaml", f"path: {beside}") == [beside]
    assert climbs_out("trainer/configs/x.yaml", "path: ../../datasets/sst2/dev.tsv") == []


def test_no_shipped_file_points_outside_the_checkout() -> None:
    offenders = {}
    for name in _shipped_files():
        if name.startswith("datasets/"):
            continue
        text = (ROOT / name).read_text(encoding="utf-8", errors="ignore")
        found = climbs_out(name, text)
        if found:
            offenders[name] = found
    assert offenders == {}
