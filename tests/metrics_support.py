"""Reading a server's /metrics the way Prometheus does: over HTTP, with prometheus_client's
own parser."""

from __future__ import annotations

from collections.abc import Mapping

import httpx
from prometheus_client.parser import text_string_to_metric_families

Sample = tuple[str, frozenset[tuple[str, str]]]


class Scrape:
    """One scrape: each sample's value by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[Sample, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; a sample the server does not expose fails the test."""
        key = (name, frozenset(labels.items()))
        assert key in self.samples, f"/metrics has no {name}{labels or ''}:\n{self.text}"
        return self.samples[key]

    def delta(self, earlier: Scrape, name: str, **labels: str) -> float:
        return self.value(name, **labels) - earlier.value(name, **labels)


async def scrape(http: httpx.AsyncClient, headers: Mapping[str, str] | None = None) -> Scrape:
    response = await http.get("/metrics", headers=dict(headers or {}))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    return Scrape(response.text)
