"""Before a rollout changes anything: the plan checked against the gateway's config, the
model repository and what Triton serves, resolved into the :class:`RolloutState` to carry
out (old and new version, deployments, the Triton models to load)."""

from __future__ import annotations

import os
from pathlib import Path

from rollout.errors import RolloutError
from rollout.gateway_file import GatewayConfigFile
from rollout.plan import RolloutPlan
from rollout.routes import deployment_entry
from rollout.state import RolloutState
from rollout.triton_versions import TritonPort, version_dirs
from triton_models.runtime.contract import ENCODER_SUFFIX


def prepare(
    plan: RolloutPlan, config_file: GatewayConfigFile, triton: TritonPort
) -> tuple[RolloutState, Path]:
    """The state of the rollout ``plan`` describes and the folder its new version is copied
    from; :class:`RolloutError` names what stands in the way. Nothing is changed.

    For an lmforge ensemble both the ensemble ``<model>`` and its ``<model>_encoder`` get the
    new version (the gateway asks the ensemble for the model's description and calls the
    encoder directly; the tokenizer is shared), so the gateway must tokenize for the route's
    endpoint: through the ensemble both versions would run the newest encoder."""
    from gateway.config import ConfigError, GatewayConfig

    if plan.state_path.exists():
        raise RolloutError(
            f"{plan.state_path} exists: a rollout of {plan.route!r} is running or was cut "
            "short; run lmforge rollout --rollback with its plan first"
        )
    try:
        config = GatewayConfig.from_yaml(plan.gateway.config)
    except ConfigError as exc:
        raise RolloutError(str(exc)) from exc
    config_file.check_writable()  # a read-only config (a ConfigMap mount): say how, change nothing
    route = config.model(plan.route)
    if route is None:
        raise RolloutError(f"{plan.gateway.config}: no route named {plan.route!r}")
    if route.cascade is not None or route.length_rules or route.shadow is not None:
        raise RolloutError(
            f"route {plan.route!r} has a cascade, length rules or a shadow; a rollout "
            "moves one deployment to a new version, with no other policy on the route"
        )
    deployments = route.deployment_configs
    names = [d.name for d in deployments]
    if plan.old_deployment is not None and plan.old_deployment not in names:
        raise RolloutError(f"route {plan.route!r} has no deployment {plan.old_deployment!r}")
    if len(deployments) != 1:
        raise RolloutError(
            f"route {plan.route!r} has deployments {names}; a rollout starts from a route "
            "over one deployment"
        )
    old = deployments[0]
    repository = plan.triton.repository
    encoder = old.triton_model + ENCODER_SUFFIX
    models = [old.triton_model] + ([encoder] if (repository / encoder).is_dir() else [])
    if not (repository / old.triton_model).is_dir():
        raise RolloutError(f"{repository} has no model {old.triton_model!r}")
    if len(models) > 1 and config.endpoint(old.endpoint).repository is None:
        raise RolloutError(
            f"the gateway does not tokenize for endpoint {old.endpoint!r} (no repository "
            "in its config): through the ensemble, both versions would run the newest "
            "encoder version"
        )
    old_version = plan.old_version or old.version
    if old_version is None:
        served = triton.ready_versions(old.triton_model)
        if not served:
            raise RolloutError(f"Triton serves no version of {old.triton_model!r}")
        old_version = served[-1]
    for model in models:
        if old_version not in triton.ready_versions(model):
            raise RolloutError(f"Triton does not serve version {old_version} of {model!r}")
    existing = sorted({v for m in models for v in version_dirs(repository / m)})
    new_version = plan.new_version or (max([*existing, old_version]) + 1)
    if new_version == old_version or new_version in existing:
        raise RolloutError(
            f"version {new_version} already exists for {models} (folders {existing})"
        )
    source = plan.source or repository / models[-1] / str(old_version)
    if not source.is_dir():
        raise RolloutError(f"the new version's source {source} is not a folder")
    new_name = plan.new_deployment or f"{old.triton_model}-v{new_version}"
    if new_name == old.name:
        raise RolloutError(f"the new deployment needs a name other than {old.name!r}")
    state = RolloutState(
        pid=os.getpid(),
        route=plan.route,
        task=route.task,
        base=config_file.route(plan.route),
        old=deployment_entry(old.name, old.triton_model, old_version, old.endpoint),
        new=deployment_entry(new_name, old.triton_model, new_version, old.endpoint),
        triton_models=models,
        old_version=old_version,
        new_version=new_version,
    )
    return state, source
