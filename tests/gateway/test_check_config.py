"""`llm-gateway check-config`: any file gives OK or a short error; it refuses what serve refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.egress import EgressGuard, ResidencyViolation
from gateway.cli import main
from gateway.process.server import check_egress
from gateway.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = yaml.safe_load((ROOT / "deploy" / "gateway.yaml").read_text())
BUDGET = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(9)
)


def values() -> st.SearchStrategy[object]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.text(max_size=30),
        st.dates(),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=10,
    )


@st.composite
def mutated_deploy(draw: st.DrawFn) -> bytes:
    """The shipped production settings with one value (at any depth) replaced."""
    data = yaml.safe_load(yaml.safe_dump(DEPLOY))
    node = data
    while True:
        key = draw(st.sampled_from(sorted(node)))
        if isinstance(node[key], dict) and draw(st.booleans()):
            node = node[key]
            continue
        node[key] = draw(values())
        return yaml.safe_dump(data).encode()


def contents() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=200),
        values().map(lambda v: yaml.safe_dump(v).encode()),
        mutated_deploy(),
        st.sampled_from(
            [
                b"\x07",
                b"\xff\xfe",
                b"[" * 10_000,
                BOMB.encode(),
                b"server: &a {listen: *a}\n",
                b"server: {listen: 2001-13-01}\n",
                b"server: {processes: " + b"9" * 6000 + b"}\n",
                BOMB.encode() + b"server: {listen: *j}\n",
            ]
        ),
    )


@BUDGET
@given(content=contents())
def test_check_config_never_prints_a_traceback(
    tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    path = tmp_path_factory.mktemp("cfg") / "gateway.yaml"
    path.write_bytes(content)
    code = main(["check-config", "--config", str(path)])
    out, err = capsys.readouterr()
    assert code in (0, 1), err
    assert "Traceback" not in out + err
    if code == 1:
        assert err.startswith(str(path)), err
        assert len(err) < 4000  # an expanded alias would print megabytes


def _otlp_settings(tmp_path: Path, endpoint: str) -> Path:
    data = yaml.safe_load(yaml.safe_dump(DEPLOY))
    # Every other address on loopback, so that only the OTLP endpoint can be refused.
    data["routing"] = {"workers": ["127.0.0.1:50061"]}
    data["limits"] = {}
    data["audit"] = {**data["audit"], "store_target": "127.0.0.1:4317"}
    data["telemetry"] = {"enabled": True, "otlp_endpoint": endpoint}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_check_config_resolve_refuses_an_otlp_endpoint_serve_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Plaintext to a public address: outside every allowed network of the deploy settings.
    path = _otlp_settings(tmp_path, "http://192.0.2.10:4317")
    settings = load_settings(path, {})
    with pytest.raises(ResidencyViolation, match="OTLP trace endpoint"):
        check_egress(settings, EgressGuard(settings.residency))  # what serve runs first

    assert main(["check-config", "--config", str(path), "--resolve"]) == 1
    assert "OTLP trace endpoint" in capsys.readouterr().err

    allowed = _otlp_settings(tmp_path, "http://127.0.0.1:4317")
    assert main(["check-config", "--config", str(allowed), "--resolve"]) == 0
