"""Fixtures for observability tests: a real OTLP/gRPC collector and a decoy listener."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gateway.observability.otlp_collector import Collector, Decoy, run_collector, run_decoy


@pytest.fixture
def collector() -> Iterator[Collector]:
    with run_collector() as running:
        yield running


@pytest.fixture
def decoy() -> Iterator[Decoy]:
    with run_decoy() as running:
        yield running
