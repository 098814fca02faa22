"""The admin listener's unsigned endpoints (DESIGN §5): ``/healthz``, ``/readyz``,
``/metrics``. Counters are plain integers in the data plane, rendered at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from .server import Gateway

__all__ = ["admin_app"]

GATEWAY_KEY: web.AppKey[Gateway] = web.AppKey("gateway")


class _Collector:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def collect(self) -> Iterator[Metric]:
        dp = self.gateway.data_plane
        requests = CounterMetricFamily("gateway_requests", "Requests by route, status and outcome",
                                       labels=("route", "status", "outcome"))
        for (route, status, outcome), n in sorted(dp.counters.requests.items()):
            requests.add_metric((route, str(status), outcome), n)
        yield requests
        stats = self.gateway.cache.stats
        for name, value, text in (("hits", stats.hits, "Key cache hits"),
                                  ("misses", stats.misses, "Key cache misses"),
                                  ("store_reads", stats.store_reads, "Store reads by the cache"),
                                  ("store_errors", stats.store_errors, "Store errors"),
                                  ("stale_served", stats.stale_served,
                                   "Entries served stale while the store was down")):
            yield CounterMetricFamily(f"gateway_cache_{name}", text, value=value)
        yield GaugeMetricFamily("gateway_cache_entries", "Cached keys (incl. negative entries)",
                                value=len(self.gateway.cache))


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    if gateway.draining:
        return web.json_response({"status": "draining"}, status=503)
    if not gateway.cache.store_ok:
        if len(gateway.cache) == 0:  # nothing to serve from: take this instance out
            return web.json_response({"status": "unavailable", "store": "unreachable"},
                                     status=503)
        return web.json_response({"status": "degraded", "store": "unreachable"})
    if gateway.shared is not None and not gateway.shared.healthy:
        # never 503 for Redis alone: a Redis outage must not drain the whole fleet
        return web.json_response({"status": "degraded", "redis": "unreachable"})
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(request.app[GATEWAY_KEY]))  # type: ignore[arg-type]
    return web.Response(body=generate_latest(registry),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def admin_app(gateway: Gateway) -> web.Application:
    app = web.Application()
    app[GATEWAY_KEY] = gateway
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
