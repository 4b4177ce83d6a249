"""The checks of a stage and its verdict (pure: counts and thresholds in, verdicts out)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from rollout.counters import Counters, Traffic, latency_buckets
from rollout.plan import Checks, Stage

Verdict = Literal["pass", "fail", "wait", "skip"]


@dataclass(frozen=True)
class CheckResult:
    name: str
    verdict: Verdict
    value: float | None
    limit: float
    detail: str
    #: judged only once the stage's dwell is over (a few slow first probes are not a verdict)
    final_only: bool = False


def check_errors(failures: float, attempts: float, checks: Checks) -> CheckResult:
    """The new version's error rate. Fails as soon as the failures exceed what the rate allows
    on ``max(attempts, min_requests)`` requests (so with few requests, one failure may be
    enough); passes once ``min_requests`` were seen within the rate."""
    rate = failures / attempts if attempts > 0 else 0.0
    limit = checks.max_error_rate
    detail = f"{failures:g} failed of {attempts:g}"
    if failures > limit * max(attempts, checks.min_requests):
        return CheckResult("error_rate", "fail", rate, limit, detail)
    if attempts >= checks.min_requests:
        return CheckResult("error_rate", "pass", rate, limit, detail)
    return CheckResult("error_rate", "wait", rate, limit, f"{detail}; {checks.min_requests} needed")


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float:
    """The ``q``-quantile (0..1) of a Prometheus histogram given as cumulative counts per upper
    bound (``inf`` included), interpolated within its bucket as ``histogram_quantile`` does;
    ``nan`` when it counted nothing."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return math.nan
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # beyond the last finite bound: the most it can say
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def check_latency(
    stage: Mapping[float, float], baseline: Mapping[float, float], checks: Checks
) -> CheckResult:
    """The route's p95 latency during the stage (what clients see, from the gateway's
    ``lmforge_gateway_request_seconds`` histogram) within ``max_latency_ratio`` times its p95
    on the old version alone under the same load, measured before the first stage (plus
    ``latency_slack_ms``). Skipped when the baseline saw too few requests."""
    count, base_count = max(stage.values(), default=0), max(baseline.values(), default=0)
    p95 = histogram_quantile(0.95, stage) * 1000
    base = histogram_quantile(0.95, baseline) * 1000
    limit = checks.max_latency_ratio
    detail = f"p95 {p95:.1f} ms ({count:g} requests) vs {base:.1f} ms before ({base_count:g})"
    if base_count < checks.min_latency_samples:
        return CheckResult("latency_p95", "skip", None, limit, detail, True)
    if count < checks.min_latency_samples:
        return CheckResult("latency_p95", "wait", None, limit, detail, True)
    ratio = p95 / base if base > 0 else math.inf
    verdict: Verdict = "fail" if p95 > base * limit + checks.latency_slack_ms else "pass"
    return CheckResult("latency_p95", verdict, ratio, limit, detail, True)


def check_shadow(compared: float, agreement_sum: float, checks: Checks) -> CheckResult:
    """Mean agreement of the shadow's answers with the served ones (same top label share for
    classify, mean cosine for embed)."""
    mean = agreement_sum / compared if compared > 0 else None
    limit = checks.min_shadow_agreement
    detail = f"{compared:g} compared" + (f", mean agreement {mean:.4f}" if mean is not None else "")
    if mean is None or compared < checks.min_shadow_compared:
        return CheckResult("shadow_agreement", "wait", mean, limit, detail)
    return CheckResult("shadow_agreement", "pass" if mean >= limit else "fail", mean, limit, detail)


def decide(
    results: Sequence[CheckResult], elapsed: float, dwell: float, max_wait: float
) -> Verdict:
    """A stage's verdict: any failed check fails it at once (a ``final_only`` check only after
    the dwell); it passes after the dwell when every check passed; it keeps waiting for
    samples up to ``max_wait`` seconds past the dwell, then fails for lack of evidence."""
    over = elapsed >= dwell
    if any(r.verdict == "fail" and (over or not r.final_only) for r in results):
        return "fail"
    if not over:
        return "wait"
    if all(r.verdict in ("pass", "skip") for r in results):
        return "pass"
    return "wait" if elapsed < dwell + max_wait else "fail"


def failure_reason(results: Sequence[CheckResult], elapsed: float, dwell: float) -> str:
    failed = [r for r in results if r.verdict == "fail" and (elapsed >= dwell or not r.final_only)]
    if failed:
        return "; ".join(f"{r.name}: {r.detail} (limit {r.limit:g})" for r in failed)
    waiting = [r for r in results if r.verdict == "wait"]
    return "not enough evidence: " + "; ".join(f"{r.name}: {r.detail}" for r in waiting)


def stage_checks(
    stage: Stage, seen: Traffic, latency: Counters, baseline: Counters, checks: Checks
) -> list[CheckResult]:
    """Every check of ``stage``: the new version's error rate, the route's p95 latency against
    the baseline and, in a shadow stage, agreement."""
    results = [
        check_errors(seen.failures_new, seen.attempts_new, checks),
        check_latency(latency_buckets(latency), latency_buckets(baseline), checks),
    ]
    if stage.shadow is not None:
        results.append(check_shadow(seen.shadow_compared, seen.agreement_sum, checks))
    return results
