"""The cluster files: ``cluster.yaml`` (Ray cluster launcher, AWS) and ``cluster/kuberay.yaml``
(a KubeRay ``RayCluster``).

No cloud is reachable from the tests, so these checks are what stands between the files and a
failed ``ray up``: ``cluster.yaml`` must pass the JSON schema that ships inside Ray
(``ray/autoscaler/ray-schema.json``, the one ``ray up`` validates against) and Ray's own
config preparation; it must make sense for mirror3d (a head, a CPU and a GPU worker type, the
package installed on every node, mounts that exist); and the KubeRay manifest must describe the
same node groups with the same Ray resources and sizes. Nothing here starts Ray.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import pathlib
import re
import sys
import tomllib

import jsonschema
import pytest
import ray
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
CLUSTER_YAML = REPO / "cluster.yaml"
KUBERAY_YAML = REPO / "cluster" / "kuberay.yaml"


# ------------------------------------------------------------------------------ helpers
def load_cluster_config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def load_raycluster() -> dict:
    """The RayCluster document of cluster/kuberay.yaml (the file also holds a ServiceAccount)."""
    docs = [d for d in yaml.safe_load_all(KUBERAY_YAML.read_text()) if d]
    clusters = [d for d in docs if d.get("kind") == "RayCluster"]
    assert len(clusters) == 1, f"expected one RayCluster in {KUBERAY_YAML}, got {len(clusters)}"
    return clusters[0]


def ray_schema() -> dict:
    """The cluster-config JSON schema of the installed Ray."""
    return json.loads(importlib.resources.files("ray.autoscaler").joinpath("ray-schema.json").read_text())


def schema_errors(config: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(ray_schema())
    return [f"{'/'.join(map(str, e.absolute_path)) or '<top>'}: {e.message}"
            for e in validator.iter_errors(config)]


def worker_types(config: dict) -> dict[str, dict]:
    head = config["head_node_type"]
    return {name: t for name, t in config["available_node_types"].items() if name != head}


def kuberay_group_name(node_type: str) -> str:
    """cluster.yaml's node type name -> KubeRay workerGroupSpecs groupName (Kubernetes names
    cannot hold '_')."""
    return node_type.replace("_", "-")


def cpu_quantity(value) -> float:
    """A Kubernetes CPU quantity ("16", 16, "500m") in CPUs."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def group_ray_resources(group: dict) -> dict[str, int]:
    """The CPUs/GPUs Ray advertises for a KubeRay group: rayStartParams num-cpus / num-gpus when
    set (they win), else the first container's limits (what KubeRay derives them from)."""
    params = group.get("rayStartParams") or {}
    limits = group["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
    cpus = params.get("num-cpus", limits.get("cpu", 0))
    gpus = params.get("num-gpus", limits.get("nvidia.com/gpu", 0))
    resources = {"CPU": int(cpu_quantity(cpus)), "GPU": int(gpus)}
    return {k: v for k, v in resources.items() if v or k == "CPU"}


def node_type_resources(node_type: dict) -> dict[str, int]:
    resources = {"CPU": 0, **node_type["resources"]}
    return {k: v for k, v in resources.items() if v or k == "CPU"}


def kuberay_mismatches(config: dict, raycluster: dict) -> list[str]:
    """Every way the RayCluster differs from cluster.yaml in node groups, Ray resources, sizes,
    idle timeout and container limits (an empty list: they agree)."""
    problems = []
    spec = raycluster["spec"]
    head_type = config["available_node_types"][config["head_node_type"]]
    if group_ray_resources(spec["headGroupSpec"]) != node_type_resources(head_type):
        problems.append(f"head: kuberay {group_ray_resources(spec['headGroupSpec'])} != "
                        f"cluster.yaml {node_type_resources(head_type)}")
    groups = {g["groupName"]: g for g in spec.get("workerGroupSpecs", [])}
    expected = {kuberay_group_name(name): (name, t) for name, t in worker_types(config).items()}
    if set(groups) != set(expected):
        problems.append(f"worker groups {sorted(groups)} != cluster.yaml's {sorted(expected)}")
    for group_name in sorted(set(groups) & set(expected)):
        group, (type_name, node_type) = groups[group_name], expected[group_name]
        want = node_type_resources(node_type)
        if group_ray_resources(group) != want:
            problems.append(f"{group_name}: Ray resources {group_ray_resources(group)} != {type_name} {want}")
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        limit_cpus, limit_gpus = cpu_quantity(limits.get("cpu", 0)), int(limits.get("nvidia.com/gpu", 0))
        if limit_cpus != want["CPU"] or limit_gpus != want.get("GPU", 0):
            problems.append(f"{group_name}: container limits {limits} do not give {want}")
        for ours, theirs in (("minReplicas", "min_workers"), ("maxReplicas", "max_workers")):
            if group.get(ours) != node_type.get(theirs):
                problems.append(f"{group_name}.{ours} {group.get(ours)} != "
                                f"{type_name}.{theirs} {node_type.get(theirs)}")
    idle_s = spec.get("autoscalerOptions", {}).get("idleTimeoutSeconds")
    if idle_s != config["idle_timeout_minutes"] * 60:
        problems.append(f"idleTimeoutSeconds {idle_s} != idle_timeout_minutes {config['idle_timeout_minutes']} x 60")
    return problems


def setup_commands_of(config: dict, node_type: str) -> list[str]:
    """The setup commands Ray runs on a node of ``node_type``: the common ones plus the head's or
    the workers' list, unless the node type has its own ``worker_setup_commands`` (they replace
    both, see ray.autoscaler._private.autoscaler)."""
    if node_type == config["head_node_type"]:
        return config.get("setup_commands", []) + config.get("head_setup_commands", [])
    own = config["available_node_types"][node_type].get("worker_setup_commands")
    return own if own is not None else config.get("setup_commands", []) + config.get("worker_setup_commands", [])


def repo_mount(config: dict) -> str:
    """The remote path where file_mounts puts the repository's top folder."""
    mounts = [remote for remote, local in config["file_mounts"].items() if (REPO / local).resolve() == REPO]
    assert len(mounts) == 1, f"expected the repository mounted once, file_mounts = {config['file_mounts']}"
    return mounts[0]


def pinned(package: str) -> str:
    """pyproject.toml's ``package==X`` requirement."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(d for d in deps if re.match(rf"{package}(\[.*\])?==", d))


# ------------------------------------------------------------------------------ cluster.yaml
def test_cluster_yaml_validates_against_the_schema_ray_ships():
    assert schema_errors(load_cluster_config()) == []


@pytest.mark.parametrize("break_it", [
    pytest.param(lambda c: c.update(max_worker=c.pop("max_workers")), id="misspelled-top-level-key"),
    pytest.param(lambda c: c.update(max_workers="12"), id="max_workers-as-string"),
    pytest.param(lambda c: c["available_node_types"]["gpu_worker"].pop("node_config"),
                 id="node-type-without-node_config"),
    pytest.param(lambda c: c["available_node_types"]["gpu_worker"]["resources"].update(GPU=0.5),
                 id="fractional-resource"),
    pytest.param(lambda c: c["docker"].update(imag="x"), id="misspelled-docker-key"),
])
def test_the_schema_check_can_fail(break_it):
    """The same validation rejects broken copies, so the test above is not vacuous."""
    config = copy.deepcopy(load_cluster_config())
    break_it(config)
    assert schema_errors(config), "a broken config passed the schema"


def test_ray_prepares_and_validates_the_config_as_ray_up_does():
    """``ray up`` merges the AWS defaults, checks Docker and per-type worker counts and
    re-validates before touching the cloud; these are the same (Ray-internal) functions."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(load_cluster_config())
    validate_config(prepared)
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["max_workers"] == 0


def test_node_types_head_cpu_and_gpu_workers():
    config = load_cluster_config()
    assert config["provider"]["type"] == "aws"
    assert config["head_node_type"] in config["available_node_types"]
    workers = worker_types(config)
    assert {"cpu_worker", "gpu_worker"} <= set(workers)
    for name, node_type in workers.items():
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"], name
    assert config["max_workers"] == sum(t["max_workers"] for t in workers.values()), \
        "the global max_workers should be the sum of the worker types' (cluster.yaml says so)"
    assert workers["gpu_worker"]["resources"].get("GPU", 0) >= 1
    assert workers["cpu_worker"]["resources"].get("GPU", 0) == 0
    assert workers["cpu_worker"]["resources"]["CPU"] >= 1
    assert config["idle_timeout_minutes"] > 0


def test_file_mounts_exist_and_bring_the_configs():
    config = load_cluster_config()
    for remote, local in config["file_mounts"].items():
        assert (REPO / local).exists(), f"file_mounts {remote}: {local} is not in the repository"
    mounted = [(REPO / local).resolve() for local in config["file_mounts"].values()]
    assert any((REPO / "configs").resolve().is_relative_to(m) for m in mounted), "configs/ is not mounted"
    # the repository's big local folders stay behind (rsync honours .gitignore)
    assert ".gitignore" in config.get("rsync_filter", [])
    ignored = (REPO / ".gitignore").read_text().split()
    assert {".venv/", "/data/", "/runs/"} <= set(ignored)


def test_every_node_type_installs_the_package():
    config = load_cluster_config()
    install = re.compile(rf"pip install .*-e {re.escape(repo_mount(config))}\b")
    torch_pin = pinned("torch")
    cpu_index = "download.pytorch.org/whl/cpu"
    for name, node_type in config["available_node_types"].items():
        commands = setup_commands_of(config, name)
        assert any(install.search(c) for c in commands), f"{name} does not pip install -e the repo: {commands}"
        torch_cpu = [c for c in commands if cpu_index in c]
        if node_type["resources"].get("GPU", 0):
            assert not torch_cpu, f"{name} has GPUs but installs the CPU-only torch"
        else:
            assert torch_cpu and torch_pin in torch_cpu[0], f"{name}: expected {torch_pin} from the CPU index"
            assert commands.index(torch_cpu[0]) < next(i for i, c in enumerate(commands) if install.search(c)), \
                f"{name}: CPU torch must be installed before the package (or pip pulls the CUDA wheel)"


def test_docker_images_carry_the_installed_ray_and_python():
    config = load_cluster_config()
    tag = f"{ray.__version__}-py{sys.version_info.major}{sys.version_info.minor}"
    images = {"default": config["docker"]["image"]}
    for name, node_type in config["available_node_types"].items():
        if "worker_image" in node_type.get("docker", {}):
            images[name] = node_type["docker"]["worker_image"]
    for name, image in images.items():
        assert image.startswith("rayproject/ray:") and tag in image, f"{name}: {image} is not Ray {tag}"
    assert images["gpu_worker"].endswith("-gpu") and images["default"].endswith("-cpu")


def test_start_commands():
    config = load_cluster_config()
    head = " ".join(config["head_start_ray_commands"])
    worker = " ".join(config["worker_start_ray_commands"])
    assert "ray start --head" in head and "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    assert "--port=6379" in head and "ray start --address=$RAY_HEAD_IP:6379" in worker
    assert config["head_start_ray_commands"][0] == config["worker_start_ray_commands"][0] == "ray stop"


# ------------------------------------------------------------------------------ kuberay.yaml
def test_kuberay_manifest_is_an_autoscaled_raycluster_of_the_installed_ray():
    raycluster = load_raycluster()
    assert raycluster["apiVersion"] == "ray.io/v1"
    assert raycluster["metadata"]["name"] == load_cluster_config()["cluster_name"]
    spec = raycluster["spec"]
    assert spec["rayVersion"] == ray.__version__
    assert spec["enableInTreeAutoscaling"] is True
    pods = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for pod in pods:
        for container in pod["template"]["spec"]["containers"]:
            assert ray.__version__ in container["image"], container["image"]


def test_kuberay_groups_match_cluster_yaml():
    assert kuberay_mismatches(load_cluster_config(), load_raycluster()) == []


@pytest.mark.parametrize("break_it", [
    pytest.param(lambda rc: rc["spec"]["workerGroupSpecs"][0].update(maxReplicas=99), id="maxReplicas"),
    pytest.param(lambda rc: rc["spec"]["workerGroupSpecs"][1]["rayStartParams"].update({"num-gpus": "2"}),
                 id="num-gpus"),
    pytest.param(lambda rc: rc["spec"]["workerGroupSpecs"][0].update(groupName="cpu_worker"), id="group-name"),
    pytest.param(lambda rc: rc["spec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": "8"}), id="head-cpus"),
])
def test_the_kuberay_comparison_can_fail(break_it):
    raycluster = copy.deepcopy(load_raycluster())
    break_it(raycluster)
    assert kuberay_mismatches(load_cluster_config(), raycluster)
