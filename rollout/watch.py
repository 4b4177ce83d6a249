"""One stage's dwell: pinned probes to both versions every ``probe.interval_s``, the checks
every ``checks.interval_s``, until the verdict; then what it saw, as the stage's report.

The gateway keeps no latency histogram per deployment, so the probes (one request pinned to
each version per interval) give each version's own latency; the checks judge the route's
latency (what clients see) against the baseline."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from lmforge_core.stats import percentile, rounded
from rollout.checks import (
    CheckResult,
    Verdict,
    decide,
    failure_reason,
    histogram_quantile,
    stage_checks,
)
from rollout.counters import Counters, counter_delta, latency_buckets, traffic
from rollout.gateway_view import GatewayPort, warm_texts
from rollout.plan import RolloutPlan, Stage
from rollout.report import StageReport
from rollout.state import RolloutState


@dataclass
class Watch:
    """What one stage's dwell saw (monotonic clock)."""

    began: float
    ended: float = 0.0
    verdict: Verdict = "wait"
    results: list[CheckResult] = field(default_factory=list)
    delta: Counters = field(default_factory=dict)  # the route's counters during the stage
    latencies: dict[str, list[float]] = field(default_factory=dict)  # probes per deployment
    wrong: dict[str, int] = field(default_factory=dict)  # probes failed or served elsewhere


def watch_stage(
    gateway: GatewayPort,
    plan: RolloutPlan,
    state: RolloutState,
    stage: Stage | None,
    dwell_s: float,
    baseline: Counters,
    check_stop: Callable[[], None],
) -> Watch:
    """Probe and check until the verdict. ``stage`` None is the baseline: the old version
    alone, probed in the new one's place too, passing once ``dwell_s`` is over."""
    checks = plan.checks
    old, new = state.old["name"], state.new["name"]
    seen = Watch(time.monotonic(), latencies={old: [], new: []}, wrong={old: 0, new: 0})
    before = gateway.counters(state.route)
    texts = warm_texts(plan.triton.repository, state.old["triton_model"], 64)
    targets = (old, new) if stage is not None else (old, old)
    versions = {old: str(state.old_version), new: str(state.new_version)}
    sent = 0
    next_probe = next_check = seen.began
    while True:
        check_stop()
        now = time.monotonic()
        if now >= next_probe:
            for name in targets:
                text = texts[sent % len(texts)]
                result = gateway.request(state.route, state.task, name, text, plan.probe.timeout_s)
                if result.ok and result.version == versions[name]:
                    seen.latencies[name].append(result.latency_ms)
                else:
                    seen.wrong[name] += 1
            sent += 1
            next_probe = max(next_probe + plan.probe.interval_s, time.monotonic())
        if now >= next_check:
            seen.delta = counter_delta(gateway.counters(state.route), before)
            elapsed = time.monotonic() - seen.began
            if stage is None:
                seen.verdict = "pass" if elapsed >= dwell_s else "wait"
            else:
                counted = traffic(seen.delta, old, new)
                seen.results = stage_checks(stage, counted, seen.delta, baseline, checks)
                seen.verdict = decide(seen.results, elapsed, dwell_s, checks.max_wait_s)
            if seen.verdict != "wait":
                break
            next_check = now + checks.interval_s
        time.sleep(max(0.0, min(next_probe, next_check) - time.monotonic()))
    seen.ended = time.monotonic()
    return seen


def record(report: StageReport, seen: Watch, t0: float, old: str, new: str) -> None:
    """Fill ``report`` with what ``seen`` saw (times relative to ``t0``)."""
    counted = traffic(seen.delta, old, new)
    report.ended_s = round(seen.ended - t0, 3)
    report.window = (seen.began, seen.ended)
    report.verdict = seen.verdict
    share = counted.share_new
    report.traffic = {
        "answered_old": counted.answered_old,
        "answered_new": counted.answered_new,
        "split_old": counted.split_old,
        "split_new": counted.split_new,
        "share_new": None if share is None else round(share, 4),
        "attempts_new": counted.attempts_new,
        "failures_new": counted.failures_new,
        "fallbacks_new": counted.fallbacks_new,
        "route_errors": counted.route_errors,
        "shadow_compared": counted.shadow_compared,
        "shadow_failed": counted.shadow_failed,
        "route_p95_ms": round(histogram_quantile(0.95, latency_buckets(seen.delta)) * 1000, 2),
    }
    latencies, wrong = seen.latencies, seen.wrong
    report.probes = {
        "old": len(latencies[old]),
        "new": len(latencies[new]),
        "old_failed": wrong[old],
        "new_failed": wrong[new],
        "old_p95_ms": rounded(percentile(latencies[old], 95)),
        "new_p95_ms": rounded(percentile(latencies[new], 95)),
    }
    report.checks = [asdict(r) for r in seen.results]
    if seen.verdict == "fail":
        report.reason = failure_reason(seen.results, seen.ended - seen.began, report.dwell_s)
