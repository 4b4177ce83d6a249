"""The warm-up: real sentences pinned to the new version, sequentially, before any client
sees it (its first requests pay for loading and compiling; a version that fails them never
gets traffic)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from lmforge_core.stats import percentile, rounded
from rollout.gateway_view import GatewayPort, warm_texts
from rollout.plan import RolloutPlan
from rollout.state import RolloutState


def warm_up(
    gateway: GatewayPort, plan: RolloutPlan, state: RolloutState, check_stop: Callable[[], None]
) -> tuple[dict[str, Any], str | None]:
    """``warmup.requests`` requests pinned to the new deployment and one to the old; returns
    the summary for the report and why the rollout must stop (None: it may go on). A reply
    from another version than the new one counts as a failure."""
    began = time.monotonic()
    warmup = plan.warmup
    count = max(1, warmup.requests)
    texts = warm_texts(plan.triton.repository, state.old["triton_model"], count)
    old = gateway.request(state.route, state.task, state.old["name"], texts[0], warmup.timeout_s)
    results = []
    for i in range(count):
        check_stop()
        text = texts[i % len(texts)]
        results.append(
            gateway.request(state.route, state.task, state.new["name"], text, warmup.timeout_s)
        )
    failed = [r for r in results if not r.ok or r.version != str(state.new_version)]
    codes: dict[str, int] = {}
    for r in failed:
        codes[r.code] = codes.get(r.code, 0) + 1
    latencies = [r.latency_ms for r in results if r not in failed]
    summary = {
        "requests": count,
        "failed": len(failed),
        "codes": codes,
        "p50_ms": rounded(percentile(latencies, 50)),
        "p95_ms": rounded(percentile(latencies, 95)),
        "seconds": round(time.monotonic() - began, 3),
    }
    if len(failed) > warmup.max_failures:
        problem = (
            f"warm-up: {len(failed)} of {count} requests to version {state.new_version} "
            f"failed ({codes})"
        )
        return summary, problem
    if not old.ok:
        return summary, f"the old version failed a request ({old.code})"
    if len(state.triton_models) > 1:
        _, tokenizes = gateway.route_view(state.route)
        if not (tokenizes.get(state.new["name"]) and tokenizes.get(state.old["name"])):
            return summary, (
                f"the gateway does not tokenize for both deployments ({tokenizes}): "
                "through the ensemble, both versions would run the newest encoder"
            )
    return summary, None
