"""The one settings reader: conversions, unknown keys, key paths, docs/configuration.md fresh."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from common.settings import SettingsError, load, read
from common.settings_doc import render
from gateway.settings import GatewaySettings, load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_doc_is_generated_from_the_declarations() -> None:
    current = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert current == render(), "docs/configuration.md is stale: run `make docs`"


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        (
            "routing:\n  tls: {ca_file: ca.pem, cert_fle: c.pem}\n",
            "routing.tls: unknown key(s) cert_fle; allowed: ca_file, cert_file, key_file,",
        ),
        (
            "auth: {issuer: i, audience: a, algorithms: [RS256], pem_files: [k],"
            " jwks: {url: 'https://idp.example', refresh: 1}}\n",
            "auth.jwks: unknown key(s) refresh; allowed: url, refresh_interval_s,",
        ),
        ("metrics: {listen: 9464}\n", "metrics.listen: expected a string such as"),
        ("routing: {tls: {cert_file: c}}\n", "routing.tls.ca_file: expected a string"),
        ("limits: {lease_ttl_s: 5, reservation_ttl_s: 1}\n", "limits.lease_ttl_s: must not"),
        (
            "produciton: true\n",
            "settings: unknown key(s) produciton; allowed: server, http, routing,",
        ),
    ],
)
def test_gateway_file_errors_name_the_file_and_the_key_path(
    tmp_path: Path, yaml: str, message: str
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml)
    with pytest.raises(SettingsError) as error:
        load_settings(config)
    assert str(error.value).startswith(f"{config}: ") and message in str(error.value)


def test_values_are_converted_and_sections_default() -> None:
    settings = read(GatewaySettings, {"server": {"shutdown_grace_s": 3}, "metrics": None})
    assert settings.server.shutdown_grace_s == 3.0 and isinstance(settings.data_dir, Path)
    assert settings.metrics is not None and settings.metrics.listen == "127.0.0.1:9464"
    assert settings.auth is None and settings.routing.workers == ()
    with pytest.raises(SettingsError, match=r"^server\.processes: expected int, got True"):
        read(GatewaySettings, {"server": {"processes": True}})


def test_overrides_apply_over_the_file_and_are_checked_the_same(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("server: {listen: 127.0.0.1:1, processes: 2}\n")
    settings = load(GatewaySettings, config, {"server.processes": 3, "server.listen": None})
    assert (settings.server.listen, settings.server.processes) == ("127.0.0.1:1", 3)
    with pytest.raises(SettingsError, match=r"server\.processes: must be greater than 0"):
        load(GatewaySettings, config, {"server.processes": 0})


def test_a_worker_process_loads_no_yaml_without_a_file() -> None:
    code = (
        "import sys, workers.cli, workers.settings\n"
        "workers.settings.worker_settings(workers.cli.build_parser().parse_args(['serve']))\n"
        "print('yaml' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False"
