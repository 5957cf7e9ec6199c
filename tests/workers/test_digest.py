"""Weights digests: a model directory's manifest, the simulator's config, GetInfo, the CLI."""

from __future__ import annotations

import hashlib
from pathlib import Path

import grpc
import pytest
from llmgateway.worker.v1 import worker_pb2 as pb
from llmgateway.worker.v1 import worker_pb2_grpc as pb_grpc

from workers.cli import main as worker_main
from workers.digest import directory_digest, manifest, sim_digest, sim_digests
from workers.server import start_worker
from workers.sim import SimConfig, SimEngine


def _model_dir(root: Path) -> Path:
    (root / "tokenizer").mkdir(parents=True)
    (root / "config.json").write_text('{"layers": 32}')
    (root / "tokenizer" / "vocab.txt").write_text("a\nb\n")
    (root / "rank0.engine").write_bytes(bytes(range(256)) * 5000)  # over one 1 MiB chunk
    return root


def test_manifest_lists_every_file_with_its_sha256(tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "m")
    lines = manifest(model).splitlines()
    assert [line.split("  ")[1] for line in lines] == [
        "config.json",
        "rank0.engine",
        "tokenizer/vocab.txt",
    ]
    weights = (model / "rank0.engine").read_bytes()
    assert lines[1].split("  ")[0] == hashlib.sha256(weights).hexdigest()
    expected = hashlib.sha256(manifest(model).encode()).hexdigest()
    assert directory_digest(model) == f"sha256:{expected}"


def test_any_change_of_a_file_or_name_changes_the_digest(tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "m")
    before = directory_digest(model)
    (model / "config.json").write_text('{"layers": 33}')
    changed = directory_digest(model)
    (model / "config.json").write_text('{"layers": 32}')
    assert directory_digest(model) == before
    (model / "config.json").rename(model / "config2.json")
    assert len({before, changed, directory_digest(model)}) == 3


def test_sim_digest_covers_answers_not_timing() -> None:
    base = SimConfig()
    assert sim_digests(base) == sim_digests(SimConfig(inter_token_latency_ms=1, max_num_seqs=2))
    assert sim_digest(base, "a") != sim_digest(base, "b")
    assert sim_digest(base, "a") != sim_digest(SimConfig(eos_probability=0.5), "a")


async def test_get_info_advertises_the_digests() -> None:
    handle = await start_worker(SimEngine(SimConfig(models=("m1",))))
    try:
        async with grpc.aio.insecure_channel(handle.target) as channel:
            info = await pb_grpc.WorkerServiceStub(channel).GetInfo(pb.GetInfoRequest(), timeout=5)
        assert dict(info.model_digests) == {"m1": sim_digest(SimConfig(models=("m1",)), "m1")}
    finally:
        await handle.stop(grace=0)


def test_the_cli_prints_the_digest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _model_dir(tmp_path / "m")
    assert worker_main(["digest", str(model)]) == 0
    assert capsys.readouterr().out.strip() == directory_digest(model)
    assert worker_main(["digest", str(tmp_path / "absent")]) == 1
