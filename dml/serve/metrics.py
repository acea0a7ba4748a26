"""Prometheus text for GET /metrics (prometheus_client, one registry per service):

    dml_serve_requests_total{route,method,status}   requests answered
    dml_serve_errors_total{route,status}            of them, answered 4xx or 5xx
    dml_serve_request_seconds{route}                latency histogram, request to response
    dml_serve_batch_rows{stage}                     rows per batch (embed, search)
    dml_serve_index_vectors, dml_serve_index_generation   the live generation
"""
import time

import prometheus_client
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONTENT_TYPE = CONTENT_TYPE_LATEST
OTHER_ROUTE = "other"
METHODS = ("GET", "POST", "HEAD")


class Metrics:
    def __init__(self, live_size, live_generation):
        """live_size(), live_generation(): the live generation's vector count and number,
        read at each scrape."""
        prometheus_client.disable_created_metrics()  # no *_created series: counters start with the process
        self.registry = CollectorRegistry()
        self.requests = Counter("dml_serve_requests", "HTTP requests answered.", ["route", "method", "status"],
                                registry=self.registry)
        self.errors = Counter("dml_serve_errors", "HTTP requests answered with a 4xx or 5xx status.",
                              ["route", "status"], registry=self.registry)
        self.latency = Histogram("dml_serve_request_seconds", "Time from a request's start to its response's end.",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_rows = Histogram("dml_serve_batch_rows", "Rows (images or query vectors) per batch.", ["stage"],
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        Gauge("dml_serve_index_vectors", "Vectors in the live generation of the index.",
              registry=self.registry).set_function(live_size)
        Gauge("dml_serve_index_generation", "Number of the live generation of the index.",
              registry=self.registry).set_function(live_generation)

    def observe(self, route, method, status, seconds):
        self.requests.labels(route, method, str(status)).inc()
        if status >= 400:
            self.errors.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def batch_observer(self, stage):
        return self.batch_rows.labels(stage).observe

    def text(self):
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template (e.g. /thumb/{row}),
    so a client cannot grow the label set; unknown paths count as "other"."""

    def __init__(self, app, metrics, routes):
        self.app = app
        self.metrics = metrics
        self.routes = set(routes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def tracked(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        finally:
            route = getattr(scope.get("route"), "path", scope["path"])  # no route: refused before routing
            route = route if route in self.routes else OTHER_ROUTE
            method = scope["method"] if scope["method"] in METHODS else OTHER_ROUTE
            self.metrics.observe(route, method, status, time.perf_counter() - start)
