"""Run Triton's perf_analyzer (from its own environment) and read its CSV report.

perf_analyzer comes from ``tritonclient==2.51.0`` in a separate virtualenv (``make
perf-env``): it is the newest release whose binary runs on glibc 2.36, and its protobuf and
numpy pins clash with the runtime environment. It needs ``libcudart.so.12`` (from
``nvidia-cuda-runtime-cu12`` in that venv) on ``LD_LIBRARY_PATH`` even on a CPU machine.
"""

from __future__ import annotations

import csv
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path


class PerfAnalyzerError(RuntimeError):
    """perf_analyzer is missing or failed; the message holds its output."""


@dataclass(frozen=True)
class PerfResult:
    model: str
    concurrency: int
    throughput: float  # inferences per second
    p50_ms: float
    p95_ms: float
    p99_ms: float


class PerfAnalyzer:
    def __init__(self, venv: Path) -> None:
        self.venv = Path(venv)
        self.binary = self.venv / "bin" / "perf_analyzer"

    @property
    def available(self) -> bool:
        return self.binary.is_file()

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        libs = [
            str(p) for p in self.venv.glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib")
        ]
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
        return env

    def run(
        self,
        model: str,
        url: str,
        input_data: Path,
        concurrency: int,
        *,
        workdir: Path,
        measurement_ms: int = 5000,
        max_trials: int = 6,
        timeout: float = 300.0,
    ) -> PerfResult:
        """One concurrency level of closed-loop load on ``model`` at ``url`` (gRPC)."""
        if not self.available:
            raise PerfAnalyzerError(f"{self.binary} not found: run `make perf-env`")
        report = workdir / f"perf_{model}_c{concurrency}.csv"
        command = [
            str(self.binary),
            "-m", model,
            "-i", "grpc",
            "-u", url,
            "-b", "1",
            "--input-data", str(input_data),
            "--concurrency-range", str(concurrency),
            "--measurement-interval", str(measurement_ms),
            "--stability-percentage", "100",  # report, do not retry: the machine is shared
            "--max-trials", str(max_trials),
            "--percentile", "95",
            "-f", str(report),
        ]  # fmt: skip
        result = subprocess.run(
            command, env=self._env(), capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0 or not report.is_file():
            raise PerfAnalyzerError(f"perf_analyzer failed:\n{result.stdout}\n{result.stderr}")
        with report.open(encoding="utf-8") as handle:
            row = next(csv.DictReader(handle))

        def ms(key: str) -> float:
            return float(row[key]) / 1000 if row.get(key) else float("nan")

        return PerfResult(
            model,
            concurrency,
            float(row["Inferences/Second"]),
            ms("p50 latency"),
            ms("p95 latency"),
            ms("p99 latency"),
        )
