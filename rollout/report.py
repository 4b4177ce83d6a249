"""What a rollout reports: per stage the traffic, probes and checks; timings and events."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class StageReport:
    label: str
    weight: float | None
    shadow: float | None
    dwell_s: float
    apply_s: float = 0.0  # from writing the config to the gateway showing it
    started_s: float = 0.0  # since the rollout began (the config applied)
    ended_s: float = 0.0
    verdict: str = ""
    reason: str = ""
    traffic: dict[str, float | None] = field(default_factory=dict)
    probes: dict[str, float | int | None] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    #: monotonic clock (not serialized): lets an in-process caller bucket its own requests
    window: tuple[float, float] = (0.0, 0.0)


@dataclass
class RolloutReport:
    route: str
    triton_models: list[str]
    old: dict[str, Any]
    new: dict[str, Any]
    outcome: str = "running"  # promoted | rolled_back
    reason: str = ""
    failed_stage: str | None = None
    warmup: dict[str, Any] = field(default_factory=dict)
    stages: list[StageReport] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    events: list[tuple[float, str]] = field(default_factory=list)
    #: monotonic clock (not serialized): when a rollback had the traffic back on the old version
    traffic_back_at: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("traffic_back_at")
        for stage in data["stages"]:
            stage.pop("window")
        data["events"] = [{"t_s": round(t, 3), "event": e} for t, e in self.events]
        return data
