"""The rollout itself: against a running Triton in explicit model-control mode and a running
gateway whose config file it may rewrite, a :class:`Rollout`

1. **pins** the route's deployment to the version it serves (a deployment without a version
   would follow Triton to the new one the moment it loads);
2. **loads** the new version ``N``: copies its folder into the model repository (a copy of the
   old version when the plan names no ``source``: same weights), sets ``version_policy:
   specific {versions: [old, N]}`` in the model's ``config.pbtxt`` and asks Triton to load
   it, so both versions are served side by side (:meth:`Rollout._serve` says why this way);
3. **warms** it: the new deployment joins the route with split weight 0 and gets
   ``warmup.requests`` real sentences pinned to it (``x-lmforge-deployment``), sequentially;
   a failure beyond ``warmup.max_failures`` rolls back before any client sees the version;
4. measures a **baseline**: the route's latency on the old version alone, under the load of
   the moment, for ``checks.baseline_s``;
5. **shifts traffic** stage by stage (default 1% → 10% → 50% → 100% by the route's ``split``
   weights; a ``shadow`` stage copies a share of requests instead), each time writing the
   gateway config atomically and waiting until ``ListModels`` shows the new weights, and
   **checks** each stage while it dwells (:mod:`rollout.watch`); a failed check rolls
   back at once (weights back to 100% old, the new version unloaded and its folders
   removed), as do ``lmforge rollout --rollback PLAN.yaml`` and SIGINT/SIGTERM;
6. **promotes** after the last stage: the route keeps only the new deployment and Triton
   unloads the old version (its folder stays on disk unless ``keep_old_files: false``).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rollout.counters import Counters
from rollout.errors import Interrupted, RolloutError, RolloutFailed
from rollout.gateway_file import GatewayConfigFile, write_atomically
from rollout.gateway_view import GatewayPort, GatewayView
from rollout.plan import RolloutPlan, Stage
from rollout.preflight import prepare
from rollout.report import RolloutReport, StageReport
from rollout.routes import (
    RouteView,
    expected_view,
    idle_route,
    route_mapping,
    stage_route,
    views_match,
)
from rollout.state import RolloutState
from rollout.triton_versions import (
    TritonPort,
    TritonVersions,
    copy_version,
    serves_newest,
    version_dirs,
    with_version_policy,
)
from rollout.warmup import warm_up
from rollout.watch import record, watch_stage

logger = logging.getLogger(__name__)


class Rollout:
    """One rollout of ``plan``; :meth:`run` returns its report (promoted or rolled back).
    Setting ``stop`` (SIGINT, ``--rollback``) rolls it back at the next step. ``gateway`` and
    ``triton`` default to clients of the plan's servers, made when first needed."""

    def __init__(
        self,
        plan: RolloutPlan,
        *,
        stop: threading.Event | None = None,
        on_event: Callable[[str], None] | None = None,
        gateway: GatewayPort | None = None,
        triton: TritonPort | None = None,
    ) -> None:
        self.plan = plan
        self.stop = stop or threading.Event()
        self._on_event = on_event
        self.config_file = GatewayConfigFile(plan.gateway.config)
        self._t0 = time.monotonic()
        self._rolling_back = False
        self._gateway = gateway
        self._triton = triton
        self.state: RolloutState | None = None
        self.report: RolloutReport | None = None
        self._baseline_counters: Counters = {}

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def gateway(self) -> GatewayPort:
        if self._gateway is None:
            self._gateway = GatewayView(self.plan.gateway)
        return self._gateway

    @property
    def triton(self) -> TritonPort:
        if self._triton is None:
            self._triton = TritonVersions(self.plan.triton.url, self.plan.triton.load_timeout_s)
        return self._triton

    def close(self) -> None:
        for client in (self._gateway, self._triton):
            if client is not None:
                client.close()
        self._gateway = self._triton = None

    def _now(self) -> float:
        return time.monotonic() - self._t0

    def _event(self, text: str) -> None:
        logger.info("rollout %s: %s", self.plan.route, text)
        if self.report is not None:
            self.report.events.append((self._now(), text))
        if self._on_event is not None:
            self._on_event(text)

    def _check_stop(self) -> None:
        if self.stop.is_set() and not self._rolling_back:
            raise Interrupted("interrupted (signal or lmforge rollout --rollback)")

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._check_stop()
            time.sleep(min(left, 0.05))

    def _save(self, phase: str | None = None) -> None:
        assert self.state is not None
        if phase is not None:
            self.state.phase = phase
        self.state.save(self.plan.state_path)

    @property
    def _st(self) -> RolloutState:
        assert self.state is not None
        return self.state

    @property
    def _rep(self) -> RolloutReport:
        assert self.report is not None
        return self.report

    def _repository(self, model: str, version: int) -> Path:
        return self.plan.triton.repository / model / str(version)

    def _serve(self, versions: Sequence[int]) -> None:
        """Make Triton serve exactly ``versions`` of every model of the rollout: their
        ``config.pbtxt`` on disk name them (``version_policy: specific``; a load-time config
        override would not do: Triton reloads an ensemble's composing models, and the
        ensemble depending on a reloaded model, from their files), then each model that does
        not serve them yet is loaded, the ensemble first. Loading the ensemble (re)loads its
        encoder from its file too, and neither stops serving the old version meanwhile;
        loading the encoder first made Triton reload the ensemble with only the new version
        ready for over a second (measured on Triton 2.51): requests pinned to the old
        version failed with ``UNAVAILABLE`` in between."""
        st = self._st
        for model in st.triton_models:
            path = self.plan.triton.repository / model / "config.pbtxt"
            original = st.configs.setdefault(model, path.read_text(encoding="utf-8"))
            write_atomically(path, with_version_policy(original, versions))
        self._save()
        for model in st.triton_models:
            if set(self.triton.ready_versions(model)) != set(versions):
                self.triton.load(model)
        for model in st.triton_models:
            served = self.triton.ready_versions(model)
            if set(served) != set(versions):
                raise RolloutError(f"Triton serves versions {served} of {model!r}, not {versions}")

    def _restore_configs(self, keep: int) -> None:
        """Put back each ``config.pbtxt`` as it was when it leaves Triton serving the newest
        version and ``keep`` is the newest; otherwise it stays ``specific: [keep]``."""
        st = self._st
        for model, original in st.configs.items():
            newest = version_dirs(self.plan.triton.repository / model)
            if serves_newest(original) and newest and newest[-1] == keep:
                path = self.plan.triton.repository / model / "config.pbtxt"
                write_atomically(path, original)

    # -- the gateway's config ----------------------------------------------------------------
    def _apply(self, route: Mapping[str, Any]) -> float:
        """Write ``route`` and wait until the gateway shows it; returns the seconds it took."""
        began = time.monotonic()
        self.config_file.write_route(route)
        expected = expected_view(route)
        deadline = began + self.plan.gateway.apply_timeout_s
        shown: RouteView = {}
        while time.monotonic() < deadline:
            self._check_stop()
            with contextlib.suppress(Exception):  # the gateway may be busy reloading
                shown, _ = self.gateway.route_view(route["name"])
                if views_match(shown, expected):
                    return time.monotonic() - began
            time.sleep(0.05)
        raise RolloutFailed(
            f"the gateway did not apply the route in {self.plan.gateway.apply_timeout_s:g} s "
            f"(shows {shown}, expected {expected})"
        )

    # -- the steps ---------------------------------------------------------------------------
    def begin(self) -> RolloutState:
        """Check the plan against the gateway config, the repository and Triton, and record
        the state; nothing is changed before this returns."""
        state, source = prepare(self.plan, self.config_file, self.triton)
        self.state = state
        self.report = RolloutReport(
            route=self.plan.route,
            triton_models=state.triton_models,
            old={**state.old},
            new={**state.new, "source": str(source)},
        )
        self._save()
        return state

    def _pin(self) -> None:
        st = self._st
        seconds = self._apply(route_mapping(st.base, [st.old]))
        self._event(f"{st.old['name']} pinned to version {st.old_version} ({seconds:.2f} s)")

    def _load(self) -> None:
        st, plan = self._st, self.plan
        began = time.monotonic()
        weights = st.triton_models[-1]
        for model in st.triton_models:
            if model == weights and plan.source is not None:
                source = plan.source
            else:
                source = self._repository(model, st.old_version)
            target = self._repository(model, st.new_version)
            copy_version(source, target)
            st.created.append(str(target))
            self._save("files")
        st.loaded = True
        st.phase = "loading"
        self._serve([st.old_version, st.new_version])
        self._rep.timings_s["load"] = round(time.monotonic() - began, 3)
        self._event(
            f"Triton serves versions {st.old_version} and {st.new_version} of "
            f"{', '.join(st.triton_models)} ({time.monotonic() - began:.1f} s)"
        )
        self._check_stop()

    def _warm(self) -> None:
        st = self._st
        seconds = self._apply(idle_route(st.base, st.old, st.new))
        self._event(f"{st.new['name']} joined the route with weight 0 ({seconds:.2f} s)")
        summary, problem = warm_up(self.gateway, self.plan, st, self._check_stop)
        self._rep.warmup = summary
        codes = summary["codes"] or ""
        self._event(f"warm-up: {summary['requests']} requests, {summary['failed']} failed {codes}")
        if problem is not None:
            raise RolloutFailed(problem)

    def _baseline(self) -> None:
        """The old version alone under the same load and probes as a stage: the route's
        latency to compare the stages with."""
        st = self._st
        seconds = self.plan.checks.baseline_s
        report = StageReport("baseline 0%", 0.0, None, seconds)
        self._rep.stages.append(report)
        self._observe(report, idle_route(st.base, st.old, st.new), None)

    def _stage(self, stage: Stage) -> None:
        report = StageReport(stage.label, stage.weight, stage.shadow, self.plan.dwell(stage))
        self._rep.stages.append(report)
        st = self._st
        self._observe(report, stage_route(st.base, st.old, st.new, stage), stage)
        if report.verdict == "fail":
            self._rep.failed_stage = stage.label
            self._event(f"{stage.label}: FAILED: {report.reason}")
            raise RolloutFailed(f"{stage.label}: {report.reason}")
        share = report.traffic.get("share_new")
        self._event(
            f"{stage.label}: passed after {report.ended_s - report.started_s:.1f} s (new share "
            f"{'-' if share is None else f'{share:.1%}'}, {report.traffic['failures_new']:g} "
            f"failures of {report.traffic['attempts_new']:g})"
        )

    def _observe(self, report: StageReport, route: Mapping[str, Any], stage: Stage | None) -> None:
        """Apply ``route``, then watch the stage until its verdict (``stage`` None: the
        baseline, which only measures)."""
        st = self._st
        self._save(report.label)
        report.apply_s = round(self._apply(route), 3)
        report.started_s = round(self._now(), 3)
        self._event(f"{report.label}: applied in {report.apply_s:.2f} s; {report.dwell_s:g} s")
        seen = watch_stage(
            self.gateway,
            self.plan,
            st,
            stage,
            report.dwell_s,
            self._baseline_counters,
            self._check_stop,
        )
        if stage is None:
            self._baseline_counters = seen.delta
        record(report, seen, self._t0, st.old["name"], st.new["name"])

    def _promote(self) -> None:
        st, plan = self._st, self.plan
        began = time.monotonic()
        self._sleep(plan.gateway.drain_s)  # requests already queued for the old version
        self._save("promoting")
        self._rolling_back = True  # from here on there is no going back: finish it
        seconds = self._apply(route_mapping(st.base, [st.new]))
        self._event(f"route serves {st.new['name']} only ({seconds:.2f} s)")
        time.sleep(plan.gateway.drain_s)
        self._serve([st.new_version])
        if not plan.keep_old_files:
            for model in st.triton_models:
                shutil.rmtree(self._repository(model, st.old_version), ignore_errors=True)
        self._restore_configs(st.new_version)
        self._event(f"Triton unloaded version {st.old_version}")
        self._rep.timings_s["promote"] = round(time.monotonic() - began, 3)

    def rollback(self, reason: str) -> None:
        """Undo what :attr:`state` says was done: traffic back to the old version first, then
        the new version out of the gateway, out of Triton and off the disk."""
        st, plan = self._st, self.plan
        self._rolling_back = True
        began = time.monotonic()
        if self.report is not None:
            self.report.outcome, self.report.reason = "rolled_back", reason
        self._event(f"rolling back: {reason}")
        self._save("rolling_back")
        problems: list[str] = []
        try:
            current = self.config_file.route(st.route)
            names_now = [d.get("name") for d in current.get("deployments") or []]
            if st.new["name"] in names_now:
                idle = idle_route(st.base, st.old, st.new)
                if current != idle:
                    seconds = self._apply(idle)
                    self._event(f"traffic back on version {st.old_version} ({seconds:.2f} s)")
                    if self.report is not None:
                        self.report.traffic_back_at = time.monotonic()
                        self.report.timings_s["traffic_back"] = round(
                            self.report.traffic_back_at - began, 3
                        )
                time.sleep(plan.gateway.drain_s)
                self._apply(route_mapping(st.base, [st.old]))
                time.sleep(plan.gateway.drain_s)
        except Exception as exc:
            problems.append(f"gateway: {exc}")
        if not problems and st.loaded:
            try:
                self._serve([st.old_version])
            except Exception as exc:
                problems.append(f"Triton: {exc}")
        if not problems:
            for folder in st.created:
                shutil.rmtree(folder, ignore_errors=True)
            self._restore_configs(st.old_version)
        if self.report is not None:
            self.report.timings_s["rollback"] = round(time.monotonic() - began, 3)
        if problems:
            self._event(f"rollback incomplete: {'; '.join(problems)}")
            raise RolloutError(
                f"rollback incomplete ({'; '.join(problems)}); state kept in "
                f"{plan.state_path}: fix the cause and run lmforge rollout --rollback again"
            )
        plan.state_path.unlink(missing_ok=True)
        self._event(f"rolled back: version {st.new_version} unloaded and removed")

    def run(self) -> RolloutReport:
        """The whole rollout; a failure rolls back (the report says which and why)."""
        self._t0 = time.monotonic()
        try:
            self.begin()
            self._event(
                f"{self._st.old['name']} v{self._st.old_version} -> {self._st.new['name']} "
                f"v{self._st.new_version}"
            )
            try:
                self._pin()
                self._load()
                self._warm()
                self._baseline()
                for stage in self.plan.stages:
                    self._stage(stage)
                self._promote()
            except RolloutFailed as exc:
                self.rollback(str(exc))
            except Exception as exc:
                if self._st.phase == "promoting":
                    raise
                logger.exception("rollout of %s failed", self.plan.route)
                self.rollback(f"error: {exc}")
            else:
                self.plan.state_path.unlink(missing_ok=True)
                self._rep.outcome = "promoted"
                self._event(f"promoted: {self._st.new['name']} v{self._st.new_version}")
        finally:
            if self.report is not None:
                self.report.timings_s["total"] = round(self._now(), 3)
            self.close()
        return self._rep
