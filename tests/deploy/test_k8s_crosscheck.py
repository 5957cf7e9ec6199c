"""Every file the shipped configuration names is mounted; probes, egress and pods fit the config."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.deploy.kustomize import Resource, by_kind_and_name, pod_specs

PSEUDONYM_KEY_FILE = "/etc/llm-gateway/audit/pseudonym.key"  # audit.pseudonym_key_file
PATH_KEYS = ("_file", "_files", "_path", "directory", "data_dir", "ssl_ca_certs", "ssl_certfile")


def config_paths(node: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """(setting, path) for each file or directory a settings mapping names, URL queries included."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from config_paths(v, f"{key}.{k}" if key else k)
    elif isinstance(node, list):
        for v in node:
            yield from config_paths(v, key)
    elif isinstance(node, str):
        if key.endswith(PATH_KEYS) and node.startswith("/"):
            yield key, node
        elif node.startswith(("rediss://", "redis://")):
            for name, values in parse_qs(urlsplit(node).query).items():
                yield from ((f"{key}?{name}", v) for v in values)


def container(rendered: list[Resource], kind: str, name: str) -> tuple[dict[str, Any], Any]:
    workload = by_kind_and_name(rendered)[(kind, name)]
    pod = workload["spec"]["template"]["spec"]
    return pod, pod["containers"][0]


def volume_files(rendered: list[Resource], pod: dict[str, Any], volume_name: str) -> set[str]:
    """The file names a read-only volume holds (from the items it projects)."""
    (volume,) = [v for v in pod["volumes"] if v["name"] == volume_name]
    if "configMap" in volume:
        config_maps = by_kind_and_name(rendered)
        return set(config_maps[("ConfigMap", volume["configMap"]["name"])]["data"])
    sources = volume["projected"]["sources"] if "projected" in volume else [volume]
    files: set[str] = set()
    for source in sources:
        secret = source["secret"]
        assert secret.get("items"), f"{volume_name}: list the secret's items so each file is named"
        files |= {item["path"] for item in secret["items"]}
    return files


def find_mount(pod: dict[str, Any], ctr: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    """The mount holding `path` and the path inside it."""
    for mount in ctr["volumeMounts"]:
        root = mount["mountPath"].rstrip("/")
        if path == root or path.startswith(root + "/"):
            return mount, path[len(root) :].lstrip("/")
    raise AssertionError(f"{path} is not on any volume mount of container {ctr['name']}")


def assert_readable(
    rendered: list[Resource], pod: dict[str, Any], ctr: dict[str, Any], path: str
) -> None:
    mount, inside = find_mount(pod, ctr, path)
    if inside:
        files = volume_files(rendered, pod, mount["name"])
        assert inside in files, f"{path}: volume {mount['name']} has only {sorted(files)}"
    assert mount.get("readOnly"), f"{path}: mount {mount['mountPath']} should be read-only"


def test_every_path_in_the_gateway_config_is_mounted(
    rendered: list[Resource], gateway_config: dict[str, Any]
) -> None:
    pod, ctr = container(rendered, "StatefulSet", "llm-gateway")
    config_file = ctr["args"][ctr["args"].index("--config") + 1]
    assert_readable(rendered, pod, ctr, config_file)
    paths = dict(config_paths(gateway_config))
    assert len(paths) >= 8, paths  # certificates, keys, CAs, JWKS, policy, spool, data_dir
    writable = {"data_dir", "audit.spool_path"}
    for setting, path in paths.items():
        if setting in writable:
            mount, _ = find_mount(pod, ctr, path)
            assert not mount.get("readOnly"), f"{setting}: {path} must be writable"
            claims = [
                c["metadata"]["name"]
                for c in by_kind_and_name(rendered)[("StatefulSet", "llm-gateway")]["spec"][
                    "volumeClaimTemplates"
                ]
            ]
            assert mount["name"] in claims, f"{setting}: {path} must follow the replica (a PVC)"
        elif setting == "policy.directory":
            mount, inside = find_mount(pod, ctr, path)
            assert inside == "" and mount.get("readOnly"), f"{path}: mount the policy directory"
        else:
            assert_readable(rendered, pod, ctr, path)
    # audit.pseudonym_key_file: one key for every replica and process.
    assert_readable(rendered, pod, ctr, PSEUDONYM_KEY_FILE)


def test_the_audit_store_and_workers_have_their_files(rendered: list[Resource]) -> None:
    pod, ctr = container(rendered, "Deployment", "llm-audit")
    args = ctr["args"]
    assert_readable(rendered, pod, ctr, args[args.index("--tls-cert") + 1])
    assert_readable(rendered, pod, ctr, args[args.index("--tls-key") + 1])
    keys_dir = args[args.index("--keys-dir") + 1]
    assert_readable(rendered, pod, ctr, posixpath.join(keys_dir, "checkpoint_ed25519.pem"))
    dsn_env = {e["name"]: e for e in ctr["env"]}["AUDIT_DSN"]
    assert dsn_env["valueFrom"]["secretKeyRef"]["name"] == "llm-audit-db"
    assert "$(AUDIT_DSN)" in args

    pod, ctr = container(rendered, "Deployment", "llm-workers")
    args = ctr["args"]
    for flag in ("--tls-cert", "--tls-key", "--tls-client-ca"):
        assert_readable(rendered, pod, ctr, args[args.index(flag) + 1])
    find_mount(pod, ctr, args[args.index("--model") + 1])


def port_number(ctr: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in ctr["ports"] if p["name"] == port]
    return int(number)


def test_probes_reach_a_plaintext_listener(
    rendered: list[Resource], gateway_config: dict[str, Any]
) -> None:
    """The client port is mTLS-only: kubelet probes must use the plaintext health port."""
    _, ctr = container(rendered, "StatefulSet", "llm-gateway")
    health_port = int(gateway_config["metrics"]["listen"].rpartition(":")[2])
    client_port = int(gateway_config["server"]["listen"].rpartition(":")[2])
    assert gateway_config["auth"]["mtls"]["require_client_cert"] is True
    paths = {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"}
    for kind, path in paths.items():
        probe = ctr[kind]
        assert set(probe) & {"httpGet", "grpc", "tcpSocket", "exec"} == {"httpGet"}, kind
        assert port_number(ctr, probe["httpGet"]["port"]) == health_port != client_port, kind
        assert probe["httpGet"]["path"] == path, kind
    # The audit store and workers serve TLS only: a TCP connect is the probe that can succeed.
    for kind, name in (("Deployment", "llm-audit"), ("Deployment", "llm-workers")):
        _, ctr = container(rendered, kind, name)
        declared = {p["containerPort"] for p in ctr["ports"]}
        for probe_kind in ("livenessProbe", "readinessProbe", "startupProbe"):
            if probe_kind in ctr:
                probe = ctr[probe_kind]
                assert set(probe) & {"httpGet", "grpc"} == set(), f"{name} {probe_kind}"
                assert port_number(ctr, probe["tcpSocket"]["port"]) in declared


def test_each_gateway_pod_is_its_own_audit_source(rendered: list[Resource]) -> None:
    _, ctr = container(rendered, "StatefulSet", "llm-gateway")
    env = {e["name"]: e for e in ctr["env"]}
    assert env["LLMGW_AUDIT_SOURCE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


@pytest.mark.parametrize(
    ("kind", "name"),
    [("StatefulSet", "llm-gateway"), ("Deployment", "llm-audit"), ("Deployment", "llm-workers")],
)
def test_pods_run_locked_down(rendered: list[Resource], kind: str, name: str) -> None:
    pod, _ = container(rendered, kind, name)
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
    assert security["fsGroup"] == 10001
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for ctr in pod["containers"]:
        assert ctr["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(ctr["resources"][bound]), f"{name} {bound}"
        find_mount(pod, ctr, "/tmp/x")  # a writable /tmp on a read-only root filesystem
    for volume in pod["volumes"]:
        secret_like = volume.get("secret") or volume.get("projected")
        if secret_like:
            assert secret_like["defaultMode"] == 0o440, f"{name}: {volume['name']}"


def test_disruption_budgets_cover_the_replicated_workloads(rendered: list[Resource]) -> None:
    budgets = [r for r in rendered if r["kind"] == "PodDisruptionBudget"]
    covered = {b["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] for b in budgets}
    assert covered == {"llm-gateway", "llm-workers"}


def egress_targets(config: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """Each address the gateway sends to, by setting: (host, port)."""
    targets: dict[str, tuple[str, int]] = {}
    for i, name in enumerate(config["routing"]["dns_names"]):
        host, _, port = name.rpartition(":")
        targets[f"routing.dns_names[{i}]"] = (host, int(port))
    for setting, url in (
        ("limits.redis_url", config["limits"]["redis_url"]),
        ("telemetry.otlp_endpoint", config["telemetry"]["otlp_endpoint"]),
    ):
        parts = urlsplit(url)
        assert parts.hostname and parts.port, setting
        targets[setting] = (parts.hostname, parts.port)
    host, _, port = config["audit"]["store_target"].rpartition(":")
    targets["audit.store_target"] = (host, int(port))
    assert "url" not in config["auth"].get("jwks", {}), "a JWKS URL needs an egress rule too"
    return targets


def test_gateway_egress_is_exactly_what_the_config_names(
    rendered: list[Resource], gateway_config: dict[str, Any]
) -> None:
    resources = by_kind_and_name(rendered)
    deny = resources[("NetworkPolicy", "default-deny")]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    policy = resources[("NetworkPolicy", "llm-gateway")]["spec"]
    rules = policy["egress"]
    residency = gateway_config["residency"]
    matched: set[int] = set()
    for setting, (host, port) in egress_targets(gateway_config).items():
        assert host.endswith(tuple(residency["allowed_host_suffixes"])), setting
        service, namespace, *_ = host.split(".")
        candidates = [
            i
            for i, rule in enumerate(rules)
            if any(p["port"] == port for p in rule["ports"])
            and any(
                _peer_matches(peer, namespace, resources.get(("Service", service)))
                for peer in rule["to"]
            )
        ]
        assert candidates, f"{setting}: no egress rule reaches {host}:{port}"
        matched.update(candidates)
    dns = [i for i, r in enumerate(rules) if {p["port"] for p in r["ports"]} == {53}]
    assert len(dns) == 1
    assert matched | set(dns) == set(range(len(rules))), (
        "an egress rule allows more than the config"
    )


def _peer_matches(peer: dict[str, Any], namespace: str, service: Resource | None) -> bool:
    labels = peer.get("namespaceSelector", {}).get("matchLabels")
    in_namespace = (
        labels == {"kubernetes.io/metadata.name": namespace}
        if labels is not None
        else namespace == "inference"
    )
    if service is not None:  # one of ours: the rule must select that Service's pods
        return (
            in_namespace
            and peer.get("podSelector", {}).get("matchLabels") == service["spec"]["selector"]
        )
    return in_namespace and "podSelector" in peer and "ipBlock" not in peer


def test_images_are_pinned_to_a_tag(rendered: list[Resource]) -> None:
    """Every workload image is pinned to a tag (never `latest`)."""
    for _, pod in pod_specs(rendered):
        for ctr in pod["containers"]:
            name, _, tag = ctr["image"].rpartition(":")
            assert name and tag and tag != "latest", ctr["image"]


def test_every_client_listener_is_declared_served_and_open(
    rendered: list[Resource], gateway_config: dict[str, Any]
) -> None:
    """server.listen and http.listen are container ports, in the client Service, and open in the
    gateway's ingress NetworkPolicy (default deny drops the rest); metrics.listen is declared."""
    _, ctr = container(rendered, "StatefulSet", "llm-gateway")
    declared = {p["containerPort"]: p["name"] for p in ctr["ports"]}
    resources = by_kind_and_name(rendered)
    targets = {p["targetPort"] for p in resources[("Service", "llm-gateway")]["spec"]["ports"]}
    ingress = resources[("NetworkPolicy", "llm-gateway")]["spec"]["ingress"]
    open_to_clients = {p["port"] for rule in ingress if "from" not in rule for p in rule["ports"]}
    for section in ("server", "http"):
        port = int(gateway_config[section]["listen"].rpartition(":")[2])
        assert port in declared, f"{section}.listen {port}: not a container port"
        assert declared[port] in targets, f"{section}.listen {port}: not in Service llm-gateway"
        assert port in open_to_clients, f"{section}.listen {port}: ingress policy drops it"
    assert int(gateway_config["metrics"]["listen"].rpartition(":")[2]) in declared
