"""Audit identity across a deployment: sources per pod and process, one secret, production rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from audit.settings import AuditSpoolSettings
from common.settings import SettingsError
from gateway.process.multiprocess import settings_for_process, shared_audit_secret
from gateway.process.server import check_production
from gateway.settings import GatewaySettings, ServerSettings, load_settings

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "deploy" / "gateway.yaml"


def audit_of(settings: GatewaySettings) -> AuditSpoolSettings:
    assert settings.audit is not None
    return settings.audit


def test_the_pod_name_is_the_source_and_each_process_adds_its_index() -> None:
    settings = load_settings(SHIPPED, {"LLMGW_AUDIT_SOURCE": "llm-gateway-2"})
    assert settings.audit is not None and settings.audit.source == "llm-gateway-2"
    children = [audit_of(settings_for_process(settings, i)) for i in range(2)]
    assert [c.source for c in children] == ["llm-gateway-2-p0", "llm-gateway-2-p1"]
    assert len({c.spool_path for c in children}) == 2
    keys = {c.pseudonym_key_file for c in children}
    assert keys == {"/etc/llm-gateway/audit/pseudonym.key"}  # one secret for all


def test_audit_source_without_an_audit_section_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("server: {listen: 127.0.0.1:0}\n")
    with pytest.raises(SettingsError, match="LLMGW_AUDIT_SOURCE is set but"):
        load_settings(config, {"LLMGW_AUDIT_SOURCE": "pod-0"})


def test_production_without_the_deployment_secret_refuses_to_start(tmp_path: Path) -> None:
    shipped = yaml.safe_load(SHIPPED.read_text())
    del shipped["audit"]["pseudonym_key_file"]
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(shipped))
    settings = load_settings(config, {})
    with pytest.raises(SettingsError, match=r"audit\.pseudonym_key_file: required in a production"):
        check_production(settings)
    check_production(load_settings(SHIPPED, {}))


def test_development_processes_share_one_generated_secret(tmp_path: Path) -> None:
    settings = GatewaySettings(
        server=ServerSettings(processes=2),
        audit=AuditSpoolSettings(
            spool_path=str(tmp_path / "spool.db"), source="dev", store_target="127.0.0.1:4317"
        ),
        data_dir=tmp_path,
    )
    shared = shared_audit_secret(settings)
    assert shared.audit is not None and shared.audit.pseudonym_key_file
    key = Path(shared.audit.pseudonym_key_file)
    assert key.is_file() and key.parent.parent == tmp_path
    children = [settings_for_process(shared, i) for i in range(2)]
    assert {audit_of(c).pseudonym_key_file for c in children} == {str(key)}
    assert {c.data_dir for c in children} == {tmp_path / "process-0", tmp_path / "process-1"}
