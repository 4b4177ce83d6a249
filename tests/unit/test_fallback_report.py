"""What ``lmforge bench fallback`` concludes from a recording (pure, no server)."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from benchmarks.fallback_report import (
    Call,
    Ledger,
    Recording,
    Scrape,
    batch_failures,
    breaker_openings,
    had_live_alternative,
    markdown,
    parse_metrics,
    percentile,
    phases,
    report,
    window,
)
from gateway import metrics

SERVERS = ("a", "b")
KILLED_AT = 100.0


def ok(began: float, ended: float) -> Call:
    return Call(began, ended, "OK")


def failed(began: float, ended: float, code: str = "UNAVAILABLE") -> Call:
    return Call(began, ended, code, "Triton at 127.0.0.1:9 is unavailable")


def scrape(at: float, a: float, b: float, breaker_a: str = "closed") -> Scrape:
    return Scrape(at, {"a": a, "b": b}, {}, {"a": breaker_a, "b": "closed"}, 1.0)


def recording(calls: Sequence[Call], died: dict[str, float], log: str = "") -> Recording:
    return Recording(
        route="minilm",
        deployments=SERVERS,
        victim="a",
        calls=calls,
        started=scrape(90.0, 10, 10),
        at_kill=scrape(KILLED_AT, 60, 55),
        ended=scrape(110.0, 61, 150, "open"),
        seen=[scrape(100.05, 60, 56), scrape(100.15, 61, 60, "open")],
        died=died,
        killed_at=KILLED_AT,
        killed_wall=1_700_000_000.0,
        load_stopped=110.0,
        killed_processes=3,
        gateway_log=log,
        health_after="SERVING",
    )


def test_a_call_had_a_live_alternative_while_some_server_was_up_until_its_answer() -> None:
    died = {"a": KILLED_AT}
    assert had_live_alternative(failed(99.0, 100.5), died, SERVERS)  # b stayed up
    assert had_live_alternative(failed(101.0, 101.1), died, SERVERS)


def test_a_call_had_no_live_alternative_once_every_server_had_died() -> None:
    died = {"a": KILLED_AT, "b": 105.0}
    assert not had_live_alternative(failed(104.0, 105.5), died, SERVERS)  # b died before it ended
    assert not had_live_alternative(failed(106.0, 106.1), died, SERVERS)
    assert had_live_alternative(failed(99.0, 104.0), died, SERVERS)  # b answered it in time


def test_phases_split_calls_answered_before_in_flight_at_and_started_after_the_kill() -> None:
    calls = [ok(98.0, 99.0), ok(99.5, 100.2), ok(100.0, 100.1), ok(101.0, 101.2)]
    split = phases(calls, KILLED_AT)
    assert split["before_kill"] == calls[:1]
    assert split["across_kill"] == calls[1:2]
    assert split["after_kill"] == calls[2:]


def test_percentile_is_the_nearest_rank_and_none_without_values() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


def test_window_counts_ok_answers_per_second_within_it() -> None:
    calls = [ok(0.0, 0.5), ok(0.5, 1.5), failed(1.0, 1.2), ok(1.5, 2.5)]
    stats = window(calls, 0.0, 2.0)
    assert stats["answered"] == 3 and stats["ok"] == 2
    assert stats["ok_per_s"] == 1.0 and stats["p99_ms"] == 1000.0


def test_parse_metrics_reads_the_route_s_counters_and_breakers_only() -> None:
    registry = CollectorRegistry()
    routed = Counter(metrics.ROUTED, "", ["route", "deployment", "reason"], registry=registry)
    fallbacks = Counter(metrics.FALLBACKS, "", ["route", "deployment"], registry=registry)
    breaker = Gauge(metrics.BREAKER_STATE, "", ["route", "deployment"], registry=registry)
    Gauge(metrics.BACKEND_READY, "", registry=registry).set(1)
    routed.labels("minilm", "a", "split").inc(3)
    routed.labels("minilm", "a", "default").inc(2)  # summed over reasons
    routed.labels("minilm", "b", "split").inc(4)
    routed.labels("other", "a", "split").inc(100)
    fallbacks.labels("minilm", "a").inc(1)
    breaker.labels("minilm", "a").set(2)
    breaker.labels("minilm", "b").set(0)
    seen = parse_metrics(generate_latest(registry).decode(), "minilm", at=5.0)
    assert seen == Scrape(5.0, {"a": 5.0, "b": 4.0}, {"a": 1.0}, {"a": "open", "b": "closed"}, 1.0)


def _log_line(wall: float, message: str) -> str:
    stamp = datetime.datetime.fromtimestamp(wall).strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
    return f"{stamp} WARNING gateway.breaker: {message}"


def test_breaker_openings_are_seconds_after_the_kill_of_that_breaker_only() -> None:
    kill = 1_700_000_000.0
    log = "\n".join(
        [
            _log_line(kill - 5, "breaker minilm/a open for 5.0s after 5 consecutive failures"),
            _log_line(kill + 0.25, "breaker minilm/b open for 5.0s after 5 consecutive failures"),
            _log_line(kill + 0.5, "breaker minilm/a open for 5.0s after 5 consecutive failures"),
            "a line without a stamp: breaker minilm/a open",
        ]
    )
    assert breaker_openings(log, "minilm/a", kill) == [0.5]


def test_batch_failures_count_batches_inputs_and_errors_without_addresses() -> None:
    log = "\n".join(
        [
            "x WARNING gateway.batching: batcher minilm/a: batch of 3 inputs failed: "
            "BackendUnavailable('Triton at 127.0.0.1:4001 is unavailable')",
            "x WARNING gateway.batching: batcher minilm/a: batch of 2 inputs failed: "
            "BackendUnavailable('Triton at 127.0.0.1:4001 is unavailable')",
            "x WARNING gateway.batching: batcher minilm/b: batch of 9 inputs failed: boom",
        ]
    )
    found = batch_failures(log, "minilm/a")
    assert found["batches"] == 2 and found["inputs"] == 5
    assert found["errors"] == {"BackendUnavailable('Triton at <address> is unavailable')": 2}


def test_the_must_show_holds_when_only_calls_without_a_live_alternative_failed() -> None:
    calls = [ok(95.0, 96.0), ok(99.9, 100.3), failed(106.0, 106.1), ok(101.0, 101.1)]
    result = report(recording(calls, {"a": KILLED_AT, "b": 105.0}))
    requests = result["requests"]
    assert requests["failed_with_live_alternative"] == 0
    assert requests["failed_without_live_alternative"] == 1
    assert result["must_show"]["held"] and not result["survivor_alive_at_end"]
    assert "Must-show HELD" in markdown(result)


def test_the_must_show_fails_when_a_call_with_a_live_alternative_failed() -> None:
    calls = [ok(95.0, 96.0), failed(99.9, 100.3), ok(101.0, 101.1)]
    result = report(recording(calls, {"a": KILLED_AT}))
    assert result["requests"]["failed_with_live_alternative"] == 1
    assert result["requests"]["across_kill"] == {"total": 1, "ok": 0}
    assert result["failures"][0]["live_alternative"] is True
    assert not result["must_show"]["held"]
    assert "Must-show DID NOT HOLD" in markdown(result)


def test_report_counts_answers_per_deployment_and_when_the_breaker_gauge_opened() -> None:
    result = report(recording([ok(95.0, 96.0)], {"a": KILLED_AT}))
    assert result["served_by"] == {
        "before_kill": {"a": 50, "b": 45},
        "after_kill": {"a": 1, "b": 95},
    }
    assert result["breaker"]["gauge_open_after_kill_s"] == pytest.approx(0.15)
    assert result["breaker"]["state_at_end"] == {"a": "open", "b": "closed"}
    assert result["survivor_alive_at_end"]


async def test_ledger_records_answers_and_failures_and_passes_both_on() -> None:
    ledger = Ledger()

    async def call(index: int) -> object:
        await asyncio.sleep(0)
        if index == 1:
            raise ConnectionError("gone")
        return index

    recorded = ledger.wrap(call)
    assert await recorded(0) == 0
    with pytest.raises(ConnectionError):
        await recorded(1)
    assert [(c.code, c.message) for c in ledger.calls] == [("OK", ""), ("ConnectionError", "gone")]
    assert all(c.ended >= c.began for c in ledger.calls)
