"""What ListModels says about a route: its policies, deployments, breakers, queues, readiness
and the metadata of the deployment that answers first (read-only, over the engine's parts)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gateway.dispatch import DeploymentRunner
from gateway.engine_types import DeploymentInfo, ModelInfo
from gateway.routing import Deployment, Route, Router

logger = logging.getLogger(__name__)


def _version(deployment: Deployment) -> str:
    return "" if deployment.version is None else str(deployment.version)


async def describe_route(
    route: Route,
    router: Router,
    runner_of: Callable[[Deployment], DeploymentRunner],
    info_timeout: float,
) -> ModelInfo:
    policies = [
        name
        for name, used in (
            ("split", route.split is not None),
            ("length", bool(route.length_rules)),
            ("cascade", route.cascade is not None),
            ("shadow", route.shadow is not None),
        )
        if used
    ]
    first = route.serving[0] if route.serving else route.deployments[0]
    split = route.split or {}
    deployments: list[DeploymentInfo] = []
    first_meta = None
    for deployment in route.deployments:
        runner = runner_of(deployment)
        try:
            async with asyncio.timeout(info_timeout):
                ready = await runner.backend.ready(runner.target)
                meta = await runner.meta() if ready else None
        except Exception as exc:  # an unreachable deployment is listed as not ready
            logger.debug("describing %s/%s failed: %r", route.name, deployment.name, exc)
            ready, meta = False, None
        if deployment == first:
            first_meta = meta
        deployments.append(
            DeploymentInfo(
                name=deployment.name,
                endpoint=deployment.endpoint,
                triton_model=deployment.triton_model,
                triton_model_version=_version(deployment),
                breaker=router.breaker(deployment).state,
                split_weight=float(split.get(deployment.name, 0.0)),
                shadow=deployment == route.shadow,
                queued_inputs=runner.queued_inputs,
                gateway_tokenizes=runner.tokenizes_here,
                ready=ready,
            )
        )
    version = _version(first) or (first_meta.version if first_meta is not None else "")
    return ModelInfo(
        name=route.name,
        task=route.task,
        routing=",".join(policies) or "single",
        triton_model=first.triton_model,
        triton_model_version=version,
        labels=first_meta.labels if first_meta else (),
        dimension=(first_meta.dimension or 0) if first_meta else 0,
        max_input_tokens=(first_meta.max_length or 0) if first_meta else 0,
        regression=first_meta.regression if first_meta else False,
        text_pairs=first_meta.text_pairs if first_meta else False,
        deployments=tuple(deployments),
        ready=any(d.ready for d in deployments if not d.shadow),
    )
