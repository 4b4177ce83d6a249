"""perf_analyzer on every demo model that the builder wrote load for, as generated.

For each model folder of the demo repository holding a ``perf_analyzer_input.json`` (every
ensemble and every encoder; the decoupled generate model gets none from the builder), the
generated ``<name>/perf_analyzer.sh`` is run as written, from the repository folder, against
a real tritonserver: ``TRITON_GRPC`` points it at the server and ``CONCURRENCY=1``. Only the
length of the run is shortened: ``perf_analyzer`` on the script's ``PATH`` is a shim that
appends ``--measurement-interval`` / ``--max-trials`` / ``--stability-percentage`` (and a CSV
report) to the generated arguments and runs the real binary from ``.venv-perf`` (``make
perf-env``). Each model must report throughput > 0 and no errors.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from triton_host.launcher import TritonServer
from triton_host.perf import PerfAnalyzer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PERF_VENV = Path(os.environ.get("LMFORGE_PERF_VENV", ROOT / ".venv-perf"))
PERF_INPUT = "perf_analyzer_input.json"
PERF_SCRIPT = "perf_analyzer.sh"
MEASUREMENT_MS = 1500
# the shim: the generated arguments first, then a short run and a CSV per model
SHIM = """#!/bin/sh
model=""; previous=""
for arg in "$@"; do
  [ "$previous" = "-m" ] && model="$arg"
  previous="$arg"
done
exec "{binary}" "$@" --measurement-interval {ms} --max-trials 3 --stability-percentage 100 \\
  -f "{reports}/$model.csv"
"""
ERROR_LINE = re.compile(r"error|failed|failure", re.IGNORECASE)


@pytest.fixture(scope="module")
def perf() -> PerfAnalyzer:
    """perf_analyzer from its own environment, built with ``make perf-env`` when missing;
    the module is skipped, with the reason, only when that environment cannot be made to
    run here (no network for pip, or no ``libb64-0d`` and no root to install it)."""
    perf = PerfAnalyzer(PERF_VENV)
    if not perf.available:
        made = subprocess.run(
            ["make", "-C", str(ROOT), "perf-env", f"PERF_VENV={PERF_VENV}"],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if made.returncode != 0 or not perf.available:
            pytest.skip(
                f"`make perf-env` could not install perf_analyzer at {perf.binary}:\n"
                + (made.stdout + made.stderr)[-2000:]
            )
    probe = subprocess.run(
        [str(perf.binary), "--version"], env=perf._env(), capture_output=True, text=True
    )
    if probe.returncode != 0:
        pytest.skip(
            f"{perf.binary} does not run here (`make perf-env` installs libb64-0d with apt, "
            f"which needs root): {(probe.stdout + probe.stderr).strip()[-500:]}"
        )
    return perf


def _perf_models(repository: Path) -> list[str]:
    return sorted(p.parent.name for p in repository.glob(f"*/{PERF_INPUT}"))


@pytest.fixture(scope="module")
def triton(demo_repository: Path) -> Iterator[TritonServer]:
    # explicit model control: load what the scripts exercise (an ensemble loads its steps),
    # not the generate model, which has no perf_analyzer input
    loads = [f"--load-model={m}" for m in _perf_models(demo_repository)]
    with TritonServer(demo_repository, model_control_mode="explicit", extra_args=loads) as server:
        yield server


def test_builder_writes_perf_inputs_for_every_ensemble_and_encoder(
    demo_repository: Path,
) -> None:
    manifest = json.loads((demo_repository / "lmforge_repository.json").read_text())
    logical = {m["name"]: m["task"] for m in manifest["spec"]["models"]}
    expected = sorted(
        m for name, task in logical.items() if task != "generate" for m in (name, f"{name}_encoder")
    )
    assert _perf_models(demo_repository) == expected
    for name, task in logical.items():
        assert (demo_repository / name / PERF_SCRIPT).is_file() == (task != "generate"), name


def _shim_env(perf: PerfAnalyzer, folder: Path, triton_url: str) -> dict[str, str]:
    bin_dir, reports = folder / "bin", folder / "reports"
    bin_dir.mkdir(parents=True)
    reports.mkdir()
    shim = bin_dir / "perf_analyzer"
    shim.write_text(SHIM.format(binary=perf.binary, ms=MEASUREMENT_MS, reports=reports))
    shim.chmod(0o755)
    env = perf._env()  # LD_LIBRARY_PATH with the CUDA runtime perf_analyzer links against
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", TRITON_GRPC=triton_url, CONCURRENCY="1")
    return env


def test_generated_perf_analyzer_scripts_run_on_every_model(
    demo_repository: Path, perf: PerfAnalyzer, triton: TritonServer, tmp_path: Path
) -> None:
    scripts = sorted(demo_repository.glob(f"*/{PERF_SCRIPT}"))
    assert scripts, "the builder wrote no perf_analyzer.sh"
    env = _shim_env(perf, tmp_path, triton.grpc_url)
    throughput: dict[str, float] = {}
    for script in scripts:
        started = time.monotonic()
        result = subprocess.run(
            ["sh", str(script)],
            cwd=demo_repository,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"{script} exited {result.returncode}:\n{output}"
        errors = [line for line in output.splitlines() if ERROR_LINE.search(line)]
        assert not errors, f"{script} reported errors:\n" + "\n".join(errors)
        print(f"{script.relative_to(demo_repository)}: {time.monotonic() - started:.1f} s")
    for model in _perf_models(demo_repository):
        report = tmp_path / "reports" / f"{model}.csv"
        assert report.is_file(), f"no perf_analyzer run on {model}"
        with report.open(encoding="utf-8") as handle:
            row = next(csv.DictReader(handle))
        throughput[model] = float(row["Inferences/Second"])
        p50 = float(row["p50 latency"]) / 1000 if row.get("p50 latency") else float("nan")
        print(f"perf_analyzer {model}: {throughput[model]:.1f} infer/s, p50 {p50:.2f} ms (c=1)")
    assert set(throughput) == set(_perf_models(demo_repository))
    assert all(value > 0 for value in throughput.values()), throughput
