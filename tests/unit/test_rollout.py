"""``lmforge rollout``, the pure parts: the plan is strict, the decisions are functions of
counters and thresholds, the routes are valid gateway routes, and the demo's pieces do what
they say. The orchestration is tested in ``test_rollout_engine.py``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from benchmarks.rollout_demo import broken_version
from benchmarks.rollout_demo_report import client_shares
from gateway.config import GatewayConfig
from gateway.metrics import GatewayMetrics
from rollout.checks import (
    CheckResult,
    Verdict,
    check_errors,
    check_latency,
    check_shadow,
    decide,
    failure_reason,
    histogram_quantile,
)
from rollout.counters import counter_delta, latency_buckets, read_counters, traffic
from rollout.errors import RolloutError
from rollout.plan import DEFAULT_STAGES, Checks, Stage, load_plan, stage_order_problem
from rollout.routes import (
    deployment_entry,
    expected_view,
    idle_route,
    route_mapping,
    stage_route,
    views_match,
)

ROOT = Path(__file__).resolve().parents[2]
CHECKS = Checks(max_error_rate=0.01, min_requests=20, min_latency_samples=10)


# -- the plan ---------------------------------------------------------------------------------
def _plan_file(tmp: Path, text: str) -> Path:
    path = tmp / "plans" / "rollout.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


BASE_PLAN = (
    "route: minilm\n"
    "gateway: {target: 127.0.0.1:1, config: ../gateway.yaml, metrics_url: http://x/metrics}\n"
    "triton: {url: 127.0.0.1:2, repository: ../repo}\n"
)


def test_plan_paths_are_relative_to_the_file_and_numbers_are_weights(tmp_path: Path) -> None:
    path = _plan_file(
        tmp_path,
        BASE_PLAN + "source: v2\nstages: [{shadow: 0.1}, 5, {weight: 50, dwell_s: 3}, 100]\n",
    )
    plan = load_plan(path)
    assert plan.gateway.config == tmp_path / "gateway.yaml"
    assert plan.triton.repository == tmp_path / "repo"
    assert plan.source == tmp_path / "plans" / "v2"
    assert [(s.weight, s.shadow) for s in plan.stages] == [
        (None, 0.1),
        (5, None),
        (50, None),
        (100, None),
    ]
    assert plan.dwell(plan.stages[2]) == 3 and plan.dwell(plan.stages[1]) == plan.dwell_s
    assert plan.state_path == tmp_path / ".gateway.yaml.rollout-minilm.json"
    assert [s.label for s in plan.stages] == [
        "shadow 10%",
        "canary 5%",
        "canary 50%",
        "canary 100%",
    ]


def test_default_stages_are_1_10_50_100() -> None:
    assert [s.weight for s in DEFAULT_STAGES] == [1, 10, 50, 100]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ("stages: [10, 5, 100]\n", "does not rise"),
        ("stages: [1, 50]\n", "weight 100"),
        ("stages: [1, {shadow: 0.5}, 100]\n", "before the weighted"),
        ("stages: [{weight: 5, shadow: 0.5}, 100]\n", "not both"),
        ("stages: [0, 100]\n", "stages.0"),
        ("stages: [1, 150]\n", "stages.1"),
        ("dwel_s: 3\n", "dwel_s"),
        ("checks: {max_error_rat: 0.1}\n", "max_error_rat"),
    ],
)
def test_bad_plans_are_refused_naming_the_problem(tmp_path: Path, extra: str, needle: str) -> None:
    with pytest.raises(RolloutError, match=needle):
        load_plan(_plan_file(tmp_path, BASE_PLAN + extra))


def test_the_example_plan_loads_and_names_a_route_of_the_example_gateway() -> None:
    plan = load_plan(ROOT / "deploy" / "examples" / "rollout.yaml")
    assert plan.gateway.config == ROOT / "deploy" / "examples" / "gateway.yaml"
    assert [s.label for s in plan.stages] == [
        "shadow 20%",
        "canary 1%",
        "canary 10%",
        "canary 50%",
        "canary 100%",
    ]
    route = GatewayConfig.from_yaml(plan.gateway.config).model(plan.route)
    assert route is not None and len(route.deployment_configs) == 1
    assert route.cascade is None and route.shadow is None


def test_results_default_to_a_folder_under_the_current_directory_not_the_package() -> None:
    import benchmarks

    assert not benchmarks.RESULTS.is_absolute()
    assert benchmarks.RESULTS.resolve(strict=False) == Path.cwd() / "benchmarks" / "results"


def test_stage_order_problem_is_none_for_a_rollout() -> None:
    assert stage_order_problem([Stage(shadow=0.2), Stage(weight=3), Stage(weight=100)]) is None
    assert stage_order_problem([Stage(weight=100)]) is None
    assert stage_order_problem([Stage(shadow=0.2)]) is not None


# -- checks -----------------------------------------------------------------------------------
def test_error_check_fails_at_once_on_a_failure_within_the_minimum_sample() -> None:
    assert check_errors(0, 5, CHECKS).verdict == "wait"
    assert check_errors(1, 5, CHECKS).verdict == "fail"  # 1 > 1% of 20
    assert check_errors(0, 20, CHECKS).verdict == "pass"
    assert check_errors(0, 0, CHECKS).verdict == "wait"


def test_error_check_allows_the_rate_on_a_large_sample() -> None:
    assert check_errors(10, 1000, CHECKS).verdict == "pass"
    result = check_errors(11, 1000, CHECKS)
    assert result.verdict == "fail" and result.value == pytest.approx(0.011)
    assert "11 failed of 1000" in result.detail


def test_histogram_quantile_interpolates_within_the_bucket() -> None:
    buckets = {0.01: 0.0, 0.05: 50.0, 0.1: 100.0, math.inf: 100.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.05)
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.095)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.03)
    beyond = {0.01: 0.0, 0.1: 10.0, math.inf: 100.0}
    assert histogram_quantile(0.95, beyond) == 0.1  # in +Inf: the last finite bound
    assert math.isnan(histogram_quantile(0.95, {math.inf: 0.0}))
    assert math.isnan(histogram_quantile(0.95, {}))


def _hist(p95_bucket: float, count: float) -> dict[float, float]:
    return {0.01: 0.0, p95_bucket: count, math.inf: count}


def test_latency_check_compares_the_route_p95_with_the_baseline() -> None:
    base = _hist(0.05, 100)  # p95 47.5 ms
    same = check_latency(_hist(0.05, 100), base, CHECKS)
    assert same.verdict == "pass" and same.value == pytest.approx(1.0) and same.final_only
    slow = check_latency(_hist(0.25, 100), base, CHECKS)
    assert slow.verdict == "fail" and slow.value is not None and slow.value > 1.5
    assert check_latency(_hist(0.25, 5), base, CHECKS).verdict == "wait"
    assert check_latency(_hist(0.25, 100), _hist(0.05, 3), CHECKS).verdict == "skip"


def test_shadow_check_needs_enough_comparisons_and_agreement() -> None:
    assert check_shadow(5, 5.0, CHECKS).verdict == "wait"
    assert check_shadow(20, 19.99, CHECKS).verdict == "pass"
    low = check_shadow(20, 18.0, CHECKS)
    assert low.verdict == "fail" and low.value == pytest.approx(0.9)


def _result(verdict: Verdict, final_only: bool = False) -> CheckResult:
    return CheckResult("x", verdict, None, 1.0, "detail", final_only)


def test_decide_fails_early_but_judges_final_only_checks_after_the_dwell() -> None:
    assert decide([_result("fail")], 1, 10, 60) == "fail"
    assert decide([_result("fail", final_only=True)], 1, 10, 60) == "wait"
    assert decide([_result("fail", final_only=True)], 10, 10, 60) == "fail"
    assert decide([_result("pass"), _result("pass")], 5, 10, 60) == "wait"
    assert decide([_result("pass"), _result("skip")], 10, 10, 60) == "pass"


def test_decide_waits_for_evidence_past_the_dwell_then_fails() -> None:
    waiting = [_result("pass"), _result("wait")]
    assert decide(waiting, 30, 10, 60) == "wait"
    assert decide(waiting, 70, 10, 60) == "fail"
    assert "not enough evidence" in failure_reason(waiting, 70, 10)


# -- routes -----------------------------------------------------------------------------------
BASE_ROUTE = {
    "name": "minilm",
    "task": "embed",
    "triton_model": "minilm",
    "breaker": {"failures": 3, "open_seconds": 1.0},
}
OLD = deployment_entry("minilm", "minilm", 1, "default")
NEW = deployment_entry("minilm-v2", "minilm", 2, "default")


def _valid(route: dict[str, Any]) -> None:
    GatewayConfig.from_mapping({"models": [route]})


def test_stage_routes_are_valid_gateway_routes_with_the_right_weights() -> None:
    canary = stage_route(BASE_ROUTE, OLD, NEW, Stage(weight=10))
    assert canary["split"] == {"minilm": 90.0, "minilm-v2": 10.0}
    assert canary["breaker"] == BASE_ROUTE["breaker"] and "triton_model" not in canary
    shadow = stage_route(BASE_ROUTE, OLD, NEW, Stage(shadow=0.25))
    assert shadow["shadow"] == {"deployment": "minilm-v2", "share": 0.25} and "split" not in shadow
    idle = idle_route(BASE_ROUTE, OLD, NEW)
    pinned = route_mapping(BASE_ROUTE, [OLD])
    for route in (
        canary,
        shadow,
        idle,
        pinned,
        stage_route(BASE_ROUTE, OLD, NEW, Stage(weight=100)),
    ):
        _valid(route)
    assert expected_view(idle) == {"minilm": ("1", 100.0, False), "minilm-v2": ("2", 0.0, False)}
    assert expected_view(shadow)["minilm-v2"] == ("2", 0.0, True)
    assert expected_view(BASE_ROUTE) == {"minilm": ("", 0.0, False)}


def test_views_match_tolerates_float_noise_only() -> None:
    expected = expected_view(stage_route(BASE_ROUTE, OLD, NEW, Stage(weight=1)))
    assert views_match(
        {"minilm": ("1", 99.0000001, False), "minilm-v2": ("2", 1.0, False)}, expected
    )
    assert not views_match(
        {"minilm": ("1", 100.0, False), "minilm-v2": ("2", 0.0, False)}, expected
    )
    assert not views_match({"minilm": ("1", 99.0, False)}, expected)


# -- metrics ----------------------------------------------------------------------------------
def _metrics_text(metrics: GatewayMetrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_read_counters_and_traffic_attribute_what_the_gateway_counts() -> None:
    metrics = GatewayMetrics()
    before = read_counters(_metrics_text(metrics), "minilm")
    metrics.routed.labels("minilm", "minilm", "split").inc(90)
    metrics.routed.labels("minilm", "minilm-v2", "split").inc(10)
    metrics.routed.labels("minilm", "minilm-v2", "pinned").inc(5)
    metrics.routed.labels("other", "minilm-v2", "split").inc(1000)  # another route
    metrics.fallbacks.labels("minilm", "minilm-v2").inc(2)
    metrics.requests.labels("Embed", "minilm", "INTERNAL").inc(3)
    metrics.requests.labels("Embed", "minilm", "INVALID_ARGUMENT").inc(7)  # the caller's fault
    metrics.requests.labels("Embed", "minilm", "OK").inc(100)
    metrics.shadow_requests.labels("minilm", "minilm-v2", "compared").inc(4)
    metrics.shadow_requests.labels("minilm", "minilm-v2", "failed").inc(1)
    for value in (0.9, 1.0, 1.0, 0.98):
        metrics.shadow_agreement.labels("minilm", "minilm-v2").observe(value)
    for _ in range(100):
        metrics.latency.labels("Embed", "minilm").observe(0.02)
    delta = counter_delta(read_counters(_metrics_text(metrics), "minilm"), before)
    seen = traffic(delta, "minilm", "minilm-v2")
    assert (seen.split_old, seen.split_new, seen.answered_new) == (90, 10, 15)
    assert seen.share_new == pytest.approx(0.1)
    assert seen.route_errors == 3 and seen.fallbacks_new == 2 and seen.shadow_failed == 1
    assert seen.failures_new == 6 and seen.attempts_new == 15 + 4 + 6
    assert seen.agreement_sum == pytest.approx(3.88) and seen.shadow_compared == 4
    p95 = histogram_quantile(0.95, latency_buckets(delta))
    assert 0.015 < p95 <= 0.025


def test_counter_delta_clamps_a_restarted_gateway_to_zero() -> None:
    assert counter_delta({"a": 3.0, "b": 10.0}, {"a": 5.0, "b": 4.0}) == {"a": 0.0, "b": 6.0}


def test_client_shares_bucket_replies_by_answer_time() -> None:
    records = [(0.5, "1", "OK"), (1.5, "1", "OK"), (1.6, "2", "OK"), (1.7, "", "INTERNAL")]
    rows = client_shares(records, [("a", 0, 1), ("b", 1, 2)], "2")
    assert rows[0] == {
        "window": "a",
        "requests": 1,
        "by_version": {"1": 1},
        "share_new": 0.0,
        "failed": {},
    }
    assert rows[1]["requests"] == 3 and rows[1]["share_new"] == 0.5
    assert rows[1]["failed"] == {"INTERNAL": 1}


def test_the_broken_demo_version_keeps_the_model_and_appends_the_failure(tmp_path: Path) -> None:
    source = tmp_path / "1"
    source.mkdir()
    (source / "model.py").write_text(
        "class TritonPythonModel:\n    def execute(self, r):\n        return r\n"
    )
    broken = broken_version(source, tmp_path / "broken", healthy_executes=2)
    namespace: dict[str, Any] = {}
    exec((broken / "model.py").read_text(), namespace)
    model = namespace["TritonPythonModel"]()
    assert model.execute([1]) == [1] and model.execute([2]) == [2]
    with pytest.raises(RuntimeError, match="deliberately broken"):
        model.execute([3])


def test_demo_markdown_summarizes_each_scenario_with_its_rollback() -> None:
    from benchmarks.rollout_demo_report import demo_markdown

    stage = {
        "label": "canary 1%",
        "verdict": "fail",
        "started_s": 10.0,
        "ended_s": 10.5,
        "traffic": {"share_new": 0.01, "failures_new": 1.0, "attempts_new": 3.0},
    }
    row = {"window": "canary 1%", "requests": 40, "by_version": {"2": 40}, "share_new": 0.0}
    results = {
        "settings": {"concurrency": 4, "dwell_s": 4.0, "machine": "2 CPUs", "seconds": 90.0},
        "scenarios": {
            "bad-canary": {
                "outcome": "rolled_back",
                "reason": "canary 1%: error_rate: 1 failed of 3 (limit 0.01)",
                "client_total": {"requests": 40, "failed": {"INTERNAL": 2}, "by_version": {}},
                "client_stages": [{**row, "failed": {"INTERNAL": 2}}],
                "rollout": {
                    "old": {"version": 2},
                    "new": {"version": 3},
                    "failed_stage": "canary 1%",
                    "timings_s": {"traffic_back": 0.3, "rollback": 4.1},
                    "stages": [stage],
                },
            }
        },
    }
    text = demo_markdown(results)
    assert (
        "| bad-canary | rolled_back | 40 | 2 | canary 1% | 0.50 | 0.3 | 4.1 | canary 1%: "
        "error_rate: 1 failed of 3 (limit 0.01) |" in text
    )
    assert "| canary 1% | 40 | 2: 40 | 0.0% | INTERNAL: 2 | 1.0% | 1 / 3 | - | fail |" in text


def test_a_failed_stage_window_lasts_until_its_traffic_was_back_on_the_old_version() -> None:
    from benchmarks.rollout_demo_report import windows
    from rollout.report import RolloutReport, StageReport

    report = RolloutReport("minilm", ["minilm"], {}, {})
    baseline = StageReport("baseline 0%", 0.0, None, 3.0, window=(10.0, 13.0), verdict="pass")
    canary = StageReport("canary 1%", 1.0, None, 4.0, window=(13.1, 13.2), verdict="fail")
    report.stages = [baseline, canary]
    report.traffic_back_at = 13.5
    assert windows(report, 5.0, 20.0, settle_s=1.0) == [
        ("before the first stage (pin, load, warm-up)", 5.0, 10.0),
        ("baseline 0%", 10.0, 13.0),
        ("canary 1%", 13.1, 14.5),
        ("after (promotion or rollback)", 14.5, 20.0),
    ]
    assert "traffic_back_at" not in report.as_dict()
