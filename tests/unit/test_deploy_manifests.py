"""The Kubernetes manifests in deploy/k8s: valid against the official 1.37 schemas (strict),
kustomizations that name files which exist, overlays whose patches render to valid objects,
and a gateway ConfigMap the gateway itself accepts."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate")

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
VERSION = "1.37.0"


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), path
    return data


def _resources(kustomization: Path) -> list[dict[str, Any]]:
    config = _load(kustomization)
    objects: list[dict[str, Any]] = []
    for entry in config.get("resources", []):
        target = kustomization.parent / entry
        assert target.exists(), f"{kustomization} names missing {entry}"
        if target.is_dir():
            objects += _render(target)
        else:
            objects.append(_load(target))
    return objects


def _merge(base: Any, patch: Any) -> Any:
    """Strategic merge as kustomize does it for these patches: maps recursively, lists of
    named items by name, anything else replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in base + patch)
    ):
        by_name = {item["name"]: item for item in base}
        for item in patch:
            by_name[item["name"]] = _merge(by_name.get(item["name"], {}), item)
        return list(by_name.values())
    return patch


def _render(folder: Path) -> list[dict[str, Any]]:
    kustomization = folder / "kustomization.yaml"
    objects = copy.deepcopy(_resources(kustomization))
    for patch_ref in _load(kustomization).get("patches", []):
        patch = _load(folder / patch_ref["path"])
        matches = [
            i
            for i, obj in enumerate(objects)
            if (obj["kind"], obj["metadata"]["name"]) == (patch["kind"], patch["metadata"]["name"])
        ]
        assert len(matches) == 1, f"patch {patch_ref['path']} matches {len(matches)} objects"
        objects[matches[0]] = _merge(objects[matches[0]], patch)
    return objects


@pytest.mark.parametrize("variant", ["base", "overlays/cpu", "overlays/gpu"])
def test_rendered_manifests_validate_strictly_against_kubernetes_schemas(variant: str) -> None:
    objects = _render(K8S / variant)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert {("Deployment", "triton"), ("Deployment", "lmforge-gateway")} <= kinds
    for obj in objects:
        kubernetes_validate.validate(obj, VERSION, strict=True)


def test_gpu_overlay_requests_a_gpu_for_triton_only() -> None:
    objects = {(o["kind"], o["metadata"]["name"]): o for o in _render(K8S / "overlays/gpu")}
    triton = objects[("Deployment", "triton")]["spec"]["template"]["spec"]["containers"][0]
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"  # kept from base
    gateway = objects[("Deployment", "lmforge-gateway")]["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in str(gateway)


def test_gateway_configmap_is_a_config_the_gateway_accepts() -> None:
    from gateway.config import GatewayConfig

    configmap = _load(K8S / "base" / "gateway-configmap.yaml")
    config = GatewayConfig.from_mapping(yaml.safe_load(configmap["data"]["gateway.yaml"]))
    service = _load(K8S / "base" / "gateway-service.yaml")
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert config.server.port == ports["grpc"] and config.server.metrics_port == ports["metrics"]
    assert config.triton.url == "triton:8001"


def test_example_gateway_config_is_accepted() -> None:
    from gateway.config import GatewayConfig

    GatewayConfig.from_yaml(K8S.parent / "examples" / "gateway.yaml")
