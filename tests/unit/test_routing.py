from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from gateway.breaker import CircuitBreaker
from gateway.config import ConfigError, GatewayConfig
from gateway.errors import InvalidInput, ModelNotFound
from gateway.routing import (
    PIN_METADATA_KEY,
    Deployment,
    Router,
    RoutingTable,
    escalation_indices,
    label_agreement,
    mean_cosine,
)
from gateway.routing_config import BreakerConfig, DeploymentConfig, RouteConfig

ENDPOINTS = ("default", "gpu", "cpu")

FULL_ROUTE_YAML = """
name: sentiment
task: classify
deployments:
  - {name: small, triton_model: sentiment_small, endpoint: cpu}
  - {name: large, triton_model: sentiment_large, endpoint: gpu, version: 3}
  - {name: candidate, triton_model: sentiment_v4, endpoint: gpu}
split: {small: 90, large: 10}
length_rules: [{above_tokens: 256, deployment: large}]
cascade: {first: small, then: large, threshold: 0.8}
fallback: true
shadow: {deployment: candidate, share: 0.05}
breaker: {failures: 3, open_seconds: 10}
"""


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def route(name: str = "m", task: str = "classify", **fields: Any) -> RouteConfig:
    if "deployments" not in fields and "triton_model" not in fields:
        fields["deployments"] = [dep("a"), dep("b"), dep("c")]
    return RouteConfig.model_validate({"name": name, "task": task, **fields})


def dep(name: str, endpoint: str = "default", version: int | None = None) -> dict[str, Any]:
    return {"name": name, "triton_model": f"{name}_model", "endpoint": endpoint, "version": version}


def router_for(*routes: RouteConfig, **kwargs: Any) -> Router:
    return Router(RoutingTable(routes, ENDPOINTS), **kwargs)


def names(deployments: tuple[Deployment, ...]) -> list[str]:
    return [d.name for d in deployments]


def trip(router: Router, deployment: Deployment) -> None:
    for _ in range(router.breaker(deployment).config.failures):
        router.record(deployment, ok=False)
    assert router.breaker(deployment).state == "open"


# --- config --------------------------------------------------------------------------------


def test_route_config_reads_todays_model_entry_as_one_deployment_on_the_default_endpoint() -> None:
    gateway = GatewayConfig.from_mapping(
        {
            "models": [
                {"name": "sentiment", "task": "classify", "triton_model": "sst2", "version": 2}
            ]
        }
    )
    config = gateway.models[0]
    assert config.deployment_configs == (
        DeploymentConfig(name="sst2", triton_model="sst2", endpoint="default", version=2),
    )
    plan = Router(RoutingTable.from_config(gateway)).plan("sentiment", "classify")
    assert plan.deployments == (Deployment("sentiment", "sst2", "default", "sst2", 2),)
    assert plan.reason == "default" and plan.cascade is None and plan.shadow is None


def test_route_config_with_every_policy_loads_from_yaml() -> None:
    config = RouteConfig.model_validate(yaml.safe_load(FULL_ROUTE_YAML))
    assert [d.name for d in config.deployment_configs] == ["small", "large", "candidate"]
    assert config.breaker == BreakerConfig(failures=3, open_seconds=10.0)
    assert config.cascade is not None and config.cascade.threshold == 0.8
    table = RoutingTable([config], ENDPOINTS)
    assert table.routes["sentiment"].shadow is not None
    assert table.routes["sentiment"].shadow.name == "candidate"


def test_route_config_rejects_both_shorthand_and_deployments() -> None:
    with pytest.raises(ValidationError, match="either triton_model or deployments, not both"):
        route(triton_model="x", deployments=[dep("a")])


def test_route_config_rejects_neither_shorthand_nor_deployments() -> None:
    with pytest.raises(ValidationError, match="not neither"):
        RouteConfig.model_validate({"name": "m", "task": "embed"})


def test_route_config_rejects_top_level_version_beside_deployments() -> None:
    with pytest.raises(ValidationError, match="version 2 goes with triton_model"):
        route(version=2)


@pytest.mark.parametrize(
    ("policy", "where"),
    [
        ({"split": {"a": 1, "zz": 1}}, "split"),
        ({"length_rules": [{"above_tokens": 10, "deployment": "zz"}]}, "length_rules"),
        ({"cascade": {"first": "a", "then": "zz", "threshold": 0.5}}, "cascade.then"),
        ({"shadow": {"deployment": "zz", "share": 0.1}}, "shadow"),
    ],
)
def test_route_config_rejects_unknown_deployment_naming_it_and_the_known_ones(
    policy: dict[str, Any], where: str
) -> None:
    with pytest.raises(ValidationError) as info:
        route(**policy)
    message = str(info.value)
    assert f"{where} names deployment 'zz'" in message
    assert "not one of its deployments: a, b, c" in message


def test_route_config_rejects_repeated_deployment_names() -> None:
    with pytest.raises(ValidationError, match="deployment name 'a' repeats"):
        route(deployments=[dep("a"), dep("a", endpoint="gpu")])


def test_route_config_rejects_cascade_on_an_embed_route() -> None:
    cascade = {"first": "a", "then": "b", "threshold": 0.5}
    with pytest.raises(ValidationError, match="cascade needs task 'classify', not 'embed'"):
        route(task="embed", cascade=cascade)


def test_route_config_rejects_cascade_to_itself() -> None:
    cascade = {"first": "a", "then": "a", "threshold": 0.5}
    with pytest.raises(ValidationError, match="cascade first 'a' and then 'a' must differ"):
        route(cascade=cascade)


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.01])
def test_route_config_rejects_cascade_threshold_outside_zero_to_one(threshold: float) -> None:
    with pytest.raises(ValidationError, match="threshold"):
        route(cascade={"first": "a", "then": "b", "threshold": threshold})


def test_route_config_accepts_cascade_threshold_of_one() -> None:
    assert route(cascade={"first": "a", "then": "b", "threshold": 1}).cascade is not None


def test_route_config_rejects_split_weights_that_are_negative_or_sum_to_zero() -> None:
    with pytest.raises(ValidationError, match="split"):
        route(split={"a": -1, "b": 2})
    with pytest.raises(ValidationError, match=r"split weights \{'a': 0.0, 'b': 0.0\} sum to 0"):
        route(split={"a": 0, "b": 0})


def test_route_config_rejects_repeated_length_thresholds() -> None:
    rules = [{"above_tokens": 100, "deployment": "b"}, {"above_tokens": 100, "deployment": "c"}]
    with pytest.raises(ValidationError, match=r"repeat above_tokens \[100\]"):
        route(length_rules=rules)


def test_route_config_rejects_shadow_that_is_the_only_deployment() -> None:
    with pytest.raises(ValidationError, match="shadow 'a' is the only deployment"):
        route(deployments=[dep("a")], shadow={"deployment": "a", "share": 0.5})


def test_route_config_rejects_shadow_that_also_takes_real_traffic() -> None:
    with pytest.raises(ValidationError, match="shadow 'b' only receives copies, but split"):
        route(split={"a": 1, "b": 1}, shadow={"deployment": "b", "share": 0.5})


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_route_config_rejects_shadow_share_outside_zero_to_one(share: float) -> None:
    with pytest.raises(ValidationError, match="share"):
        route(shadow={"deployment": "c", "share": share})


def test_route_config_rejects_unknown_keys_and_bad_names() -> None:
    with pytest.raises(ValidationError, match="splitt"):
        route(splitt={"a": 1})
    with pytest.raises(ValidationError, match="name"):
        route(deployments=[{"name": "-bad", "triton_model": "x"}])


def test_breaker_config_defaults_and_limits() -> None:
    assert BreakerConfig() == BreakerConfig(failures=5, open_seconds=5.0)
    with pytest.raises(ValidationError, match="failures"):
        BreakerConfig(failures=0)
    with pytest.raises(ValidationError, match="open_seconds"):
        BreakerConfig(open_seconds=0)


def test_routing_table_rejects_unknown_endpoint_naming_route_deployment_and_endpoint() -> None:
    config = route(deployments=[dep("a"), dep("b", endpoint="tpu")])
    with pytest.raises(ConfigError) as info:
        RoutingTable([config], ENDPOINTS)
    assert "route 'm': deployment 'b' uses endpoint 'tpu'" in str(info.value)
    assert "known endpoints: cpu, default, gpu" in str(info.value)


def test_routing_table_rejects_repeated_route_names() -> None:
    with pytest.raises(ConfigError, match=r"routes\.1\.name 'm' repeats"):
        RoutingTable([route(), route()], ENDPOINTS)


def test_routing_table_routes_cannot_be_changed() -> None:
    table = RoutingTable([route()], ENDPOINTS)
    with pytest.raises(TypeError):
        table.routes["x"] = table.routes["m"]  # type: ignore[index]
    with pytest.raises(AttributeError):
        table.extra = 1  # type: ignore[attr-defined]


# --- plan: model, task, default, fallback -------------------------------------------------


def test_plan_of_unknown_model_raises_model_not_found_listing_served_models() -> None:
    router = router_for(route("beta"), route("alpha"))
    with pytest.raises(ModelNotFound, match="unknown model 'gamma'; served models: alpha, beta"):
        router.plan("gamma", "classify")


def test_plan_with_wrong_task_raises_invalid_input_on_the_model_field() -> None:
    router = router_for(route(task="embed"))
    with pytest.raises(InvalidInput) as info:
        router.plan("m", "classify")
    assert [(v.field, v.description) for v in info.value.violations] == [
        ("model", "'m' is a embed model, not classify")
    ]


def test_plan_defaults_to_first_deployment_with_the_others_as_fallbacks_in_config_order() -> None:
    plan = router_for(route()).plan("m", "classify")
    assert names(plan.deployments) == ["a", "b", "c"]
    assert plan.reason == "default" and plan.model == "m" and plan.task == "classify"
    assert plan.deployments[1] == Deployment("m", "b", "default", "b_model", None)


def test_plan_has_no_fallbacks_when_fallback_is_off() -> None:
    plan = router_for(route(fallback=False)).plan("m", "classify")
    assert names(plan.deployments) == ["a"]


def test_plan_moves_deployments_with_open_breaker_to_the_end() -> None:
    router = router_for(route())
    trip(router, router.table.routes["m"].deployments[0])
    assert names(router.plan("m", "classify").deployments) == ["b", "c", "a"]


def test_plan_keeps_every_deployment_in_order_when_all_breakers_are_open() -> None:
    router = router_for(route())
    for deployment in router.table.routes["m"].deployments:
        trip(router, deployment)
    assert names(router.plan("m", "classify").deployments) == ["a", "b", "c"]


def test_plan_keeps_chosen_deployment_with_open_breaker_when_fallback_is_off() -> None:
    router = router_for(route(fallback=False))
    trip(router, router.table.routes["m"].deployments[0])
    assert names(router.plan("m", "classify").deployments) == ["a"]


# --- plan: pin --------------------------------------------------------------------------


def test_pin_answers_ahead_of_length_split_and_cascade_with_fallbacks_after_it() -> None:
    config = route(
        split={"a": 1},
        length_rules=[{"above_tokens": 5, "deployment": "b"}],
        cascade={"first": "a", "then": "b", "threshold": 0.5},
    )
    plan = router_for(config).plan("m", "classify", pin="c", longest_tokens=100, routing_key="k")
    assert names(plan.deployments) == ["c", "a", "b"]
    assert plan.reason == "pinned" and plan.cascade is None


def test_pin_stays_first_even_when_its_breaker_is_open() -> None:
    router = router_for(route())
    trip(router, router.table.routes["m"].deployments[2])
    assert names(router.plan("m", "classify", pin="c").deployments) == ["c", "a", "b"]


def test_pin_has_no_fallbacks_when_fallback_is_off() -> None:
    plan = router_for(route(fallback=False)).plan("m", "classify", pin="b")
    assert names(plan.deployments) == ["b"]


def test_unknown_pin_raises_invalid_input_naming_the_known_deployments() -> None:
    with pytest.raises(InvalidInput) as info:
        router_for(route()).plan("m", "classify", pin="zz")
    (violation,) = info.value.violations
    assert violation.field == PIN_METADATA_KEY == "x-lmforge-deployment"
    assert violation.description == "model 'm' has no deployment 'zz'; known: a, b, c"


# --- plan: length rules and split ------------------------------------------------------------


def test_length_rule_with_the_largest_exceeded_threshold_wins() -> None:
    rules = [
        {"above_tokens": 100, "deployment": "b"},
        {"above_tokens": 500, "deployment": "c"},
    ]
    router = router_for(route(length_rules=rules))
    chosen = {n: router.plan("m", "classify", longest_tokens=n) for n in (100, 101, 500, 501)}
    assert {n: p.deployments[0].name for n, p in chosen.items()} == {
        100: "a",
        101: "b",
        500: "b",
        501: "c",
    }
    assert [chosen[n].reason for n in (100, 101)] == ["default", "length"]
    assert names(chosen[501].deployments) == ["c", "a", "b"]


def test_length_rule_beats_split() -> None:
    config = route(split={"a": 1}, length_rules=[{"above_tokens": 10, "deployment": "c"}])
    router = router_for(config)
    long_plan = router.plan("m", "classify", longest_tokens=11, routing_key="k")
    short_plan = router.plan("m", "classify", longest_tokens=10, routing_key="k")
    assert (long_plan.deployments[0].name, long_plan.reason) == ("c", "length")
    assert (short_plan.deployments[0].name, short_plan.reason) == ("a", "split")


def test_split_sends_the_same_key_to_the_same_arm_every_time_and_in_every_router() -> None:
    config = route(split={"a": 1, "b": 1, "c": 1})
    first, second = router_for(config), router_for(config, rng=random.Random(7))
    for key in (f"user-{i}" for i in range(200)):
        arm = first.plan("m", "classify", routing_key=key).deployments[0]
        assert all(first.plan("m", "classify", routing_key=key).deployments[0] == arm for _ in "ab")
        assert second.plan("m", "classify", routing_key=key).deployments[0] == arm


SPLIT_ARMS_SCRIPT = """
import sys
from gateway.routing import Router, RoutingTable
from gateway.routing_config import RouteConfig
deployments = [{"name": n, "triton_model": n} for n in "abc"]
config = RouteConfig(name="m", task="classify", deployments=deployments, split={"a": 1, "b": 1, "c": 1})
router = Router(RoutingTable([config], ["default"]))
print("".join(router.plan("m", "classify", routing_key=f"user-{i}").deployments[0].name for i in range(60)))
"""


def test_split_arm_of_a_key_is_the_same_in_another_process_with_another_hash_seed() -> None:
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", SPLIT_ARMS_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
        check=True,
    )
    router = router_for(
        route(deployments=[dep("a"), dep("b"), dep("c")], split={"a": 1, "b": 1, "c": 1})
    )
    here = "".join(
        router.plan("m", "classify", routing_key=f"user-{i}").deployments[0].name for i in range(60)
    )
    assert result.stdout.strip() == here
    assert set(here) == {"a", "b", "c"}


def test_split_shares_over_random_keys_match_weights_within_two_points() -> None:
    router = router_for(route(split={"a": 70, "b": 20, "c": 10}))
    rng = random.Random(1234)
    keys = [f"{rng.getrandbits(64):x}" for _ in range(10_000)]
    counts = Counter(router.plan("m", "classify", routing_key=k).deployments[0].name for k in keys)
    shares = {arm: counts[arm] / len(keys) for arm in "abc"}
    assert shares == pytest.approx({"a": 0.70, "b": 0.20, "c": 0.10}, abs=0.02)


def test_split_without_key_draws_from_the_rng_by_weight() -> None:
    config = route(split={"a": 1, "b": 3, "c": 0})
    one, two = router_for(config, rng=random.Random(5)), router_for(config, rng=random.Random(5))
    picks = [one.plan("m", "classify").deployments[0].name for _ in range(4000)]
    assert picks[:50] == [two.plan("m", "classify").deployments[0].name for _ in range(50)]
    counts = Counter(picks)
    assert counts["c"] == 0
    assert counts["b"] / len(picks) == pytest.approx(0.75, abs=0.03)


def test_split_arm_with_open_breaker_goes_to_the_end_and_the_next_arm_answers() -> None:
    router = router_for(route(split={"b": 1}))
    plan = router.plan("m", "classify", routing_key="k")
    assert (names(plan.deployments), plan.reason) == (["b", "a", "c"], "split")
    trip(router, plan.deployments[0])
    assert names(router.plan("m", "classify", routing_key="k").deployments) == ["a", "c", "b"]


# --- plan: cascade ---------------------------------------------------------------------------


CASCADE = {"first": "b", "then": "c", "threshold": 0.7}


def test_cascade_puts_its_first_deployment_first_with_fallbacks_after() -> None:
    plan = router_for(route(cascade=CASCADE)).plan("m", "classify")
    assert plan.reason == "cascade"
    assert plan.cascade is not None
    assert (plan.cascade.first.name, plan.cascade.then.name) == ("b", "c")
    assert plan.cascade.threshold == 0.7
    assert plan.deployments[0] is plan.cascade.first
    assert names(plan.deployments) == ["b", "a", "c"]


def test_cascade_with_open_first_breaker_sends_the_request_to_then_directly() -> None:
    router = router_for(route(cascade=CASCADE))
    trip(router, router.table.routes["m"].deployments[1])
    plan = router.plan("m", "classify")
    assert plan.cascade is None
    assert names(plan.deployments) == ["c", "a", "b"]


def test_cascade_with_split_cascades_only_requests_whose_arm_is_the_first() -> None:
    router = router_for(route(cascade=CASCADE, split={"b": 1, "c": 1}))
    plans = [router.plan("m", "classify", routing_key=str(i)) for i in range(100)]
    cascading = [p for p in plans if p.cascade is not None]
    direct = [p for p in plans if p.cascade is None]
    assert cascading and direct
    assert all(p.deployments[0].name == "b" and p.reason == "cascade" for p in cascading)
    assert all(p.deployments[0].name == "c" and p.reason == "split" for p in direct)


# --- plan: shadow ----------------------------------------------------------------------------


def test_shadow_deployment_never_serves_or_falls_back() -> None:
    router = router_for(route(shadow={"deployment": "a", "share": 1.0}))
    plan = router.plan("m", "classify", routing_key="k")
    assert names(plan.deployments) == ["b", "c"]
    assert plan.shadow is not None and plan.shadow.name == "a"


def test_shadow_is_picked_for_its_share_of_keys_and_stays_sticky() -> None:
    router = router_for(route(shadow={"deployment": "c", "share": 0.25}))
    keys = [f"k{i}" for i in range(4000)]
    picked = [router.plan("m", "classify", routing_key=k).shadow is not None for k in keys]
    assert sum(picked) / len(keys) == pytest.approx(0.25, abs=0.02)
    again = [router.plan("m", "classify", routing_key=k).shadow is not None for k in keys]
    assert again == picked


def test_shadow_without_key_draws_from_the_rng() -> None:
    router = router_for(route(shadow={"deployment": "c", "share": 0.5}), rng=random.Random(3))
    picked = [router.plan("m", "classify").shadow is not None for _ in range(2000)]
    assert sum(picked) / len(picked) == pytest.approx(0.5, abs=0.04)


@pytest.mark.parametrize(("share", "expected"), [(0.0, False), (1.0, True)])
def test_shadow_share_zero_never_and_one_always(share: float, expected: bool) -> None:
    router = router_for(route(shadow={"deployment": "c", "share": share}))
    assert {
        router.plan("m", "classify", routing_key=str(i)).shadow is not None for i in range(300)
    } == {expected}


def test_pinning_the_shadow_deployment_serves_from_it_without_a_copy() -> None:
    router = router_for(route(shadow={"deployment": "c", "share": 1.0}))
    plan = router.plan("m", "classify", pin="c")
    assert names(plan.deployments) == ["c", "a", "b"]
    assert plan.shadow is None


def test_shadow_with_open_breaker_is_not_picked() -> None:
    router = router_for(route(shadow={"deployment": "c", "share": 1.0}))
    trip(router, router.table.routes["m"].deployments[2])
    assert router.plan("m", "classify", routing_key="k").shadow is None


# --- circuit breaker -------------------------------------------------------------------------


def breaker(failures: int = 3, open_seconds: float = 10.0) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    config = BreakerConfig(failures=failures, open_seconds=open_seconds)
    return CircuitBreaker(config, clock=clock, name="m/a"), clock


def test_breaker_opens_after_consecutive_failures_only() -> None:
    cb, _ = breaker(failures=3)
    cb.record_failure()
    cb.record_failure()
    cb.record_success()
    cb.record_failure()
    cb.record_failure()
    assert cb.state == "closed" and cb.allow()
    cb.record_failure()
    assert cb.state == "open"
    assert not cb.allow() and not cb.available


def test_breaker_goes_half_open_after_open_seconds_and_closes_on_probe_success() -> None:
    cb, clock = breaker(failures=1, open_seconds=10)
    cb.record_failure()
    clock.advance(9.99)
    assert cb.state == "open" and not cb.allow()
    clock.advance(0.01)
    assert cb.state == "half_open"
    assert cb.available
    assert cb.allow()
    cb.record_success()
    assert cb.state == "closed" and cb.allow() and cb.allow()


def test_breaker_half_open_allows_one_probe_at_a_time() -> None:
    cb, clock = breaker(failures=1, open_seconds=10)
    cb.record_failure()
    clock.advance(10)
    assert cb.available and cb.available
    assert cb.allow()
    assert not cb.allow()
    assert not cb.available
    assert cb.state == "half_open"


def test_breaker_half_open_probe_failure_reopens_for_another_open_seconds() -> None:
    cb, clock = breaker(failures=2, open_seconds=10)
    cb.record_failure()
    cb.record_failure()
    clock.advance(10)
    assert cb.allow()
    cb.record_failure()
    assert cb.state == "open"
    clock.advance(9.9)
    assert cb.state == "open" and not cb.allow()
    clock.advance(0.1)
    assert cb.state == "half_open" and cb.allow()


def test_breaker_allows_another_probe_when_the_first_never_reports() -> None:
    cb, clock = breaker(failures=1, open_seconds=10)
    cb.record_failure()
    clock.advance(10)
    assert cb.allow()
    clock.advance(9)
    assert not cb.allow()
    clock.advance(1)
    assert cb.allow()


def test_breaker_ignores_late_outcomes_while_open() -> None:
    cb, clock = breaker(failures=1, open_seconds=10)
    cb.record_failure()
    clock.advance(5)
    cb.record_success()
    cb.record_failure()
    assert cb.state == "open"
    clock.advance(5)
    assert cb.state == "half_open"


# --- router: breakers, swap ---------------------------------------------------


def test_router_record_feeds_the_deployment_breaker() -> None:
    clock = FakeClock()
    router = router_for(route(breaker={"failures": 2, "open_seconds": 3}), clock=clock)
    a = router.table.routes["m"].deployments[0]
    router.record(a, ok=False)
    router.record(a, ok=False)
    assert router.breaker(a).state == "open"
    clock.advance(3)
    assert router.breaker(a).allow()
    router.record(a, ok=True)
    assert router.breaker(a).state == "closed"
    assert router.breaker(router.table.routes["m"].deployments[1]).state == "closed"


def test_router_ignores_outcomes_of_deployments_it_no_longer_has() -> None:
    router = router_for(route())
    gone = Deployment("m", "zz", "default", "zz_model", None)
    for _ in range(10):
        router.record(gone, ok=False)
    assert router.breaker(gone).state == "closed" and router.breaker(gone).allow()


def test_swap_keeps_old_plans_valid_and_new_plans_follow_the_new_table() -> None:
    router = router_for(route(), route("old"))
    before = router.plan("m", "classify")
    router.swap(RoutingTable([route(deployments=[dep("c"), dep("d", endpoint="gpu")])], ENDPOINTS))
    assert names(before.deployments) == ["a", "b", "c"]
    router.record(before.deployments[0], ok=False)
    assert names(router.plan("m", "classify").deployments) == ["c", "d"]
    with pytest.raises(ModelNotFound, match=r"served models: m$"):
        router.plan("old", "classify")


def test_swap_keeps_breaker_state_of_unchanged_deployments_only() -> None:
    router = router_for(route(deployments=[dep("a"), dep("b", version=1), dep("c")]))
    a, b, c = router.table.routes["m"].deployments
    for deployment in (a, b, c):
        trip(router, deployment)
    changed = route(deployments=[dep("a"), dep("b", version=2), dep("c", endpoint="gpu")])
    router.swap(RoutingTable([changed], ENDPOINTS))
    new_a, new_b, new_c = router.table.routes["m"].deployments
    assert new_a == a and router.breaker(new_a).state == "open"
    assert router.breaker(new_b).state == "closed"
    assert router.breaker(new_c).state == "closed"


def test_swap_applies_new_breaker_settings_without_losing_state() -> None:
    clock = FakeClock()
    router = router_for(route(breaker={"failures": 1, "open_seconds": 100}), clock=clock)
    a = router.table.routes["m"].deployments[0]
    trip(router, a)
    router.swap(RoutingTable([route(breaker={"failures": 1, "open_seconds": 1})], ENDPOINTS))
    assert router.breaker(a).state == "open"
    clock.advance(1)
    assert router.breaker(a).state == "half_open"


def test_plans_taken_during_swaps_each_come_from_one_whole_table() -> None:
    tables = [
        RoutingTable([route(deployments=[dep("a"), dep("b")])], ENDPOINTS),
        RoutingTable([route(deployments=[dep("x"), dep("y")])], ENDPOINTS),
    ]
    router = Router(tables[0])
    stop = threading.Event()
    seen: set[tuple[str, ...]] = set()

    def plan_until_stopped() -> None:
        while not stop.is_set():
            seen.add(tuple(names(router.plan("m", "classify").deployments)))

    worker = threading.Thread(target=plan_until_stopped)
    worker.start()
    try:
        for i in range(500):
            router.swap(tables[i % 2])
    finally:
        stop.set()
        worker.join(timeout=10)
    assert seen <= {("a", "b"), ("x", "y")}


# --- cascade and shadow helpers -----------------------------------------------------------


def test_escalation_indices_are_the_scores_below_threshold_including_nan() -> None:
    scores = [0.9, 0.69, 0.7, float("nan"), 0.1]
    assert escalation_indices(scores, 0.7) == [1, 3, 4]
    assert escalation_indices([], 0.7) == []


def test_label_agreement_is_the_share_of_equal_labels() -> None:
    assert label_agreement(["pos", "neg", "pos", "neg"], ["pos", "pos", "pos", "pos"]) == 0.5
    with pytest.raises(ValueError, match="3 labels with 2"):
        label_agreement(["a", "b", "c"], ["a", "b"])


def test_mean_cosine_averages_row_cosines() -> None:
    a = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0], [0.0, 0.0]])
    b = np.array([[2.0, 0.0], [1.0, 0.0], [-3.0, -4.0], [1.0, 1.0]])
    assert mean_cosine(a, b) == pytest.approx((1.0 + 0.0 - 1.0 + 0.0) / 4)
    assert mean_cosine(a[:1], b[:1]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\(4, 2\) and \(3, 2\)"):
        mean_cosine(a, b[:3])
