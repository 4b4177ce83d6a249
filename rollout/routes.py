"""The route during a rollout (pure): the YAML mapping of one entry of the gateway's
``models`` at each step, and what ``ListModels`` shows once the gateway applied it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rollout.plan import Stage

_ROUTING_KEYS = ("triton_model", "version", "deployments", "split", "shadow", "cascade")


def deployment_entry(name: str, triton_model: str, version: int, endpoint: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "triton_model": triton_model, "version": version}
    if endpoint != "default":
        entry["endpoint"] = endpoint
    return entry


def route_mapping(
    base: Mapping[str, Any],
    deployments: Sequence[Mapping[str, Any]],
    *,
    split: Mapping[str, float] | None = None,
    shadow: tuple[str, float] | None = None,
) -> dict[str, Any]:
    """``base`` (name, task, fallback, breaker, batching, ...) over ``deployments``."""
    route = {k: v for k, v in base.items() if k not in (*_ROUTING_KEYS, "length_rules")}
    route["deployments"] = [dict(d) for d in deployments]
    if split is not None:
        route["split"] = {name: float(weight) for name, weight in split.items()}
    if shadow is not None:
        route["shadow"] = {"deployment": shadow[0], "share": float(shadow[1])}
    return route


def stage_route(
    base: Mapping[str, Any], old: Mapping[str, Any], new: Mapping[str, Any], stage: Stage
) -> dict[str, Any]:
    """The route during ``stage``: a weighted split between the versions, or the old one
    answering with a share copied to the new one."""
    if stage.shadow is not None:
        return route_mapping(base, [old, new], shadow=(new["name"], stage.shadow))
    weight = stage.weight or 0.0
    return route_mapping(base, [old, new], split={old["name"]: 100 - weight, new["name"]: weight})


def idle_route(
    base: Mapping[str, Any], old: Mapping[str, Any], new: Mapping[str, Any]
) -> dict[str, Any]:
    """Both versions in the route, all traffic on the old one (the new one can be pinned,
    and is the old one's fallback)."""
    return route_mapping(base, [old, new], split={old["name"]: 100.0, new["name"]: 0.0})


RouteView = dict[str, tuple[str, float, bool]]  # deployment -> (version, split weight, shadow)


def expected_view(route: Mapping[str, Any]) -> RouteView:
    """What ``ListModels`` shows for ``route`` once the gateway applied it."""
    split = route.get("split") or {}
    shadow = (route.get("shadow") or {}).get("deployment")
    deployments = route.get("deployments")
    if deployments is None:
        deployments = [{"name": route["triton_model"], "version": route.get("version")}]
    return {
        d["name"]: (
            "" if d.get("version") is None else str(d["version"]),
            float(split.get(d["name"], 0.0)),
            d["name"] == shadow,
        )
        for d in deployments
    }


def views_match(shown: RouteView, expected: RouteView) -> bool:
    if shown.keys() != expected.keys():
        return False
    return all(
        shown[k][0] == v[0]
        and math.isclose(shown[k][1], v[1], abs_tol=1e-6)
        and shown[k][2] == v[2]
        for k, v in expected.items()
    )
