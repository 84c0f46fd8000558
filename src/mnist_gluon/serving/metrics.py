"""mnist-serve's Prometheus metrics: requests, errors and latency by route, images answered,
and the sizes of the forward passes."""

import time


class Metrics:
    """This server's Prometheus metrics, in a registry of its own."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("mnist_http_requests", "HTTP requests answered",
                                ["route", "method", "status"], registry=self.registry)
        self.errors = Counter("mnist_http_errors", "HTTP requests answered with 4xx or 5xx",
                              ["route", "status"], registry=self.registry)
        self.latency = Histogram(
            "mnist_http_request_duration_seconds", "Time to answer a request", ["route"],
            buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5),
            registry=self.registry)
        self.images = Counter("mnist_predicted_images", "Images classified",
                              registry=self.registry)
        self.explained = Counter("mnist_explained_images", "Images explained",
                                 registry=self.registry)
        self.forward_rows = Histogram("mnist_forward_batch_size", "Images per forward pass",
                                      buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
                                      registry=self.registry)


class MetricsMiddleware:
    """Counts and times every HTTP request, by route (any other path counts as 'other', so
    that a scanner cannot grow the label set)."""

    def __init__(self, app, metrics: Metrics, routes: frozenset[str]):
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope["path"] if scope["path"] in self.routes else "other"
            method = scope["method"] if scope["method"] in ("GET", "POST") else "other"
            self.metrics.requests.labels(route, method, str(status)).inc()
            if status >= 400:
                self.metrics.errors.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
