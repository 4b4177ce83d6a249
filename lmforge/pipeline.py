"""``lmforge pipeline PIPELINE.yaml``: train → distill → quantize/export → serve → report.

Stages run in order; each writes into ``work_dir/<stage>-<key>/`` where the key is a hash of
the stage's own settings and the keys of the stages it reads from, and marks itself done
with ``stage.json`` last. A re-run skips every stage whose output is done; a change upstream
changes the keys downstream, so exactly the stages whose inputs changed run again; a killed
training stage resumes from its last checkpoint.

    work_dir: ../runs/pipeline_sst2
    task: sst2                                   # the task that is served
    teacher: {config: ../trainer/configs/sst2_minilm.yaml}
    student: {config: ../trainer/configs/sst2_student.yaml}   # its distill.teacher is set here
    repository: {max_length: 128, quantize: int8_dynamic, max_drop: 0.01}
    smoke: {texts: ["a gripping film", "a dull film"]}
    report: {evaluation: {path: ../datasets/sst2/dev.tsv}, serve: {concurrency: 8}}
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field

from benchmarks.report import Evaluation, ReportConfig, ReportModel, ServeLoad, run_report
from lmforge_core.strict import StrictModel, load_yaml_mapping, validate

logger = logging.getLogger(__name__)

DONE = "stage.json"


class PipelineError(RuntimeError):
    """The pipeline config is invalid or a stage failed."""


class TrainStage(StrictModel):
    config: Path  # an ``lmforge train`` run config; output_dir is the stage's folder


class RepositoryStage(StrictModel):
    max_length: int = Field(default=128, ge=8)
    quantize: Literal["none", "int8_dynamic", "int8_static"] = "int8_dynamic"
    max_drop: float = Field(default=0.01, ge=0, le=1)  # task-metric gate of the quantization
    # sentences (a TSV/CSV/JSONL file with the report's text column) for the parity check and
    # the static INT8 calibration; default: the builder's own few sentences
    calibration_data: Path | None = None
    calibration_samples: int = Field(default=256, ge=1, le=10_000)


class SmokeStage(StrictModel):
    texts: tuple[str, ...] = Field(min_length=1)


class ReportStage(StrictModel):
    evaluation: Evaluation
    serve: ServeLoad | None = None
    publish: Path | None = None  # also copy report.{json,md,png} into this folder


class PipelineConfig(StrictModel):
    work_dir: Path
    task: str
    teacher: TrainStage
    student: TrainStage | None = None
    repository: RepositoryStage = RepositoryStage()
    smoke: SmokeStage | None = None
    report: ReportStage | None = None


def load_pipeline(path: Path) -> PipelineConfig:
    data = load_yaml_mapping(path, what="pipeline config", error=PipelineError)
    base = path.resolve().parent

    def fix(value: Any) -> Any:  # leave what is not a path for the validation to name
        return str((base / value).resolve()) if isinstance(value, str) else value

    if isinstance(data, dict):
        if "work_dir" in data:
            data["work_dir"] = fix(data["work_dir"])
        for stage in ("teacher", "student"):
            if isinstance(data.get(stage), dict):
                data[stage]["config"] = fix(data[stage]["config"])
        repository = data.get("repository")
        if isinstance(repository, dict) and "calibration_data" in repository:
            repository["calibration_data"] = fix(repository["calibration_data"])
        report = data.get("report")
        report = report if isinstance(report, dict) else {}
        if isinstance(report.get("evaluation"), dict):
            report["evaluation"]["path"] = fix(report["evaluation"]["path"])
        if report.get("publish"):
            report["publish"] = fix(report["publish"])
    return validate(
        PipelineConfig, data, source=str(path), what="pipeline config", error=PipelineError
    )


def _key(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _file_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


class Pipeline:
    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self.dirs: dict[str, Path] = {}
        self.keys: dict[str, str] = {}

    def _stage_dir(self, stage: str, *inputs: Any) -> Path:
        self.keys[stage] = _key(stage, *inputs)
        folder = self.config.work_dir / f"{stage}-{self.keys[stage]}"
        self.dirs[stage] = folder
        return folder

    def run(self) -> dict[str, Path]:
        c = self.config
        stages: list[tuple[str, Callable[[Path], None], tuple[Any, ...]]] = [
            ("teacher", self._teacher, (_file_text(c.teacher.config),)),
        ]
        if c.student is not None:
            stages.append(("student", self._student, (_file_text(c.student.config), "teacher")))
        source = "student" if c.student is not None else "teacher"
        stages.append(("repository", self._repository, (c.repository.model_dump(), source)))
        if c.smoke is not None:
            stages.append(("smoke", self._smoke, (c.smoke.model_dump(), "repository")))
        if c.report is not None:
            # the report measures the student as the repository stage compresses it
            report_inputs = (c.report.model_dump(mode="json"), source, "repository")
            stages.append(("report", self._report, report_inputs))
        for number, (name, work, inputs) in enumerate(stages, start=1):
            upstream = [self.keys[i] for i in inputs if isinstance(i, str) and i in self.keys]
            folder = self._stage_dir(name, *inputs, *upstream)
            prefix = f"[{number}/{len(stages)}] {name}"
            if (folder / DONE).is_file():
                print(f"{prefix}: done earlier ({folder.name}), skipped", flush=True)
                continue
            print(f"{prefix}: running in {folder}", flush=True)
            started = time.monotonic()
            folder.mkdir(parents=True, exist_ok=True)
            work(folder)
            seconds = time.monotonic() - started
            (folder / DONE).write_text(
                json.dumps({"stage": name, "key": self.keys[name], "seconds": seconds}),
                encoding="utf-8",
            )
            print(f"{prefix}: finished in {seconds:.0f} s", flush=True)
        return self.dirs

    # -- stages ----------------------------------------------------------------------------
    def _train(self, folder: Path, config_path: Path, teacher: Path | None) -> None:
        data = yaml.safe_load(_file_text(config_path))
        data["output_dir"] = str(folder / "run")
        base = config_path.resolve().parent
        for task in data.get("tasks", []):  # the copy lives elsewhere: absolute data paths
            for split in ("train", "dev"):
                if split in task and not Path(task[split]["path"]).is_absolute():
                    task[split]["path"] = str((base / task[split]["path"]).resolve())
        if teacher is not None:
            data.setdefault("distill", {})["teacher"] = str(teacher)
        run_config = folder / "run.yaml"
        run_config.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        resume = (folder / "run" / "checkpoints" / "complete.json").is_file()
        if not resume:
            shutil.rmtree(folder / "run", ignore_errors=True)  # a run killed before its checkpoint
        command = [sys.executable, "-m", "lmforge", "train", str(run_config)]
        if resume:
            command.append("--resume")
            print("  resuming the killed run from its last checkpoint", flush=True)
        if subprocess.call(command) != 0:
            raise PipelineError(f"training in {folder} failed")

    def _bundle(self, stage: str) -> Path:
        run = self.dirs[stage] / "run"
        return run / "best" if (run / "best").is_dir() else run / "model"

    def _export(self, stage: str) -> Path:
        return self.dirs[stage] / "run" / "exports" / self.config.task

    def _teacher(self, folder: Path) -> None:
        self._train(folder, self.config.teacher.config, None)

    def _student(self, folder: Path) -> None:
        assert self.config.student is not None
        self._train(folder, self.config.student.config, self._bundle("teacher"))

    def _repository(self, folder: Path) -> None:
        from trainer.repository.builder import build_repository
        from trainer.repository.spec import parse_spec

        source = "student" if self.config.student is not None else "teacher"
        r = self.config.repository
        model: dict[str, Any] = {
            "name": self.config.task.replace("_", "-").lower(),
            "task": "classify",
            "checkpoint": str(self._export(source)),
            "max_length": r.max_length,
        }
        evaluation = self.config.report.evaluation if self.config.report else None
        column = evaluation.text_column if evaluation else "sentence"
        if r.calibration_data is not None:
            dataset = {"path": str(r.calibration_data), "column": column}
            model["parity"] = {"dataset": {**dataset, "limit": r.calibration_samples}}
        if r.quantize != "none":
            model["quantize"] = {"method": r.quantize, "min_cosine": 0.9}
            if r.quantize == "int8_static":
                model["quantize"]["calibration"] = {"samples": r.calibration_samples}
            # the gate is a choice (keep INT8 or not): made on the rows the training run held
            # out for selection when it has them, so the report's evaluation stays unseen
            held_out = self.dirs[source] / "run" / "validation" / f"{self.config.task}.tsv"
            gate_path = held_out if held_out.is_file() else None
            if gate_path is None and evaluation is not None:
                gate_path = evaluation.path
            if gate_path is not None and evaluation is not None:
                model["quantize"]["gate"] = {
                    "path": str(gate_path),
                    "text_column": evaluation.text_column,
                    "label_column": evaluation.label_column,
                    "max_drop": r.max_drop,
                    "limit": 2000,
                }
        out = folder / "repository"
        report = build_repository(parse_spec({"models": [model]}), out)
        (folder / "build.json").write_text(json.dumps(report.as_dict(), indent=2, default=str))

    def _smoke(self, folder: Path) -> None:
        """Serve the repository through Triton and the gateway; classify the smoke texts and
        (with a report's evaluation slice) check the served labels against in-process ONNX
        Runtime on the same graph."""
        from lmforge_client.client import LmforgeClient

        from gateway.processes import gateway_config, start_gateway
        from trainer.datasets import read_column
        from triton_host.launcher import TritonServer

        assert self.config.smoke is not None
        repository = self.dirs["repository"] / "repository"
        name = self.config.task.replace("_", "-").lower()
        texts = list(self.config.smoke.texts)
        evaluation = self.config.report.evaluation if self.config.report else None
        dev = (
            []
            if evaluation is None
            else read_column(evaluation.path, evaluation.text_column, min(evaluation.limit, 256))
        )
        models = [{"name": name, "task": "classify", "triton_model": name}]
        with TritonServer(repository) as triton:
            config = gateway_config(triton.grpc_url, models)
            config["triton"]["repository"] = str(repository)
            with (
                start_gateway(folder / "gateway", config, wait_serving=True) as gateway,
                LmforgeClient(gateway.target) as client,
            ):
                served = [
                    r.top.label
                    for start in range(0, len(texts + dev), 32)
                    for r in client.classify(name, (texts + dev)[start : start + 32]).results
                ]
        answers = [{"text": t, "label": label} for t, label in zip(texts, served, strict=False)]
        print("  " + "; ".join(f"{a['text']!r} -> {a['label']}" for a in answers), flush=True)
        result: dict[str, Any] = {"answers": answers}
        if dev:
            from trainer.repository.reference import repository_labels, repository_outputs

            labels = repository_labels(repository, name)
            probabilities = repository_outputs(
                repository, name, dev, self.config.repository.max_length
            )
            local = [labels[int(i)] for i in probabilities.argmax(axis=1)]
            same = sum(a == b for a, b in zip(served[len(texts) :], local, strict=True))
            result["agreement"] = {"rows": len(dev), "same_label": same}
            print(f"  served labels equal in-process ONNX Runtime on {same}/{len(dev)} dev rows")
            if same != len(dev):
                raise PipelineError(
                    f"served labels differ from in-process on {len(dev) - same} rows"
                )
        (folder / "answers.json").write_text(json.dumps(result, indent=2), encoding="utf-8")

    def _report(self, folder: Path) -> None:
        assert self.config.report is not None
        models = [ReportModel(name="teacher", checkpoint=self._export("teacher"))]
        if self.config.student is not None:
            student = self._export("student")
            models.append(ReportModel(name="student", checkpoint=student))
            quantize = self.config.repository.quantize
            if quantize != "none":
                models.append(ReportModel(name=f"student-{quantize}", checkpoint=student,
                                          quantize=quantize))  # fmt: skip
        config = ReportConfig(
            task="classify",
            evaluation=self.config.report.evaluation,
            models=tuple(models),
            max_length=self.config.repository.max_length,
            serve=self.config.report.serve,
            out=folder,
        )
        run_report(config)
        publish = self.config.report.publish
        if publish is not None:
            publish.mkdir(parents=True, exist_ok=True)
            for suffix in ("json", "md", "png"):
                shutil.copyfile(folder / f"report.{suffix}", publish / f"report.{suffix}")


def _pipeline(args: argparse.Namespace) -> int:
    try:
        Pipeline(load_pipeline(Path(args.config))).run()
    except PipelineError as exc:
        logger.error("%s", exc)
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "pipeline", help="train -> distill -> quantize/export -> serve -> report, resumable"
    )
    parser.add_argument("config", help="pipeline config (YAML)")
    parser.set_defaults(handler=_pipeline)
