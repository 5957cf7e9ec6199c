"""Scrape a metrics endpoint over HTTP and sum its samples (works for one process or several)."""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str, *, openmetrics: bool = False) -> str:
    accept = "application/openmetrics-text; version=1.0.0" if openmetrics else "text/plain"
    request = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=5) as response:  # loopback test server
        body: bytes = response.read()
    return body.decode()


def sample_total(text: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """Sum of the samples called `name` whose labels include `labels`."""
    want = dict(labels or {})
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in want.items()):
                total += sample.value
    return total


def sample_names(text: str) -> set[str]:
    """Every sample name and family name in an exposition."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names
