"""``lmforge pipeline`` end to end on tiny models: train, distill, quantize, serve, report —
and a killed pipeline that, run again, skips what it finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_training_deepspeed import REPO, env, tiny_run_config

pytestmark = pytest.mark.integration


def pipeline_files(tmp: Path) -> Path:
    teacher = tiny_run_config(tmp, "unused")
    teacher["deepspeed"] = {"zero_stage": 0, "micro_batch_size": 16}
    teacher["training"] = {"max_steps": 40, "log_every": 10}
    teacher["tasks"][0]["dev"] = {"path": str(tmp / "dev.tsv")}
    student: dict[str, Any] = {**teacher, "model": {"student": {"layers": [1]}, "max_length": 24}}
    student["distill"] = {"teacher": "set-by-the-pipeline", "alpha": 0.3}
    (tmp / "teacher.yaml").write_text(yaml.safe_dump(teacher), encoding="utf-8")
    (tmp / "student.yaml").write_text(yaml.safe_dump(student), encoding="utf-8")
    pipeline = {
        "work_dir": "work",
        "task": "sentiment",
        "teacher": {"config": "teacher.yaml"},
        "student": {"config": "student.yaml"},
        "repository": {"max_length": 24, "quantize": "int8_dynamic", "max_drop": 0.2},
        "smoke": {"texts": ["a great movie", "a boring movie"]},
        "report": {"evaluation": {"path": "dev.tsv", "limit": 64}},
    }
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline), encoding="utf-8")
    return path


def run(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lmforge", "pipeline", str(path)],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_killed_pipeline_resumes_and_skips_the_stages_it_finished(tmp_path: Path) -> None:
    path = pipeline_files(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmforge", "pipeline", str(path)],
        cwd=REPO,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    work = tmp_path / "work"
    deadline = time.monotonic() + 300
    while not list(work.glob("student-*")):  # the teacher is done, the student has begun
        assert proc.poll() is None, "the pipeline ended before the student stage"
        assert time.monotonic() < deadline, "no student stage within 300 s"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    teacher_dirs = list(work.glob("teacher-*"))
    assert len(teacher_dirs) == 1 and (teacher_dirs[0] / "stage.json").is_file()
    assert not (next(work.glob("student-*")) / "stage.json").is_file()

    result = run(path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "[1/5] teacher: done earlier" in result.stdout
    assert "[2/5] student: running" in result.stdout
    assert list(work.glob("teacher-*")) == teacher_dirs  # not trained again
    smoke = json.loads(next(work.glob("smoke-*/answers.json")).read_text())
    assert [a["label"] for a in smoke["answers"]] == ["positive", "negative"]
    agreement = smoke["agreement"]  # served through Triton and the gateway == in-process ORT
    assert agreement["rows"] > 10 and agreement["same_label"] == agreement["rows"]
    build = json.loads(next(work.glob("repository-*/build.json")).read_text())
    assert build["models"][0]["quantization"]["metric"]["metric"] == "accuracy"
    report = json.loads(next(work.glob("report-*/report.json")).read_text())
    assert [r["model"] for r in report] == ["teacher", "student", "student-int8_dynamic"]
    assert report[1]["layers"] == 1 and report[0]["layers"] == 2

    again = run(path)  # nothing changed: every stage is skipped
    assert again.returncode == 0
    assert again.stdout.count("done earlier") == 5
