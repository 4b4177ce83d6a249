"""What ``lmforge bench fallback`` concludes from what it recorded (pure: no server, no I/O).

The drill (:mod:`benchmarks.fallback`) records every Embed call (start, end, status), the
gateway's routing metrics (as ``/metrics`` text), when each Triton server stopped running and
the gateway's log. This module turns that record into the report: which failed calls *had a
live alternative* (some server stayed up from the call's start to its answer), what each
deployment answered before and after the kill, latency and throughput per phase, when the
killed deployment's circuit breaker opened, and the Markdown table of it all.
"""

from __future__ import annotations

import datetime
import math
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lmforge_client.types import LmforgeError
from prometheus_client.parser import text_string_to_metric_families

from gateway import metrics
from lmforge_core import stats
from lmforge_core.stats import rounded

#: the gateway's ``lmforge_gateway_breaker_state`` values
BREAKER_STATES = {0.0: "closed", 1.0: "half_open", 2.0: "open"}
STATEMENT = "killing one Triton under load loses no request that had a live alternative"
#: the gateway's log format (``gateway.cli``): ``2026-01-31 12:00:00,123 LEVEL name: message``
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
_BATCH_FAILED = re.compile(r"batcher (\S+): batch of (\d+) inputs failed: (.*)$")
_ADDRESS = re.compile(r"\d+\.\d+\.\d+\.\d+:\d+")
OK = "OK"


@dataclass(frozen=True)
class Call:
    """One Embed call of the drill (``time.monotonic`` seconds)."""

    began: float
    ended: float
    code: str  # "OK", a gRPC status name, or the exception's type
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.code == OK


@dataclass
class Ledger:
    """Every counted call, with its status and the error message of a failed one."""

    calls: list[Call] = field(default_factory=list)

    def wrap(self, call: Callable[[int], Awaitable[object]]) -> Callable[[int], Awaitable[object]]:
        async def recorded(index: int) -> object:
            began = time.monotonic()
            try:
                result = await call(index)
            except LmforgeError as exc:
                self.calls.append(Call(began, time.monotonic(), exc.code.name, exc.message))
                raise
            except Exception as exc:
                self.calls.append(Call(began, time.monotonic(), type(exc).__name__, str(exc)))
                raise
            self.calls.append(Call(began, time.monotonic(), OK))
            return result

        return recorded


@dataclass(frozen=True)
class Scrape:
    """The gateway's routing metrics of one route at one moment, per deployment."""

    at: float
    routed: dict[str, float]
    fallbacks: dict[str, float]
    breaker: dict[str, str]
    ready: float | None


def parse_metrics(text: str, route: str, at: float) -> Scrape:
    """The routing metrics of ``route`` in the gateway's ``/metrics`` text, read at ``at``."""
    routed: dict[str, float] = {}
    fallbacks: dict[str, float] = {}
    breaker: dict[str, str] = {}
    ready: float | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == metrics.BACKEND_READY:
                ready = sample.value
            if sample.labels.get("route") != route:
                continue
            deployment = sample.labels.get("deployment", "")
            if sample.name == f"{metrics.ROUTED}_total":  # summed over reasons
                routed[deployment] = routed.get(deployment, 0.0) + sample.value
            elif sample.name == f"{metrics.FALLBACKS}_total":
                fallbacks[deployment] = fallbacks.get(deployment, 0.0) + sample.value
            elif sample.name == metrics.BREAKER_STATE:
                breaker[deployment] = BREAKER_STATES.get(sample.value, str(sample.value))
    return Scrape(at, routed, fallbacks, breaker, ready)


def had_live_alternative(call: Call, died: Mapping[str, float], servers: Sequence[str]) -> bool:
    """Some server stayed alive from the call's start to its answer. ``died`` holds when each
    server that stopped running stopped; servers are never restarted in the drill, so one
    that had not died by the call's end was up all along."""
    return any(died.get(name, math.inf) > call.ended for name in servers)


def phases(calls: Sequence[Call], killed_at: float) -> dict[str, list[Call]]:
    """The calls answered before the kill, those in flight at it, those started after it."""
    return {
        "before_kill": [c for c in calls if c.ended < killed_at],
        "across_kill": [c for c in calls if c.began < killed_at <= c.ended],
        "after_kill": [c for c in calls if c.began >= killed_at],
    }


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q``-th percentile (None without values), rounded to 0.01: a latency
    some call of the drill had."""
    return rounded(stats.percentile(values, q, method="inverted_cdf"))


def window(calls: Sequence[Call], start: float, stop: float) -> dict[str, Any]:
    """The calls answered within ``[start, stop)``: OK answers per second and their latency."""
    answered = [c for c in calls if start <= c.ended < stop]
    ok = [(c.ended - c.began) * 1000 for c in answered if c.ok]
    seconds = stop - start
    return {
        "seconds": round(seconds, 2),
        "answered": len(answered),
        "ok": len(ok),
        "ok_per_s": round(len(ok) / seconds, 2) if seconds > 0 else None,
        "p50_ms": percentile(ok, 50),
        "p99_ms": percentile(ok, 99),
    }


def _log_stamp(line: str) -> float | None:
    found = _LOG_TIME.match(line)
    if found is None:
        return None
    return datetime.datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def breaker_openings(log: str, breaker: str, since_wall: float) -> list[float]:
    """Seconds from ``since_wall`` (``time.time``) to each ``breaker <name> open`` line of the
    gateway's log at or after it (log stamps are local time, to the millisecond)."""
    opened = []
    for line in log.splitlines():
        stamp = _log_stamp(line)
        if stamp is None or f"breaker {breaker} open" not in line:
            continue
        if stamp >= since_wall - 0.001:
            opened.append(round(max(0.0, stamp - since_wall), 3))
    return opened


def batch_failures(log: str, batcher: str) -> dict[str, Any]:
    """The batches of ``batcher`` (``route/deployment``) that failed (their callers then fell
    back), with their errors counted (addresses elided)."""
    batches = inputs = 0
    errors: Counter[str] = Counter()
    for line in log.splitlines():
        found = _BATCH_FAILED.search(line)
        if found is None or found.group(1) != batcher:
            continue
        batches += 1
        inputs += int(found.group(2))
        errors[_ADDRESS.sub("<address>", found.group(3))[:240]] += 1
    return {"batches": batches, "inputs": inputs, "errors": dict(errors)}


def _delta(
    later: Mapping[str, float], earlier: Mapping[str, float], names: Sequence[str]
) -> dict[str, int]:
    return {name: int(later.get(name, 0) - earlier.get(name, 0)) for name in names}


@dataclass(frozen=True)
class Recording:
    """Everything the drill recorded; times are ``time.monotonic`` unless named ``wall``."""

    route: str
    deployments: tuple[str, ...]  # one per server, in the same order
    victim: str
    calls: Sequence[Call]
    started: Scrape  # when the counted load began
    at_kill: Scrape
    ended: Scrape
    seen: Sequence[Scrape]  # scraped every ~100 ms during the load
    died: Mapping[str, float]  # deployment -> when its server stopped running
    killed_at: float
    killed_wall: float
    load_stopped: float
    killed_processes: int
    gateway_log: str
    health_after: str


def report(r: Recording) -> dict[str, Any]:
    """The drill's report (JSON-ready) from its recording."""
    names = r.deployments
    failed = [c for c in r.calls if not c.ok]
    with_alternative = [c for c in failed if had_live_alternative(c, r.died, names)]
    gauge_open = next(
        (s.at for s in r.seen if s.at >= r.killed_at and s.breaker.get(r.victim) == "open"),
        None,
    )
    not_ready = [s for s in r.seen if s.at >= r.killed_at and s.ready is not None and s.ready < 1]
    opened = breaker_openings(r.gateway_log, f"{r.route}/{r.victim}", r.killed_wall)
    return {
        "killed": r.victim,
        "killed_processes": r.killed_processes,
        "survivor_alive_at_end": all(n not in r.died for n in names if n != r.victim),
        "requests": {
            "total": len(r.calls),
            "ok": len(r.calls) - len(failed),
            "failed": dict(Counter(c.code for c in failed)),
            "with_live_alternative": sum(
                1 for c in r.calls if had_live_alternative(c, r.died, names)
            ),
            "failed_with_live_alternative": len(with_alternative),
            "failed_without_live_alternative": len(failed) - len(with_alternative),
            **{
                phase: {"total": len(group), "ok": sum(1 for c in group if c.ok)}
                for phase, group in phases(r.calls, r.killed_at).items()
            },
        },
        "failures": [
            {
                "since_kill_s": round(c.ended - r.killed_at, 3),
                "latency_ms": round((c.ended - c.began) * 1000, 1),
                "code": c.code,
                "message": c.message[:300],
                "live_alternative": had_live_alternative(c, r.died, names),
            }
            for c in failed[:50]
        ],
        "served_by": {
            "before_kill": _delta(r.at_kill.routed, r.started.routed, names),
            "after_kill": _delta(r.ended.routed, r.at_kill.routed, names),
        },
        "fallbacks_from": {
            "before_kill": _delta(r.at_kill.fallbacks, r.started.fallbacks, names),
            "after_kill": _delta(r.ended.fallbacks, r.at_kill.fallbacks, names),
        },
        "victim_batch_failures": batch_failures(r.gateway_log, f"{r.route}/{r.victim}"),
        "breaker": {
            "opened_after_kill_s": opened[0] if opened else None,
            "openings_after_kill": len(opened),
            "gauge_open_after_kill_s": (
                round(gauge_open - r.killed_at, 3) if gauge_open is not None else None
            ),
            "state_at_end": dict(r.ended.breaker),
        },
        "health": {"backend_ready_dropped": bool(not_ready), "after_load": r.health_after},
        "throughput": {
            "before_kill": window(r.calls, r.started.at, r.killed_at),
            "after_kill": window(r.calls, r.killed_at, r.load_stopped),
        },
        "must_show": {
            "statement": STATEMENT,
            "lost_with_live_alternative": len(with_alternative),
            "held": not with_alternative,
        },
    }


def markdown(report: Mapping[str, Any]) -> str:
    """The report as a Markdown table and the must-show verdict."""
    r, s, f = report["requests"], report["served_by"], report["fallbacks_from"]
    b, t, m = report["breaker"], report["throughput"], report["must_show"]
    victim, v = report["killed"], report["victim_batch_failures"]
    left = report.get("left_behind", {})

    def per_deployment(counts: Mapping[str, int]) -> str:
        return " / ".join(f"{name} {n}" for name, n in counts.items())

    failed = ", ".join(f"{k} {n}" for k, n in sorted(r["failed"].items())) or "none"
    by_phase = " / ".join(
        f"{r[p]['total']} ({r[p]['ok']})" for p in ("before_kill", "across_kill", "after_kill")
    )
    rows = [
        ("killed", f"Triton of deployment `{victim}` (SIGKILL, {report['killed_processes']} processes)"),
        ("calls: total / OK", f"{r['total']} / {r['ok']}"),
        ("calls failed, by status", failed),
        ("failed with a live alternative", str(r["failed_with_live_alternative"])),
        ("failed without a live alternative", str(r["failed_without_live_alternative"])),
        ("answered before kill / in flight at kill / started after kill: total (OK)", by_phase),
        ("answered by deployment, before kill", per_deployment(s["before_kill"])),
        ("answered by deployment, after kill", per_deployment(s["after_kill"])),
        ("fallbacks from deployment, before / after kill",
         f"{per_deployment(f['before_kill'])}; {per_deployment(f['after_kill'])}"),
        ("batches that failed on the killed deployment (their inputs)",
         f"{v['batches']} ({v['inputs']})"),
        ("breaker opened after the kill (log / gauge)",
         f"{b['opened_after_kill_s']} s / {b['gauge_open_after_kill_s']} s"),
        ("throughput before / after kill",
         f"{t['before_kill']['ok_per_s']} / {t['after_kill']['ok_per_s']} answers/s"),
        ("p50 / p99 before kill", f"{t['before_kill']['p50_ms']} / {t['before_kill']['p99_ms']} ms"),
        ("p50 / p99 after kill", f"{t['after_kill']['p50_ms']} / {t['after_kill']['p99_ms']} ms"),
        ("gateway health after the load", report["health"]["after_load"]),
        ("left behind (processes / shm regions)",
         ", ".join(f"{n} {x['processes']} / {x['shm_regions']}" for n, x in left.items()) or "n/a"),
    ]  # fmt: skip
    lines = ["| measure | value |", "| --- | --- |", *(f"| {k} | {x} |" for k, x in rows)]
    verdict = "HELD" if m["held"] else "DID NOT HOLD"
    lines += [
        "",
        f"**Must-show {verdict}**: {m['statement']} — {m['lost_with_live_alternative']} of "
        f"{r['with_live_alternative']} calls that had a live alternative were lost "
        f"({r['total']} calls in all).",
    ]
    return "\n".join(lines) + "\n"
