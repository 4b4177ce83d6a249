"""``lmforge train`` CLI: registration, launcher command line, no torch at import time."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from trainer.training.commands import ENTRY_MODULE, handle, launcher_command, register


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser()
    register(root.add_subparsers(dest="command"))
    return root


def test_train_is_registered_with_a_handler() -> None:
    args = parser().parse_args(["train", "run.yaml", "--resume", "--num-ranks", "2"])
    assert args.target == "run.yaml" and args.resume and args.num_ranks == 2
    assert args.handler is handle


def test_launcher_command_uses_deepspeeds_runner_on_the_entry_module() -> None:
    cmd = launcher_command(
        "/r/run.yaml", resume=True, num_ranks=2, hostfile=None, master_port=29600
    )
    assert cmd[1:3] == ["-m", "deepspeed.launcher.runner"]
    assert cmd[cmd.index("--num_gpus") : cmd.index("--num_gpus") + 2] == ["--num_gpus", "2"]
    assert cmd[-3:] == [ENTRY_MODULE, "/r/run.yaml", "--resume"]
    assert "--module" in cmd


def test_hostfile_is_passed_through_for_multi_node_runs() -> None:
    cmd = launcher_command(
        "run.yaml", resume=False, num_ranks=None, hostfile="hosts", master_port=1
    )
    assert cmd[cmd.index("--hostfile") + 1] == "hosts"
    assert "--num_gpus" not in cmd and "--resume" not in cmd


def test_check_validates_the_config_without_launching(tmp_path: Path) -> None:
    bad = tmp_path / "run.yaml"
    bad.write_text("model: {pretrained: m}\ntasks: []\ntraining: {max_steps: 1}\noutput_dir: o\n")
    args = parser().parse_args(["train", str(bad), "--check"])
    assert handle(args) == 1


def test_export_without_its_arguments_prints_usage() -> None:
    assert handle(parser().parse_args(["train", "export"])) == 2


def test_commands_module_does_not_import_torch() -> None:
    code = "import sys, trainer.training.commands; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _valid_config(tmp_path: Path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(
        "model: {pretrained: m}\n"
        "tasks: [{name: t, type: classification, train: {path: t.tsv}, text_fields: [x], label_field: y}]\n"
        "training: {max_steps: 1}\noutput_dir: out\n"
    )
    return path


def test_resume_without_a_checkpoint_fails_before_launching(tmp_path: Path) -> None:
    args = parser().parse_args(["train", str(_valid_config(tmp_path)), "--resume"])
    assert handle(args) == 1


def test_fresh_run_into_a_folder_with_checkpoints_fails_before_launching(tmp_path: Path) -> None:
    path = _valid_config(tmp_path)
    (tmp_path / "out" / "checkpoints").mkdir(parents=True)
    (tmp_path / "out" / "checkpoints" / "complete.json").write_text('{"tag": "step1"}')
    assert handle(parser().parse_args(["train", str(path), "--check"])) == 1
    assert handle(parser().parse_args(["train", str(path), "--resume", "--check"])) == 0


def test_export_flags_on_a_training_run_are_refused_not_ignored(tmp_path: Path) -> None:
    # `lmforge train RUN.yaml --task t --out d` would otherwise train again from scratch
    args = parser().parse_args(["train", str(tmp_path / "run.yaml"), "--task", "t", "--out", "d"])
    assert handle(args) == 2
