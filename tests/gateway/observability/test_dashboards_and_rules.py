"""deploy/observability against a live gateway and worker: promtool passes, every name exists."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import yaml
from llmgateway.v1 import gateway_pb2 as pb
from llmgateway.v1 import gateway_pb2_grpc

from gateway.auth.devkeys import mint_dev_token
from gateway.process.metrics_server import MetricsSettings
from tests.gateway.observability.scrape import sample_names, scrape
from tests.helpers import ROOT, StartGateway, gateway_settings

OBSERVABILITY = ROOT / "deploy" / "observability"
PROMTOOL = shutil.which("promtool")
# CI installs promtool (.ci/run); only a developer's machine without it skips these checks.
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")
METRIC = re.compile(r"\b((?:llmgw|gen_ai|llmworker)_[a-z0-9_]+)")
# Label lists and matchers name labels, not metrics: drop them before looking for names.
LABELS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)|\{[^}]*\}")
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def used_names() -> dict[str, set[str]]:
    """Metric names in the dashboard's queries and the rules' expressions, by file."""
    dashboard = json.loads((OBSERVABILITY / "dashboard.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = yaml.safe_load((OBSERVABILITY / "alerts.yaml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    return {
        "dashboard.json": {m for q in queries for m in METRIC.findall(LABELS.sub(" ", q))},
        "alerts.yaml": {m for e in exprs for m in METRIC.findall(LABELS.sub(" ", e))},
    }


def exported(name: str, names: set[str]) -> bool:
    """A sample name in the scrape, or a family the scrape declares (no sample yet)."""
    if name in names:
        return True
    return any(name.endswith(s) and name.removesuffix(s) in names for s in SUFFIXES)


def start_worker_process(tmp_path: Path) -> tuple[subprocess.Popen[str], str, str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workers.cli",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--grace",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    target = metrics = ""
    deadline = time.monotonic() + 30
    while not (target and metrics) and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if match := re.search(r"listening on port (\d+)", line):
            target = f"127.0.0.1:{match.group(1)}"
        if match := re.search(r"metrics on (http://\S+)", line):
            metrics = match.group(1)
    assert target and metrics, "the worker did not start"
    return proc, target, metrics


@pytest.fixture
async def live_scrapes(
    start_test_gateway: StartGateway, data_dir: Path, tmp_path: Path
) -> tuple[str, str]:
    """(gateway scrape, worker scrape) after a few requests through a real worker process."""
    proc, target, worker_metrics = start_worker_process(tmp_path)
    try:

        class Remote:  # the fixture routes to `.target`
            pass

        remote = Remote()
        remote.target = target  # type: ignore[attr-defined]
        settings = gateway_settings(data_dir / "gw", metrics=MetricsSettings(listen="127.0.0.1:0"))
        gateway = await start_test_gateway(remote, settings=settings)
        token = mint_dev_token(data_dir / "gw", department="qa", subject="ops")
        async with grpc.aio.insecure_channel(gateway.target) as channel:
            stub = gateway_pb2_grpc.InferenceServiceStub(channel)
            auth = (("authorization", f"Bearer {token}"),)
            for _ in range(3):
                await stub.Generate(
                    pb.GenerateRequest(model="llama-3.1-8b-instruct", prompt="hello"),
                    metadata=auth,
                )
                async for _chunk in stub.GenerateStream(
                    pb.GenerateStreamRequest(model="llama-3.1-8b-instruct", prompt="hello"),
                    metadata=auth,
                ):
                    pass
        await asyncio.sleep(1.5)  # worker and routing gauges refresh every second
        assert gateway.metrics is not None
        return scrape(gateway.metrics.url), scrape(worker_metrics)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if proc.stdout is not None:
            proc.stdout.close()


async def test_every_name_the_dashboard_and_rules_use_is_exported(
    live_scrapes: tuple[str, str],
) -> None:
    gateway_text, worker_text = live_scrapes
    names = sample_names(gateway_text) | sample_names(worker_text)
    for source, used in used_names().items():
        assert used, f"{source}: no metric names found"
        missing = sorted(n for n in used if not exported(n, names))
        assert not missing, f"{source} uses names nothing exports: {missing}"
    # The request metrics the dashboard's main panels rest on have samples, not just a family.
    assert "gen_ai_server_request_duration_seconds_bucket" in names
    assert "llmworker_output_tokens_total" in names


@needs_promtool
async def test_promtool_check_metrics_on_a_live_scrape(live_scrapes: tuple[str, str]) -> None:
    assert PROMTOOL is not None
    for text in live_scrapes:
        result = await asyncio.to_thread(
            subprocess.run,
            [PROMTOOL, "check", "metrics"],
            input=text,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_check_rules() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(OBSERVABILITY / "alerts.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_runbook() -> None:
    rules = yaml.safe_load((OBSERVABILITY / "alerts.yaml").read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    assert len(alerts) >= 8
    for alert in alerts:
        assert len(alert["annotations"]["runbook"]) > 80, alert["alert"]
        assert alert["annotations"]["summary"], alert["alert"]
