"""The regression checks of ``lmforge bench perf``: tolerances and the comparison with the
recorded baseline (pure; both sides are run records as written to the history file).

Absolute latencies drift between machines, and on a shared machine from minute to minute, so
the checked latency and throughput figures are **ratios against the in-process reference
measured in the same run**: gateway p50 / in-process p50, and in-process throughput / gateway
throughput (higher is worse for both). Resident memory is compared in MiB. Load times and CPU
use are recorded and reported, not checked: no same-run reference exists for them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from lmforge_core.strict import StrictModel, load_yaml_mapping, validate

RATIO_METRICS = {
    "latency_ratio": "gateway p50 / in-process p50",
    "throughput_ratio": "in-process throughput / gateway throughput",
}
STUB_PREFIX = "stub "


class PerfConfigError(ValueError):
    """A bad tolerance file, a baseline that cannot be read, or a drill that cannot run."""


class PerfTolerances(StrictModel):
    """How much each checked figure may worsen against the baseline before the run fails.

    ``latency_ratio``: (gateway p50 / in-process p50) now may be at most the baseline's times
    ``1 + latency_ratio``; ``throughput_ratio``: the same for in-process / gateway throughput;
    ``memory``: resident MiB now at most the baseline's times ``1 + memory``, and differences
    under ``memory_slack_mib`` never fail (small stubs move by a few MiB between runs).
    """

    latency_ratio: float = Field(0.35, gt=0)
    throughput_ratio: float = Field(0.35, gt=0)
    memory: float = Field(0.25, gt=0)
    memory_slack_mib: float = Field(16.0, ge=0)


def load_tolerances(path: Path | None) -> PerfTolerances:
    """The defaults, or the YAML file at ``path`` (unknown keys and bad values are errors)."""
    if path is None:
        return PerfTolerances()
    data = load_yaml_mapping(path, what="perf tolerances", error=PerfConfigError)
    return validate(
        PerfTolerances, data, source=str(path), what="perf tolerances", error=PerfConfigError
    )


@dataclass(frozen=True)
class Check:
    """One figure of one model against its limit."""

    model: str
    metric: str
    baseline: float
    now: float
    limit: str
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ratio_checks(
    model: str, now: dict[str, Any], base: dict[str, Any], tolerances: PerfTolerances
) -> list[Check]:
    checks = []
    for metric, meaning in RATIO_METRICS.items():
        tolerance = float(getattr(tolerances, metric))
        limit = base[metric] * (1 + tolerance)
        checks.append(
            Check(
                model,
                f"{metric} ({meaning})",
                base[metric],
                now[metric],
                f"<= {limit:.3f} (baseline x {1 + tolerance:.2f})",
                now[metric] <= limit,
            )
        )
    return checks


def memory_owner(process: str) -> str:
    """The logical model a process belongs to (``stub minilm_encoder`` → ``minilm``), or
    ``-`` for the shared processes (tritonserver, the gateway)."""
    if not process.startswith(STUB_PREFIX):
        return "-"
    name = process.removeprefix(STUB_PREFIX)
    for suffix in ("_tokenize", "_encoder"):
        name = name.removesuffix(suffix)
    return name


def compare(
    run: dict[str, Any], baseline: dict[str, Any], tolerances: PerfTolerances
) -> list[Check]:
    """Every check of ``run`` against ``baseline``; models or processes missing from the
    baseline are not compared (only failed requests are checked for them)."""
    checks: list[Check] = []
    for model, now in run["models"].items():
        failed = sum(now["gateway"].get("failed", {}).values())
        checks.append(Check(model, "failed requests", 0, failed, "0", failed == 0))
        base = baseline.get("models", {}).get(model)
        if base is not None:
            checks += _ratio_checks(model, now, base, tolerances)
    for process, now_mib in run["memory_mib"].items():
        base_mib = baseline.get("memory_mib", {}).get(process)
        if base_mib is None:
            continue
        slack = tolerances.memory_slack_mib
        limit = max(base_mib * (1 + tolerances.memory), base_mib + slack)
        checks.append(
            Check(
                memory_owner(process),
                f"RSS MiB {process}",
                base_mib,
                now_mib,
                f"<= {limit:.1f} (baseline x {1 + tolerances.memory:.2f}, or + {slack:g} MiB)",
                now_mib <= limit,
            )
        )
    return checks


def regression_report(checks: list[Check]) -> str:
    """One line per failed check, naming the model, the figure, both values and the limit."""
    return "\n".join(
        f"REGRESSION {c.model}: {c.metric}: baseline {c.baseline:g}, now {c.now:g}, limit {c.limit}"
        for c in checks
        if not c.passed
    )


def shape(record: dict[str, Any]) -> tuple[Any, ...]:
    """What must match for two runs to be fully comparable: the models and the load."""
    return (sorted(record["models"]), record["concurrency"])
