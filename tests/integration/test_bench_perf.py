"""``lmforge bench perf`` end to end, short: record a baseline, pass on a second run of the
same commit, fail (exit 1, the regression named) when the drill slows one model's encoder."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

MODELS = ["minilm", "sentiment"]


def _perf(
    repository: Path, out: Path, *extra: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    command = [
        sys.executable,
        "-m",
        "lmforge",
        "bench",
        "perf",
        "--repository",
        str(repository),
        "--no-build",
        "--models",
        *MODELS,
        "--duration",
        "3",
        "--warmup",
        "1",
        "--sentences",
        "64",
        "--out",
        str(out),
        *extra,
    ]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    seconds = time.monotonic() - started
    print(f"$ lmforge bench perf {' '.join(extra)}: exit {result.returncode} in {seconds:.0f} s")
    print(result.stdout)
    return result, seconds


@pytest.mark.timeout(600)
def test_same_commit_passes_and_a_slowed_model_fails(demo_repository: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    # runs of 3 s on a shared 2-core machine: the ratios of one commit vary by up to ~40 %
    # between two of them; a 20 ms sleep on a ~8 ms encoder still triples its latency ratio
    tolerances = tmp_path / "tolerances.yaml"
    tolerances.write_text(
        "latency_ratio: 0.8\nthroughput_ratio: 0.8\nmemory: 0.25\nmemory_slack_mib: 16\n"
    )
    recorded, _ = _perf(demo_repository, out, "--record-baseline")
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    baseline = json.loads((out / "perf_baseline.json").read_text())
    assert set(baseline["models"]) == set(MODELS)
    for figures in baseline["models"].values():
        assert figures["gateway"]["throughput"] > 0
        assert figures["latency_ratio"] > 0 and figures["load_s"] > 0
        assert any(name.startswith("stub ") for name in figures["rss_mib"])
    assert {"tritonserver", "gateway", "stub minilm_encoder"} <= set(baseline["memory_mib"])

    again, _ = _perf(demo_repository, out, "--tolerances", str(tolerances))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "PASS" in again.stdout

    slowed, _ = _perf(
        demo_repository,
        out,
        "--tolerances",
        str(tolerances),
        "--slow-model",
        "minilm",
        "--slow-ms",
        "20",
    )
    assert slowed.returncode == 1, slowed.stdout + slowed.stderr
    assert "REGRESSION minilm: latency_ratio" in slowed.stdout, slowed.stdout
    assert "REGRESSION sentiment" not in slowed.stdout

    history = [json.loads(line) for line in (out / "perf_history.jsonl").read_text().splitlines()]
    assert [h["passed"] for h in history] == [True, True, False]
    assert history[2]["drill"].startswith("minilm sleeps 20")
    assert (out / "perf.md").read_text().count("REGRESSION") >= 1
    assert (out / "perf.png").stat().st_size > 0
    # the product repository is untouched by the drill
    assert "drill" not in (demo_repository / "minilm_encoder" / "1" / "model.py").read_text()
