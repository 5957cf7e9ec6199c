"""Worker settings: a YAML file read by the one settings reader, flags over it, check-config."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers import cli
from workers.settings import WorkerSettings, worker_settings

GOOD = """
engine: sim
listen: 127.0.0.1:0
pool: eu-gpu
sim:
  models: [small-model]
  max_num_seqs: 4
registration:
  redis_url: redis://127.0.0.1:6379/0
  advertise: worker-0.workers:50061
telemetry:
  sample_ratio: 0.5
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "worker.yaml"
    path.write_text(text)
    return path


def test_check_config_accepts_a_valid_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, GOOD)
    assert cli.main(["check-config", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{config}: OK") and "small-model" in out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            GOOD.replace("max_num_seqs", "max_num_seq"),
            "sim: unknown key(s) max_num_seq; allowed: models, time_to_first_token_ms,",
        ),
        (
            GOOD.replace("advertise:", "advertize:"),
            "registration: unknown key(s) advertize; allowed: redis_url, advertise, ttl_s, prefix",
        ),
        (GOOD.replace("sample_ratio: 0.5", "sample_ratio: 2"), "telemetry.sample_ratio: expected"),
        (GOOD.replace("pool: eu-gpu", "pools: eu-gpu"), "settings: unknown key(s) pools"),
        ("engine: trtllm\n", "trtllm: required with engine: trtllm"),
        ("sim: [1]\n", "sim: expected a mapping"),
        ("listen: [\n", ":2: invalid YAML"),
    ],
)
def test_check_config_refuses_naming_the_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    config = write(tmp_path, text)
    assert cli.main(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"llm-worker: {config}:" in err and message in err, err
    assert "Traceback" not in err


def test_flags_override_the_file(tmp_path: Path) -> None:
    config = write(tmp_path, GOOD)
    args = cli.build_parser().parse_args(
        ["serve", "--config", str(config), "--pool", "night", "--max-num-seqs", "9"]
    )
    settings = worker_settings(args)
    assert (settings.pool, settings.sim.max_num_seqs) == ("night", 9)
    assert settings.sim.models == ("small-model",) and settings.listen == "127.0.0.1:0"
    assert settings.telemetry.service_name == "llm-worker"


def test_flags_alone_keep_the_defaults() -> None:
    args = cli.build_parser().parse_args(["serve"])
    assert worker_settings(args) == WorkerSettings()
    trtllm = cli.build_parser().parse_args(
        ["serve", "--engine", "trtllm", "--model", "/models/m", "--max-num-seqs", "8"]
    )
    options = worker_settings(trtllm).trtllm
    assert options is not None and (options.model_path, options.max_batch_size) == ("/models/m", 8)
