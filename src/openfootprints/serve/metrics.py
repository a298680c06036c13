"""Prometheus metrics of the service (``GET /metrics``): requests, errors by cause, latency, km² and buildings
processed, the confidence of what was found, and the workers' state.

Each app has its own registry (two apps in one process, as in tests, never share counts). The names follow
Prometheus' conventions: ``_total`` counters, ``_seconds`` histograms, base units (km² is the one exception,
the unit users count land in).
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# An error response's status → why it failed, as users and operators name it
CAUSES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 408: "upload_too_slow",
          413: "too_large", 415: "not_a_geotiff", 422: "bad_input", 500: "detection_failed", 503: "busy",
          504: "detection_too_slow"}
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)  # seconds
CONFIDENCE_BUCKETS = tuple(np.round(np.arange(0.1, 1.0, 0.1), 1)) + (1.0,)


class ServiceMetrics:
    """The counters of one service. ``record_request`` is called for every request by :class:`MetricsMiddleware`;
    ``record_detection`` for every detection that returned buildings."""

    def __init__(self, workers: Callable[[], dict[str, int]]):
        self.registry = CollectorRegistry()
        self.requests = Counter("openfootprints_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=self.registry)
        self.errors = Counter("openfootprints_request_errors", "Failed requests by cause (from the status code)",
                              ["cause"], registry=self.registry)
        self.latency = Histogram("openfootprints_request_seconds", "Time to answer a request, seconds",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.area = Counter("openfootprints_area_km2", "Land searched for buildings, km²", registry=self.registry)
        self.buildings = Counter("openfootprints_buildings", "Buildings found", registry=self.registry)
        self.confidence = Histogram("openfootprints_building_confidence", "Confidence of the buildings found",
                                    buckets=CONFIDENCE_BUCKETS, registry=self.registry)
        self.scenes = Counter("openfootprints_scenes", "Scenes detected", registry=self.registry)
        self.drifted = Counter("openfootprints_scenes_drifted", "Scenes whose imagery or predictions are unlike the "
                               "model's validation data (population stability index ≥ 0.25)", registry=self.registry)
        state = Gauge("openfootprints_workers", "Worker processes by state, and requests queued", ["state"],
                      registry=self.registry)
        for name in ("idle", "busy", "queued"):
            state.labels(name).set_function(_reader(workers, name))

    def record_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        if status >= 400:
            self.errors.labels(CAUSES.get(status, f"http_{status}")).inc()

    def record_detection(self, area_km2: float, confidence: np.ndarray, drifted: bool = False) -> None:
        """One scene of ``area_km2`` km² whose buildings have these confidences, shape (n,), in [0, 1]; ``drifted``:
        its imagery or predictions were unlike the model's validation data."""
        self.scenes.inc()
        self.drifted.inc(int(drifted))
        self.area.inc(max(0.0, area_km2))
        self.buildings.inc(len(confidence))
        for value in np.asarray(confidence, np.float64):
            self.confidence.observe(value)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)


def _reader(workers: Callable[[], dict[str, int]], name: str) -> Callable[[], float]:
    """A gauge's reading: one value of the workers' state, read when the metrics are scraped."""
    return lambda: float(workers().get(name, 0))


class MetricsMiddleware:
    """ASGI middleware: status and latency of every HTTP request, by endpoint: one of ``endpoints``, a mounted
    app's prefix (``/viewer``), or ``other`` (so a scanner's made-up paths cannot make the label set grow)."""

    def __init__(self, app, metrics: ServiceMetrics, endpoints: set[str], prefixes: tuple[str, ...] = ()):
        self.app, self.metrics, self.endpoints, self.prefixes = app, metrics, endpoints, prefixes

    def endpoint(self, path: str) -> str:
        if path in self.endpoints:
            return path
        return next((p for p in self.prefixes if path.startswith(p + "/") or path == p), "other")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        endpoint = self.endpoint(scope["path"])
        status, start = 500, time.monotonic()

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.metrics.record_request(endpoint, status, time.monotonic() - start)
