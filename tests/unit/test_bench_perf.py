"""The pure parts of ``lmforge bench perf``: checks, tolerances, the drill copy, the report."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from benchmarks.perf.checks import (
    PerfConfigError,
    PerfTolerances,
    compare,
    load_tolerances,
    memory_owner,
    regression_report,
)
from benchmarks.perf.drill import DRILL_MARKER, slowed_copy
from benchmarks.perf.measure import Load, components, model_figures
from benchmarks.perf.procs import CpuWindow, cpu_seconds, rss_mib, stub_model
from benchmarks.perf.report import markdown


def _record(latency: float, throughput: float, rss: float, failed: int = 0) -> dict[str, Any]:
    return {
        "models": {
            "m": {
                "gateway": {"failed": {"UNAVAILABLE": failed} if failed else {}},
                "latency_ratio": latency,
                "throughput_ratio": throughput,
            }
        },
        "memory_mib": {"stub m_encoder": rss, "tritonserver": 300.0},
    }


def test_compare_passes_within_tolerance_and_names_each_worsened_metric() -> None:
    tolerances = PerfTolerances()
    base = _record(2.0, 1.5, 200.0)
    assert all(c.passed for c in compare(_record(2.6, 1.9, 240.0), base, tolerances))
    failed = [c for c in compare(_record(4.0, 3.0, 300.0), base, tolerances) if not c.passed]
    assert [(c.model, c.metric.split()[0]) for c in failed] == [
        ("m", "latency_ratio"),
        ("m", "throughput_ratio"),
        ("m", "RSS"),
    ]
    report = regression_report(failed)
    assert report.splitlines()[0].startswith("REGRESSION m: latency_ratio")
    assert "baseline 2, now 4" in report


def test_compare_fails_on_failed_requests_even_without_a_baseline_for_the_model() -> None:
    checks = compare(_record(1.0, 1.0, 100.0, failed=3), {"models": {}}, PerfTolerances())
    assert [(c.metric, c.now, c.passed) for c in checks] == [("failed requests", 3, False)]


def test_small_memory_growth_within_the_slack_passes() -> None:
    tolerances = PerfTolerances(memory=0.01, memory_slack_mib=16)
    checks = compare(_record(1.0, 1.0, 40.0), _record(1.0, 1.0, 30.0), tolerances)
    assert all(c.passed for c in checks)


def test_tolerance_file_rejects_unknown_keys_and_bad_values(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("latency_ratio: 0.5\n")
    assert load_tolerances(good).latency_ratio == 0.5
    assert load_tolerances(None) == PerfTolerances()
    for text, expected in (("latency: 0.5\n", "latency"), ("memory: -1\n", "memory")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(PerfConfigError, match=expected):
            load_tolerances(bad)


def test_memory_owner_maps_stubs_to_their_logical_model() -> None:
    assert memory_owner("stub minilm_encoder") == "minilm"
    assert memory_owner("stub sentiment_tokenize") == "sentiment"
    assert memory_owner("stub smollm2") == "smollm2"
    assert memory_owner("gateway") == "-"


def test_stub_model_reads_the_model_from_the_stub_command_line() -> None:
    stub = "/tmp/backends/python/triton_python_backend_stub"
    assert stub_model([stub, "/repo/minilm_encoder/1/model.py", "shm", "1"]) == "minilm_encoder"
    assert stub_model(["/usr/bin/python3", "/repo/x/1/model.py"]) is None
    assert stub_model([]) is None


def test_proc_readers_and_cpu_window_measure_this_process() -> None:
    assert cpu_seconds(os.getpid()) > 0
    assert rss_mib(os.getpid()) > 1
    window = CpuWindow({"me": os.getpid()})
    with pytest.raises(RuntimeError):
        window.stop()
    window.start()
    sum(i * i for i in range(200_000))
    used = window.stop()
    assert used["me"] >= 0 and 0 <= used[CpuWindow.MACHINE] <= 100


def _fake_repository(root: Path) -> Path:
    for part in ("m_tokenize", "m_encoder", "m"):
        (root / part / "1").mkdir(parents=True)
        (root / part / "config.pbtxt").write_text("")
    (root / "m_encoder" / "1" / "model.py").write_text("class TritonPythonModel:\n    pass\n")
    return root


def test_slowed_copy_wraps_only_the_copy(tmp_path: Path) -> None:
    repository = _fake_repository(tmp_path / "repo")
    original = (repository / "m_encoder" / "1" / "model.py").read_text()
    copy = slowed_copy(repository, "m", 20, tmp_path / "copy")
    wrapped = (copy / "m_encoder" / "1" / "model.py").read_text()
    assert DRILL_MARKER in wrapped and "sleep(0.02)" in wrapped
    assert (repository / "m_encoder" / "1" / "model.py").read_text() == original
    compile(wrapped, "model.py", "exec")
    with pytest.raises(PerfConfigError, match="no x_encoder"):
        slowed_copy(repository, "x", 20, tmp_path / "other")


def test_components_lists_an_ensembles_steps_before_it(tmp_path: Path) -> None:
    repository = _fake_repository(tmp_path / "repo")
    assert components(repository, "m") == ["m_tokenize", "m_encoder", "m"]
    assert components(repository, "generator") == ["generator"]


def test_load_rejects_a_nonsense_load() -> None:
    with pytest.raises(PerfConfigError, match="concurrency=0"):
        Load(concurrency=0)


def test_report_holds_every_model_figure_and_the_regressions() -> None:
    summary = {"p50_ms": 10.0, "p95_ms": 12.0, "p99_ms": 15.0, "throughput": 90.0, "failed": {}}
    figures = model_figures("embed", summary, {"p50_ms": 4.0, "throughput": 200.0}, {"m": 1.5})
    assert figures["latency_ratio"] == 2.5 and figures["throughput_ratio"] == pytest.approx(2.2222)
    figures["cpu_pct"] = {"tritonserver": 20.0, "stub m_encoder": 80.0, "machine": 55.0}
    figures["rss_mib"] = {"tritonserver": 300.0, "stub m_encoder": 250.0}
    record = {
        "commit": "abc",
        "dirty": False,
        "timestamp": "now",
        "machine": {"cpus": 2, "cpu_model": "x", "memory_gib": 24, "loadavg_at_start": [1, 1, 1]},
        "concurrency": 1,
        "duration_s": 3.0,
        "warmup_s": 1.0,
        "drill": None,
        "models": {"m": figures},
        "memory_mib": {"tritonserver": 300.0, "stub m_encoder": 250.0},
        "gateway_start_s": 2.0,
    }
    base = {**record, "models": {"m": {**figures, "latency_ratio": 1.0}}}
    checks = compare(record, base, PerfTolerances())
    text = markdown(record, checks, "FAIL\n\n" + regression_report(checks))
    assert "| m | 10.00 | 12.00 | 15.00 | 90.0 |" in text
    assert "| m | stub m_encoder | 80.0 | 250.0 |" in text
    assert "m 1.50 s" in text
    assert "in % of all 2 cores: m 55 %" in text
    assert "REGRESSION m: latency_ratio" in text
