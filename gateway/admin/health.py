"""The admin listener's unsigned endpoints (DESIGN §5): ``/healthz``, ``/readyz``,
``/metrics``. Counters are plain integers in the data plane, rendered at scrape time;
keys by status come from the store, at most every few seconds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ..keys.record import STATUSES
from ..proxy.pipeline import LATENCY_BUCKETS
from ..store import KeyFilter, StoreError
from .state import GATEWAY_KEY

if TYPE_CHECKING:
    from ..proxy.server import Gateway

__all__ = ["KeyCounts", "healthz", "metrics", "readyz"]

KEY_COUNTS_TTL = 5.0


class KeyCounts:
    """Keys by status, read from the store at most every ``ttl`` seconds."""

    def __init__(self, ttl: float = KEY_COUNTS_TTL) -> None:
        self.ttl = ttl
        self.counts: dict[str, int] = {}
        self.errors = 0
        self._at = -ttl

    async def refresh(self, gateway: Gateway) -> None:
        if time.monotonic() - self._at < self.ttl:
            return
        now = datetime.now(UTC)
        inactivity = gateway.config.policy.inactivity
        try:
            self.counts = {s: await gateway.store.count_keys(KeyFilter(status=s), now=now,
                                                             inactivity=inactivity)
                           for s in STATUSES}
        except StoreError:
            self.errors += 1  # the last counts stay; the error shows in store_errors
        self._at = time.monotonic()


class _Collector:
    def __init__(self, gateway: Gateway, key_counts: KeyCounts) -> None:
        self.gateway = gateway
        self.key_counts = key_counts

    def collect(self) -> Iterator[Metric]:
        dp = self.gateway.data_plane
        requests = CounterMetricFamily("gateway_requests", "Requests by route, status and outcome",
                                       labels=("route", "status", "outcome"))
        for (route, status, outcome), n in sorted(dp.counters.requests.items()):
            requests.add_metric((route, str(status), outcome), n)
        yield requests
        buckets, total = [], 0
        for bound, n in zip((*map(str, LATENCY_BUCKETS), "+Inf"), dp.counters.latency,
                            strict=True):
            total += n
            buckets.append((bound, total))
        yield HistogramMetricFamily("gateway_request_duration_seconds",
                                    "Data-plane request latency", buckets=buckets,
                                    sum_value=dp.counters.latency_sum)
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
        errors = CounterMetricFamily("gateway_store_errors", "Store errors by component",
                                     labels=("component",))
        errors.add_metric(("cache",), stats.store_errors)
        errors.add_metric(("usage_flush",), self.gateway.usage.flush_errors)
        errors.add_metric(("metrics",), self.key_counts.errors)
        yield errors
        keys = GaugeMetricFamily("gateway_keys", "Keys by status", labels=("status",))
        for state, n in sorted(self.key_counts.counts.items()):
            keys.add_metric((state,), n)
        yield keys


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


def metrics(key_counts: KeyCounts) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        gateway = request.app[GATEWAY_KEY]
        await key_counts.refresh(gateway)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(gateway, key_counts))
        return web.Response(body=generate_latest(registry),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
    return handler
