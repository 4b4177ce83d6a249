"""The pipeline config is strict and its paths are relative to the file; stage keys follow
their inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmforge.pipeline import Pipeline, PipelineError, load_pipeline


def write(tmp: Path, text: str) -> Path:
    (tmp / "t.yaml").write_text("output_dir: x\n", encoding="utf-8")
    path = tmp / "sub" / "p.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_paths_are_resolved_against_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "work_dir: w\ntask: sst2\nteacher: {config: ../t.yaml}\n"
        "report: {evaluation: {path: ../dev.tsv}, publish: out}\n",
    )
    config = load_pipeline(path)
    assert config.work_dir == tmp_path / "sub" / "w"
    assert config.teacher.config == tmp_path / "t.yaml"
    assert config.report is not None
    assert config.report.evaluation.path == tmp_path / "dev.tsv"
    assert config.report.publish == tmp_path / "sub" / "out"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("task: sst2\nteacher: {config: t.yaml}\n", "work_dir"),
        ("work_dir: w\ntask: sst2\nteacher: {config: t.yaml}\nstudnet: {}\n", "studnet"),
        ("work_dir: w\ntask: sst2\nteacher: {config: t.yaml}\nreport: 3\n", "report"),
        (
            "work_dir: w\ntask: sst2\nteacher: {config: t.yaml}\nrepository: {quantize: int4}\n",
            "quantize",
        ),
        ("- a list\n", "mapping"),
    ],
)
def test_bad_configs_are_named(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(PipelineError, match=needle):
        load_pipeline(write(tmp_path, text))


def test_a_changed_teacher_changes_every_key_downstream(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "work_dir: w\ntask: sst2\nteacher: {config: ../t.yaml}\nstudent: {config: ../t.yaml}\n",
    )
    done: list[str] = []

    def keys() -> dict[str, str]:
        pipeline = Pipeline(load_pipeline(path))
        for name in ("_teacher", "_student", "_repository"):
            setattr(pipeline, name, lambda folder, n=name: done.append(n))
        pipeline.run()
        return dict(pipeline.keys)

    first = keys()
    assert done == ["_teacher", "_student", "_repository"]
    assert keys() == first and len(done) == 3  # all done: nothing ran again
    (tmp_path / "t.yaml").write_text("output_dir: y\n", encoding="utf-8")
    second = keys()
    assert all(second[stage] != first[stage] for stage in ("teacher", "student", "repository"))
    assert done[3:] == ["_teacher", "_student", "_repository"]


def test_a_changed_quantization_runs_the_repository_and_the_report_again(tmp_path: Path) -> None:
    text = (
        "work_dir: w\ntask: sst2\nteacher: {config: ../t.yaml}\nstudent: {config: ../t.yaml}\n"
        "report: {evaluation: {path: ../dev.tsv}}\nrepository: {quantize: QUANT}\n"
    )
    path = write(tmp_path, text.replace("QUANT", "int8_static"))
    done: list[str] = []

    def run() -> dict[str, str]:
        pipeline = Pipeline(load_pipeline(path))
        for name in ("_teacher", "_student", "_repository", "_report"):
            setattr(pipeline, name, lambda folder, n=name: done.append(n))
        pipeline.run()
        return dict(pipeline.keys)

    first = run()
    path.write_text(text.replace("QUANT", "int8_dynamic"), encoding="utf-8")
    second = run()
    assert done[4:] == ["_repository", "_report"]  # teacher and student are kept
    assert second["report"] != first["report"] and second["student"] == first["student"]
