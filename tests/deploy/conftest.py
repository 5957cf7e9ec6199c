"""The shipped Kubernetes layout, rendered once per session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.kustomize import Resource, render

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAY = K8S / "overlays" / "health-region"


@pytest.fixture(scope="session")
def rendered() -> list[Resource]:
    """What `kubectl apply -k deploy/k8s` would send."""
    return render(K8S)


@pytest.fixture(scope="session")
def gateway_config(rendered: list[Resource]) -> dict[str, Any]:
    """The gateway settings as mounted in the pods (from the generated ConfigMap)."""
    (config_map,) = [
        r
        for r in rendered
        if r["kind"] == "ConfigMap" and r["metadata"]["name"].startswith("llm-gateway-config-")
    ]
    loaded: dict[str, Any] = yaml.safe_load(config_map["data"]["gateway.yaml"])
    return loaded
