"""``lmforge rollout``, the orchestration against a fake gateway and a fake Triton (real
classes implementing the engine's protocols): a good version is promoted stage by stage, a
bad or interrupted one is rolled back completely, and ``--rollback`` undoes what a dead
rollout left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from lmforge.rollout_cli import rollback_from_state
from rollout.counters import Counters
from rollout.engine import Rollout
from rollout.errors import RolloutError
from rollout.gateway_file import GatewayConfigFile
from rollout.gateway_view import ProbeResult
from rollout.plan import RolloutPlan
from rollout.routes import RouteView, deployment_entry, expected_view, idle_route
from rollout.state import RolloutState
from rollout.triton_versions import version_dirs
from trainer.repository.perf_inputs import PERF_INPUT_FILE

OLD = deployment_entry("minilm", "minilm", 1, "default")
NEW = deployment_entry("minilm-v2", "minilm", 2, "default")


# -- the gateway config file ------------------------------------------------------------------
def _gateway_yaml(path: Path, repository: Path) -> Path:
    data = {
        "server": {"host": "127.0.0.1", "port": 0},
        "triton": {"url": "127.0.0.1:2", "repository": str(repository)},
        "models": [
            {"name": "minilm", "task": "embed", "triton_model": "minilm"},
            {"name": "other", "task": "classify", "triton_model": "sentiment"},
        ],
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_write_route_replaces_one_entry_atomically_and_refuses_invalid(tmp_path: Path) -> None:
    path = _gateway_yaml(tmp_path / "gateway.yaml", tmp_path)
    os.chmod(path, 0o640)
    config = GatewayConfigFile(path)
    idle = idle_route(config.route("minilm"), OLD, NEW)
    assert config.write_route(idle)
    assert not config.write_route(idle)  # unchanged: not rewritten
    data = yaml.safe_load(path.read_text())
    assert data["models"][0] == idle and data["models"][1]["name"] == "other"
    assert path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    broken = {**idle, "split": {"nobody": 1.0}}
    with pytest.raises(RolloutError, match="invalid gateway config"):
        config.write_route(broken)
    assert yaml.safe_load(path.read_text())["models"][0] == idle


# -- the orchestration, against fakes ---------------------------------------------------------
class FakeGateway:
    """Applies the config file the moment it changes; counts pinned requests like the gateway
    would; the new version fails after ``fail_after`` requests when set."""

    def __init__(self, config: Path, fail_after: int | None = None) -> None:
        self.config = GatewayConfigFile(config)
        self.fail_after = fail_after
        self.counts: Counter[str] = Counter()
        self.served: Counter[str] = Counter()
        self.views: list[RouteView] = []

    def route_view(self, route: str) -> tuple[RouteView, dict[str, bool]]:
        view = expected_view(self.config.route(route))
        if not self.views or self.views[-1] != view:
            self.views.append(view)
        return view, dict.fromkeys(view, True)

    def counters(self, route: str) -> Counters:
        return dict(self.counts)

    def request(
        self, route: str, task: str, deployment: str, text: str, timeout: float
    ) -> ProbeResult:
        version = expected_view(self.config.route(route))[deployment][0]
        self.served[deployment] += 1
        if (
            self.fail_after is not None
            and version == "2"
            and self.served[deployment] > self.fail_after
        ):
            self.counts["errors"] += 1
            return ProbeResult(deployment, False, 1.0, "", "INTERNAL")
        self.counts[f"routed/{deployment}/pinned"] += 1
        return ProbeResult(deployment, True, 1.0, version, "OK")

    def close(self) -> None:
        pass


class FakeTriton:
    """Loads like Triton 2.51 in explicit mode: the versions a model's config.pbtxt names (the
    newest folder without a policy). Loading the ensemble reloads its encoder from its file
    too; loading the encoder reloads the ensemble with only its newest version ready until
    the ensemble itself is loaded (what Triton did: a version that was served and still is
    named in the file stopped being served, noted in ``gaps``)."""

    def __init__(self, repository: Path) -> None:
        self.repository = repository
        self.ready: dict[str, list[int]] = {"minilm": [1], "minilm_encoder": [1]}
        self.calls: list[tuple[str, list[int]]] = []
        self.gaps: list[tuple[str, int]] = []

    def ready_versions(self, model: str) -> list[int]:
        return self.ready.get(model, [])

    def _versions(self, model: str) -> list[int]:
        text = (self.repository / model / "config.pbtxt").read_text()
        config = text_format.Parse(text, model_config_pb2.ModelConfig())
        if config.version_policy.HasField("specific"):
            return sorted(config.version_policy.specific.versions)
        return version_dirs(self.repository / model)[-1:]

    def load(self, model: str) -> None:
        if model == "minilm":
            self.ready["minilm_encoder"] = self._versions("minilm_encoder")
            self.ready["minilm"] = self._versions("minilm")
        else:
            self.ready[model] = self._versions(model)
            named = self._versions("minilm")
            self.gaps += [("minilm", v) for v in self.ready["minilm"] if v in named[:-1]]
            self.ready["minilm"] = named[-1:]
        self.calls.append((model, self.ready[model]))

    def close(self) -> None:
        pass


CONFIG = 'name: "{}"\nmax_batch_size: 8\n'


def _setup(tmp: Path, **plan: Any) -> tuple[RolloutPlan, Path]:
    repo = tmp / "repo"
    for model in ("minilm", "minilm_encoder", "minilm_tokenize"):
        (repo / model / "1").mkdir(parents=True)
        (repo / model / "config.pbtxt").write_text(CONFIG.format(model))
    (repo / "minilm_encoder" / "1" / "model.onnx").write_bytes(b"weights")
    (repo / "minilm_encoder" / "1" / "__pycache__").mkdir()
    rows = [{"TEXT": {"content": [f"sentence {i}"], "shape": [1]}} for i in range(8)]
    (repo / "minilm" / PERF_INPUT_FILE).write_text(json.dumps({"data": rows}))
    config = _gateway_yaml(tmp / "gateway.yaml", repo)
    data: dict[str, Any] = {
        "route": "minilm",
        "dwell_s": 0.05,
        "checks": {"min_requests": 3, "interval_s": 0.01, "baseline_s": 0.02, "max_wait_s": 5},
        "warmup": {"requests": 4},
        "probe": {"interval_s": 0.005},
        "gateway": {
            "target": "x:1",
            "config": str(config),
            "metrics_url": "http://x/",
            "drain_s": 0,
        },
        "triton": {"url": "x:2", "repository": str(repo)},
        **plan,
    }
    return RolloutPlan.model_validate(data), repo


def _rollout(plan: RolloutPlan, gateway: FakeGateway, triton: FakeTriton, **kw: Any) -> Rollout:
    return Rollout(plan, gateway=gateway, triton=triton, **kw)


def test_a_good_version_is_promoted_stage_by_stage(tmp_path: Path) -> None:
    plan, repo = _setup(tmp_path)
    gateway, triton = FakeGateway(plan.gateway.config), FakeTriton(plan.triton.repository)
    report = _rollout(plan, gateway, triton).run()
    assert report.outcome == "promoted", report.reason
    assert [s.label for s in report.stages] == [
        "baseline 0%",
        "canary 1%",
        "canary 10%",
        "canary 50%",
        "canary 100%",
    ]
    assert all(s.verdict == "pass" for s in report.stages)
    weights = [{k: v[1] for k, v in view.items()} for view in gateway.views]
    assert weights == [
        {"minilm": 0.0},  # pinned to version 1 (the shorthand had no version)
        {"minilm": 100.0, "minilm-v2": 0.0},
        {"minilm": 99.0, "minilm-v2": 1.0},
        {"minilm": 90.0, "minilm-v2": 10.0},
        {"minilm": 50.0, "minilm-v2": 50.0},
        {"minilm": 0.0, "minilm-v2": 100.0},
        {"minilm-v2": 0.0},
    ]
    assert gateway.views[0] == {"minilm": ("1", 0.0, False)}
    assert triton.calls == [("minilm", [1, 2]), ("minilm", [2])]
    assert triton.gaps == []  # version 1 was served until it was meant to stop
    assert triton.ready == {"minilm": [2], "minilm_encoder": [2]}
    # version 2 is the newest: the configs are back as they were (Triton serves the newest)
    assert (repo / "minilm_encoder" / "config.pbtxt").read_text() == CONFIG.format("minilm_encoder")
    assert (repo / "minilm_encoder" / "2" / "model.onnx").read_bytes() == b"weights"
    assert not (repo / "minilm_encoder" / "2" / "__pycache__").exists()
    assert (repo / "minilm" / "2").is_dir() and (repo / "minilm_encoder" / "1").is_dir()
    final = GatewayConfigFile(plan.gateway.config).route("minilm")
    assert final["deployments"] == [NEW] and "split" not in final
    assert not plan.state_path.exists()


def test_a_version_that_breaks_after_its_warm_up_is_rolled_back_on_the_canary(
    tmp_path: Path,
) -> None:
    plan, repo = _setup(tmp_path)
    gateway, triton = (
        FakeGateway(plan.gateway.config, fail_after=4),
        FakeTriton(plan.triton.repository),
    )
    report = _rollout(plan, gateway, triton).run()
    assert report.outcome == "rolled_back" and report.failed_stage == "canary 1%"
    assert "error_rate" in report.reason and report.warmup["failed"] == 0
    assert report.stages[-1].verdict == "fail"
    weights = [{k: v[1] for k, v in view.items()} for view in gateway.views]
    assert weights[-3:] == [
        {"minilm": 99.0, "minilm-v2": 1.0},
        {"minilm": 100.0, "minilm-v2": 0.0},  # traffic back first
        {"minilm": 0.0},  # then the new deployment leaves the route
    ]
    assert triton.calls[-1] == ("minilm", [1]) and triton.gaps == []
    assert triton.ready == {"minilm": [1], "minilm_encoder": [1]}
    assert (repo / "minilm" / "config.pbtxt").read_text() == CONFIG.format("minilm")
    assert not (repo / "minilm_encoder" / "2").exists() and not (repo / "minilm" / "2").exists()
    final = GatewayConfigFile(plan.gateway.config).route("minilm")
    assert final["deployments"] == [OLD]
    assert not plan.state_path.exists()


def test_a_failed_warm_up_rolls_back_before_any_traffic(tmp_path: Path) -> None:
    plan, _ = _setup(tmp_path)
    gateway, triton = (
        FakeGateway(plan.gateway.config, fail_after=0),
        FakeTriton(plan.triton.repository),
    )
    report = _rollout(plan, gateway, triton).run()
    assert report.outcome == "rolled_back" and "warm-up" in report.reason
    assert report.stages == [] and report.warmup["failed"] == 4
    assert all(view.get("minilm-v2", ("", 0.0, False))[1] == 0 for view in gateway.views)


def test_a_shadow_stage_catches_a_broken_version_without_client_traffic(tmp_path: Path) -> None:
    plan, _ = _setup(tmp_path, stages=[{"shadow": 0.5}, 100])
    gateway, triton = (
        FakeGateway(plan.gateway.config, fail_after=4),
        FakeTriton(plan.triton.repository),
    )
    report = _rollout(plan, gateway, triton).run()
    assert report.outcome == "rolled_back" and report.failed_stage == "shadow 50%"
    assert all(view.get("minilm-v2", ("", 0.0, False))[1] == 0 for view in gateway.views)


def test_an_interruption_rolls_back(tmp_path: Path) -> None:
    plan, repo = _setup(tmp_path)
    gateway, triton = FakeGateway(plan.gateway.config), FakeTriton(plan.triton.repository)

    def on_event(text: str) -> None:
        if text.startswith("canary 10%: applied"):
            rollout.stop.set()

    rollout = _rollout(plan, gateway, triton, on_event=on_event)
    report = rollout.run()
    assert report.outcome == "rolled_back" and "interrupted" in report.reason
    assert GatewayConfigFile(plan.gateway.config).route("minilm")["deployments"] == [OLD]
    assert not (repo / "minilm_encoder" / "2").exists() and not plan.state_path.exists()


def test_begin_refuses_what_it_cannot_roll_out(tmp_path: Path) -> None:
    plan, repo = _setup(tmp_path)
    triton = FakeTriton(plan.triton.repository)
    plan.state_path.write_text("{}")
    with pytest.raises(RolloutError, match="run lmforge rollout --rollback"):
        _rollout(plan, FakeGateway(plan.gateway.config), triton).begin()
    plan.state_path.unlink()
    taken, _ = _setup(tmp_path / "b", new_version=1)
    with pytest.raises(RolloutError, match="already exists"):
        _rollout(taken, FakeGateway(taken.gateway.config), triton).begin()
    data = yaml.safe_load(plan.gateway.config.read_text())
    data["triton"].pop("repository")
    plan.gateway.config.write_text(yaml.safe_dump(data))
    with pytest.raises(RolloutError, match="does not tokenize"):
        _rollout(plan, FakeGateway(plan.gateway.config), triton).begin()
    assert not (repo / "minilm_encoder" / "2").exists()


def test_rollback_command_undoes_what_a_dead_rollout_left(tmp_path: Path) -> None:
    plan, repo = _setup(tmp_path)
    gateway, triton = FakeGateway(plan.gateway.config), FakeTriton(plan.triton.repository)
    first = _rollout(plan, gateway, triton)
    state = first.begin()
    first._pin()
    first._load()
    first._warm()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    state.pid = dead.pid
    state.save(plan.state_path)  # as a killed rollout process would have left it
    assert RolloutState.load(plan.state_path).phase == "loading"
    message = rollback_from_state(plan, rollout=_rollout(plan, gateway, triton))
    assert "rolled back version 2" in message
    assert GatewayConfigFile(plan.gateway.config).route("minilm")["deployments"] == [OLD]
    assert triton.ready == {"minilm": [1], "minilm_encoder": [1]}
    assert not (repo / "minilm_encoder" / "2").exists() and not plan.state_path.exists()
    assert "no rollout" in rollback_from_state(plan)
