"""deploy/k8s renders (as kustomize does) into resources that pass strict schema validation."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import K8S, OVERLAY, ROOT
from tests.deploy.kustomize import Resource, by_kind_and_name, render

KUBERNETES_VERSION = "1.37.0"


@pytest.mark.parametrize("directory", [K8S, OVERLAY], ids=["deploy/k8s", "overlay"])
def test_renderer_matches_kubectl_kustomize(directory: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the renderer cannot be compared with kustomize")
    out = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=True
    ).stdout
    assert by_kind_and_name(render(directory)) == by_kind_and_name(list(yaml.safe_load_all(out)))


def test_layout_has_every_component(rendered: list[Resource]) -> None:
    names = set(by_kind_and_name(rendered))
    for expected in [
        ("Namespace", "inference"),
        ("StatefulSet", "llm-gateway"),
        ("Deployment", "llm-audit"),
        ("Deployment", "llm-workers"),
        ("Service", "llm-workers"),
        ("PodDisruptionBudget", "llm-gateway"),
        ("NetworkPolicy", "default-deny"),
        ("ConfigMap", "llm-gateway-policy"),
    ]:
        assert expected in names
    namespaced = [r for r in rendered if r["kind"] != "Namespace"]
    assert all(r["metadata"].get("namespace") == "inference" for r in namespaced)


def test_every_resource_passes_strict_validation(rendered: list[Resource]) -> None:
    for resource in rendered:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_strict_validation_catches_a_misspelt_field(rendered: list[Resource]) -> None:
    statefulset = copy.deepcopy(by_kind_and_name(rendered)[("StatefulSet", "llm-gateway")])
    statefulset["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(statefulset, KUBERNETES_VERSION, strict=True)


def test_renderer_refuses_fields_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("patches: []\n")
    with pytest.raises(ValueError, match="patches"):
        render(tmp_path)


def test_overlay_copies_match_their_originals() -> None:
    """The overlay's gateway.yaml and policy are copies (kustomize reads only below its root)."""
    hint = "run `make k8s-config`"
    original = (ROOT / "deploy" / "gateway.yaml").read_bytes()
    assert (OVERLAY / "gateway.yaml").read_bytes() == original, hint
    policy = ROOT / "policy" / "examples" / "health-region"
    originals = {p.name: p.read_bytes() for p in policy.glob("*.yaml")}
    copies = {p.name: p.read_bytes() for p in (OVERLAY / "policy").glob("*.yaml")}
    assert copies == originals, hint
    kustomization = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    (generator,) = [g for g in kustomization["configMapGenerator"] if g["name"].endswith("policy")]
    assert sorted(Path(f).name for f in generator["files"]) == sorted(originals)
