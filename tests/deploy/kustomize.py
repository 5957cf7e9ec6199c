"""Renders the kustomize features deploy/k8s uses, so that its tests need no kubectl."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]

# Anything else in a kustomization.yaml is refused, so that this renderer never silently differs
# from kustomize on a field it does not implement.
SUPPORTED = {
    "apiVersion",
    "kind",
    "namespace",
    "resources",
    "images",
    "replicas",
    "configMapGenerator",
}
CLUSTER_SCOPED = {"Namespace"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


def render(directory: Path) -> list[Resource]:
    """The resources `kustomize build directory` produces (in no particular order)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise ValueError(f"{directory}/kustomization.yaml: unsupported fields {sorted(unknown)}")
    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        if path.is_dir():
            resources += render(path)
        else:
            text = path.read_text(encoding="utf-8")
            resources += [doc for doc in yaml.safe_load_all(text) if doc]
    renames: dict[str, str] = {}
    for generator in kustomization.get("configMapGenerator", []):
        config_map = _generate(directory, generator)
        if not generator.get("options", {}).get("disableNameSuffixHash"):
            name = config_map["metadata"]["name"]
            renames[name] = f"{name}-{config_map_hash(config_map)}"
            config_map["metadata"]["name"] = renames[name]
        resources.append(config_map)
    namespace = kustomization.get("namespace")
    images = {i["name"]: i for i in kustomization.get("images", [])}
    replicas = {r["name"]: r["count"] for r in kustomization.get("replicas", [])}
    for resource in resources:
        if namespace and resource["kind"] not in CLUSTER_SCOPED:
            resource["metadata"]["namespace"] = namespace
        if resource["kind"] in WORKLOADS:
            if resource["metadata"]["name"] in replicas:
                resource["spec"]["replicas"] = replicas[resource["metadata"]["name"]]
            _rewrite_pod(resource["spec"]["template"]["spec"], renames, images)
    return resources


def _generate(directory: Path, generator: dict[str, Any]) -> Resource:
    data = {Path(f).name: (directory / f).read_text(encoding="utf-8") for f in generator["files"]}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": generator["name"]},
        "data": data,
    }


def config_map_hash(config_map: Resource) -> str:
    """kustomize's name suffix (api/hasher): sha256 of Go's JSON of kind, name and data.

    kustomize looks the name up as one field literally called "metadata/name", finds none and
    hashes an empty name; so does this, or the suffixes would differ from kustomize's.
    """
    encoded = json.dumps(
        {"data": config_map["data"], "kind": "ConfigMap", "name": ""},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    # Go's encoding/json escapes these for HTML safety.
    for char, escaped in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e")):
        encoded = encoded.replace(char, escaped)
    digest = hashlib.sha256(encoded.encode()).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def _rewrite_pod(pod: dict[str, Any], renames: dict[str, str], images: dict[str, Any]) -> None:
    for volume in pod.get("volumes", []):
        refs = [volume.get("configMap")]
        refs += [s.get("configMap") for s in volume.get("projected", {}).get("sources", [])]
        for ref in refs:
            if ref and ref.get("name") in renames:
                ref["name"] = renames[ref["name"]]
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        name, _, tag = container["image"].partition(":")
        if name in images:
            new = images[name]
            container["image"] = f"{new.get('newName', name)}:{new.get('newTag', tag)}"


def pod_specs(resources: list[Resource]) -> Iterator[tuple[Resource, dict[str, Any]]]:
    """Each workload with its pod spec."""
    for resource in resources:
        if resource["kind"] in WORKLOADS:
            yield resource, resource["spec"]["template"]["spec"]


def by_kind_and_name(resources: list[Resource]) -> dict[tuple[str, str], Resource]:
    return {(r["kind"], r["metadata"]["name"]): copy.deepcopy(r) for r in resources}
