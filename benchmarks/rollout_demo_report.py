"""What the demo's clients saw, per stage, and the demo's Markdown report (pure)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rollout.report import RolloutReport

Record = tuple[float, str, str]  # (answered at, monotonic; served version or ""; code)


def client_shares(
    records: Sequence[Record], windows: Sequence[tuple[str, float, float]], new_version: str
) -> list[dict[str, Any]]:
    """What the clients saw per window (``(label, begin, end)``, by answer time): requests,
    replies per served version, the new version's share of the replies, failures by code."""
    rows = []
    for label, begin, end in windows:
        inside = [r for r in records if begin <= r[0] < end]
        versions: dict[str, int] = {}
        failed: dict[str, int] = {}
        for _, version, code in inside:
            if code == "OK":
                versions[version] = versions.get(version, 0) + 1
            else:
                failed[code] = failed.get(code, 0) + 1
        answered = sum(versions.values())
        rows.append(
            {
                "window": label,
                "requests": len(inside),
                "by_version": dict(sorted(versions.items())),
                "share_new": round(versions.get(new_version, 0) / answered, 4)
                if answered
                else None,
                "failed": failed,
            }
        )
    return rows


def windows(
    report: RolloutReport, started: float, ended: float, settle_s: float = 0.0
) -> list[tuple[str, float, float]]:
    """The client windows of a rollout (monotonic clock): before its first stage, each
    stage, after. A failed stage lasts until its traffic was back on the old version plus
    ``settle_s`` (requests the stage routed to the new version are answered by then)."""
    stages = []
    for stage in report.stages:
        if stage.window[1] <= 0:
            continue
        begin, end = stage.window
        if stage.verdict == "fail" and report.traffic_back_at > 0:
            end = max(end, report.traffic_back_at + settle_s)
        stages.append((stage.label, begin, end))
    first = stages[0][1] if stages else ended
    last = stages[-1][2] if stages else ended
    return [
        ("before the first stage (pin, load, warm-up)", started, first),
        *stages,
        ("after (promotion or rollback)", last, ended),
    ]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1%}" if value <= 1 else f"{value:g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) or "0"
    return str(value)


def _ms(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.1f}"


def summary_table(scenarios: Mapping[str, Any]) -> list[str]:
    """One row per scenario: outcome, what the clients saw, and for a rollback the failed
    stage, why, how long the stage ran before its verdict and how long the rollback took."""
    lines = [
        "| scenario | outcome | client requests | client failures | failed stage | detected "
        "after (s) | traffic back (s) | rollback done (s) | reason |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, scenario in scenarios.items():
        rollout = scenario["rollout"]
        total = scenario["client_total"]
        timings = rollout["timings_s"]
        failed = next((s for s in rollout["stages"] if s["verdict"] == "fail"), None)
        detected = "-" if failed is None else f"{failed['ended_s'] - failed['started_s']:.2f}"
        lines.append(
            f"| {name} | {scenario['outcome']} | {total['requests']} | "
            f"{sum(total['failed'].values())} | {rollout['failed_stage'] or '-'} | {detected} | "
            f"{timings.get('traffic_back', '-')} | {timings.get('rollback', '-')} | "
            f"{scenario['reason'] or '-'} |"
        )
    return [*lines, ""]


def demo_markdown(results: Mapping[str, Any]) -> str:
    settings = results["settings"]
    lines = [
        "# Rollout under load (`lmforge rollout --demo`)",
        "",
        f"Embedded Triton (explicit model control) + gateway, `minilm` only, "
        f"{settings['concurrency']} closed-loop Embed clients (one SST-2 sentence each), "
        f"stages dwell {settings['dwell_s']:g} s, probes every 0.25 s; {settings['machine']}; "
        f"{settings['seconds']:g} s in all. Client columns count the replies by the version in "
        "`served_by` (by answer time); gateway columns are the stage's counter deltas "
        "(`lmforge_gateway_routed` with reason split, failures attributed to the new version).",
        "",
    ]
    lines += summary_table(results["scenarios"])
    for name, scenario in results["scenarios"].items():
        rollout = scenario["rollout"]
        total = scenario["client_total"]
        lines += [
            f"## {name}: {scenario['outcome']}",
            "",
            f"v{rollout['old']['version']} -> v{rollout['new']['version']}"
            + (f"; reason: {scenario['reason']}" if scenario["reason"] else ""),
            "",
            f"Clients: {total['requests']} requests, failed: {_fmt(total['failed'])}; "
            f"replies by version: {_fmt(total['by_version'])}. Timings (s): "
            f"{_fmt(rollout['timings_s'])}.",
            "",
            "| window | client requests | replies by version | new share (clients) | client "
            "failures | new share (gateway split) | new failures / attempts (gateway) | "
            "route p95 ms | verdict |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        by_label = {s["label"]: s for s in rollout["stages"]}
        for row in scenario["client_stages"]:
            stage = by_label.get(row["window"])
            gateway_share = failures = p95 = verdict = "-"
            if stage is not None:
                t = stage["traffic"]
                gateway_share = _fmt(t.get("share_new"))
                failures = f"{t.get('failures_new', 0):g} / {t.get('attempts_new', 0):g}"
                p95 = _ms(t.get("route_p95_ms"))
                verdict = stage["verdict"] or "-"
            lines.append(
                f"| {row['window']} | {row['requests']} | {_fmt(row['by_version'])} | "
                f"{_fmt(row['share_new'])} | {_fmt(row['failed'])} | {gateway_share} | "
                f"{failures} | {p95} | {verdict} |"
            )
        lines.append("")
    return "\n".join(lines)
