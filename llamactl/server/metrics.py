"""``GET /metrics``: what llamactl sees, in Prometheus's text format, through prometheus_client.

Three kinds of figures, each labelled by ``instance`` (and ``backend``):

- per request, counted as each one ends (``observe``, a ``RequestOutcome``):
  requests by endpoint and status, queue wait, time to the first byte of the
  answer (TTFT for streams), duration, prompt and completion tokens;
- per transition, counted from the manager's events as they are published:
  starts by cause, stops by reason (evictions are stops for ``evicted``),
  crashes, and swaps with their latency (from the decision to stop others
  for an instance until it is ready);
- per instance, read when scraped (nothing on the hot path): the state as one
  gauge per state, requests in flight and queued, restarts, the estimated and
  measured memory, the context it runs with; and llamactl's own process.

Labels are bounded: instances that exist, known endpoints, status codes.
Per-key figures are left out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from llamactl.backends import get_backend
from llamactl.instance.events import EventKind, InstanceEvent
from llamactl.instance.manager import InstanceManager
from llamactl.instance.status import InstanceStatus
from llamactl.server.asgi import Receive, Scope, Send, send_whole
from llamactl.server.auth import Principal
from llamactl.server.request_outcome import RequestOutcome

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""The text format every Prometheus version and promtool read."""
BACKEND_SCRAPE_TIMEOUT = 2.0
"""Seconds a backend's /metrics may take; past it, that backend is left out of the scrape."""
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
"""Seconds: from a proxied health check to a long generation or a cold start."""
DELETED = "deleted"
"""The status the manager publishes when an instance is deleted."""
STARTS = frozenset({"on_demand", "api", "restart"})
STOP_REASONS = frozenset({"api", "idle", "evicted", "reload", "shutdown"})
LEAVING = frozenset({InstanceStatus.SHUTTING_DOWN.value, InstanceStatus.STOPPED.value})
"""A stop is counted when an instance enters one of these, not as it moves on between them."""


class Metrics:
    def __init__(
        self, manager: InstanceManager, scrape_backends: bool = False, per_key: bool = False
    ) -> None:
        """``scrape_backends``: a scrape includes each running backend's own metrics.

        ``per_key``: requests and tokens are also counted by the API key's name.
        """
        self._manager = manager
        self._host = manager.settings.host
        self._scrape_backends = scrape_backends
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        labels = ["instance", "backend"]
        self.requests = Counter(
            "llamactl_requests",
            "Requests proxied to an instance, by endpoint and status (499: the client left).",
            [*labels, "endpoint", "status"],
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "llamactl_queue_wait_seconds",
            "From a request's arrival to its admission: a start, a swap or a queue included.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.first_byte = Histogram(
            "llamactl_time_to_first_byte_seconds",
            "Streamed answers: from the request's arrival to the first byte of the stream (TTFT).",
            [*labels, "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.duration = Histogram(
            "llamactl_request_duration_seconds",
            "From a request's arrival to the end of its answer.",
            [*labels, "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "llamactl_prompt_tokens",
            "Prompt tokens, from the answers' usage.",
            labels,
            registry=self.registry,
        )
        self.completion_tokens = Counter(
            "llamactl_completion_tokens",
            "Completion tokens, from the answers' usage.",
            labels,
            registry=self.registry,
        )
        self.starts = Counter(
            "llamactl_instance_starts",
            "Starts, by cause: on_demand, api, restart (after a crash or a restart request).",
            ["instance", "cause"],
            registry=self.registry,
        )
        self.stops = Counter(
            "llamactl_instance_stops",
            "Stops, by reason: api, idle, evicted (a swap or memory pressure), reload, shutdown.",
            ["instance", "reason"],
            registry=self.registry,
        )
        self.crashes = Counter(
            "llamactl_instance_crashes",
            "Backends that exited while running, or failed to start.",
            ["instance", "kind"],
            registry=self.registry,
        )
        self._per_key = per_key
        self.key_requests = Counter(
            "llamactl_key_requests",
            "Requests by API key name (management: a management key), with metrics.per_key.",
            ["key", "instance"],
            registry=self.registry,
        )
        self.key_tokens = Counter(
            "llamactl_key_tokens",
            "Prompt and completion tokens by API key name, with metrics.per_key.",
            ["key", "instance", "kind"],
            registry=self.registry,
        )
        self.swaps = Counter(
            "llamactl_swaps",
            "Starts that other instances were stopped for, by the instance swapped in.",
            ["instance"],
            registry=self.registry,
        )
        self.swap_latency = Histogram(
            "llamactl_swap_seconds",
            "From the decision to stop other instances for this one until it was ready.",
            ["instance"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.scrape_failures = Counter(
            "llamactl_backend_scrape_failures",
            "Scrapes of a backend's own metrics that failed or timed out.",
            ["instance"],
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, str], _Children] = {}
        self._requests: dict[tuple[str, str, str, int], Any] = {}
        self._lifecycle: set[tuple[Counter, tuple[str, str]]] = set()
        """The lifecycle counters' label values seen, to remove a deleted instance's."""
        self._swapped_in: set[str] = set()
        self._keyed: set[tuple[str, str]] = set()
        """The (key, instance) pairs counted, to remove a deleted instance's."""
        self.registry.register(_InstanceCollector(manager))
        manager.events.listen(self.transitioned)

    def observe(self, outcome: RequestOutcome) -> None:
        # The labelled children are looked up once per (instance, endpoint): prometheus_client's
        # labels() costs microseconds each time, on every request's path.
        key = (outcome.instance, outcome.backend, outcome.endpoint)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = self._labelled(*key)
        queue_wait, first_byte, duration, prompt_tokens, completion_tokens = children
        counted = (*key, outcome.status)
        requests = self._requests.get(counted)
        if requests is None:
            requests = self._requests[counted] = self.requests.labels(*key, str(outcome.status))
        requests.inc()
        queue_wait.observe(outcome.queue_wait_seconds)
        if outcome.streamed and outcome.ttfb_seconds is not None:
            first_byte.observe(outcome.ttfb_seconds)
        duration.observe(outcome.duration_seconds)
        if outcome.prompt_tokens:
            prompt_tokens.inc(outcome.prompt_tokens)
        if outcome.completion_tokens:
            completion_tokens.inc(outcome.completion_tokens)
        if self._per_key and outcome.key_name is not None:
            self._count_key(outcome)

    def _count_key(self, outcome: RequestOutcome) -> None:
        key, instance = outcome.key_name or "", outcome.instance
        self._keyed.add((key, instance))
        self.key_requests.labels(key, instance).inc()
        for kind, tokens in (("prompt", outcome.prompt_tokens), ("completion", outcome.completion_tokens)):
            if tokens:
                self.key_tokens.labels(key, instance, kind).inc(tokens)

    def _labelled(self, instance: str, backend: str, endpoint: str) -> _Children:
        return (
            self.queue_wait.labels(instance, backend),
            self.first_byte.labels(instance, backend, endpoint),
            self.duration.labels(instance, backend, endpoint),
            self.prompt_tokens.labels(instance, backend),
            self.completion_tokens.labels(instance, backend),
        )

    def _forget(self, instance: str) -> None:
        """A deleted instance's series go with it, so a scrape lists only instances that exist."""
        for key in [key for key in self._children if key[0] == instance]:
            del self._children[key]
            backend = key[1]
            for metric, labels in (
                (self.queue_wait, (instance, backend)),
                (self.first_byte, key),
                (self.duration, key),
                (self.prompt_tokens, (instance, backend)),
                (self.completion_tokens, (instance, backend)),
            ):
                with contextlib.suppress(KeyError):  # shared by the instance's endpoints: gone already
                    metric.remove(*labels)
        for counted in [counted for counted in self._requests if counted[0] == instance]:
            del self._requests[counted]
            self.requests.remove(*counted[:3], str(counted[3]))
        for metric, labels in [(m, labels) for m, labels in self._lifecycle if labels[0] == instance]:
            self._lifecycle.discard((metric, labels))
            metric.remove(*labels)
        if instance in self._swapped_in:
            self._swapped_in.discard(instance)
            self.swaps.remove(instance)
            self.swap_latency.remove(instance)
        for pair in [pair for pair in self._keyed if pair[1] == instance]:
            self._keyed.discard(pair)
            self.key_requests.remove(*pair)
            for kind in ("prompt", "completion"):
                with contextlib.suppress(KeyError):  # no tokens of that kind were counted
                    self.key_tokens.remove(*pair, kind)

    def _count(self, metric: Counter, instance: str, label: str) -> None:
        self._lifecycle.add((metric, (instance, label)))
        metric.labels(instance, label).inc()

    def transitioned(self, event: InstanceEvent) -> None:
        if event.kind is not EventKind.STATUS:
            return
        if event.status == DELETED:
            self._forget(event.instance)
            return
        if event.swap_seconds is not None:
            self._swapped_in.add(event.instance)
            self.swaps.labels(event.instance).inc()
            self.swap_latency.labels(event.instance).observe(event.swap_seconds)
        if event.cause is None:
            return
        if event.status == InstanceStatus.STARTING and event.cause in STARTS:
            self._count(self.starts, event.instance, event.cause)
        elif event.cause in STOP_REASONS and event.status in LEAVING and event.previous not in LEAVING:
            self._count(self.stops, event.instance, event.cause)
        elif event.cause in ("crash", "start_failed"):
            self._count(self.crashes, event.instance, event.cause)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    async def backend_exposition(self) -> bytes:
        """Every running backend's own metrics, fetched in parallel, each series labelled ``instance``.

        A backend that does not answer in time, or not in the text format, is left out and
        counted in ``llamactl_backend_scrape_failures_total``.
        """
        running = [
            (info.name, info.port, get_backend(info.options.backend_type.value).metrics_path)
            for info in self._manager.list_instances()
            if info.status is InstanceStatus.RUNNING and info.port is not None
        ]
        wanted = [(name, port, path) for name, port, path in running if path is not None]
        async with httpx.AsyncClient(timeout=BACKEND_SCRAPE_TIMEOUT) as client:
            texts = await asyncio.gather(
                *(
                    self._scrape(client, name, f"http://{self._host}:{port}{path}")
                    for name, port, path in wanted
                )
            )
        # A Python backend's process_* and python_* families would repeat llamactl's own names,
        # which one exposition cannot hold twice: those are left out (the instance's memory is here).
        own = {family.name for family in self.registry.collect()}
        families: dict[str, Metric] = {}
        for (name, _, _), text in zip(wanted, texts, strict=True):
            if text is None:
                continue
            try:
                parsed = list(text_string_to_metric_families(text))
            except ValueError:
                self.scrape_failures.labels(name).inc()
                continue
            for family in parsed:
                # ':' is for recording rules, and promtool refuses it in exported names: llama-server's
                # llamacpp:prompt_tokens_total and vLLM's vllm:... come as llamacpp_..., vllm_...
                family_name = family.name.replace(":", "_")
                if family_name in own:
                    continue
                merged = families.setdefault(
                    family_name, Metric(family_name, family.documentation, family.type, family.unit)
                )
                for sample in family.samples:
                    labels = dict(sample.labels)
                    if "instance" in labels:  # the backend's own, kept as Prometheus keeps it
                        labels["exported_instance"] = labels.pop("instance")
                    merged.add_sample(
                        sample.name.replace(":", "_"),
                        {"instance": name, **labels},
                        sample.value,
                        sample.timestamp,
                    )
        registry = CollectorRegistry()
        registry.register(_Families(list(families.values())))
        return generate_latest(registry)

    async def _scrape(self, client: httpx.AsyncClient, name: str, url: str) -> str | None:
        try:
            response = await client.get(url)
        except httpx.HTTPError:
            self.scrape_failures.labels(name).inc()
            return None
        if response.status_code != 200:
            self.scrape_failures.labels(name).inc()
            return None
        return response.text

    async def endpoint(self, scope: Scope, receive: Receive, send: Send, principal: Principal) -> None:
        body = self.exposition()
        if self._scrape_backends:
            body += await self.backend_exposition()
        await send_whole(send, body, CONTENT_TYPE.encode())


_Children = tuple[Any, Any, Any, Any, Any]
"""An instance's and endpoint's labelled histograms and counters (prometheus_client types them loosely)."""


class _Families(Collector):
    """Metric families built elsewhere (the backends'), for prometheus_client to render."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


class _InstanceCollector(Collector):
    """The instances as they are when scraped."""

    def __init__(self, manager: InstanceManager) -> None:
        self._manager = manager

    def collect(self) -> Iterator[Metric]:
        # One sample per instance, its state's: six per instance (one per state, most 0) were
        # most of a scrape's samples, and a scrape's time goes by samples.
        state = GaugeMetricFamily(
            "llamactl_instance_state", "1, for the state the instance is in.", labels=["instance", "state"]
        )
        counts = GaugeMetricFamily("llamactl_instances", "Instances in each state.", labels=["state"])
        families = {
            "in_flight": GaugeMetricFamily(
                "llamactl_requests_in_flight", "Requests being answered.", labels=["instance", "backend"]
            ),
            "queued": GaugeMetricFamily(
                "llamactl_requests_queued",
                "Requests waiting for the instance.",
                labels=["instance", "backend"],
            ),
            "restarts": GaugeMetricFamily(
                "llamactl_instance_restarts", "Crash restarts in a row.", labels=["instance", "backend"]
            ),
            "estimated": GaugeMetricFamily(
                "llamactl_instance_memory_estimated_bytes",
                "What the instance takes, estimated from its model's files.",
                labels=["instance", "backend"],
            ),
            "measured": GaugeMetricFamily(
                "llamactl_instance_memory_measured_bytes",
                "What the instance's processes hold (PSS, else RSS).",
                labels=["instance", "backend"],
            ),
            "context": GaugeMetricFamily(
                "llamactl_instance_context_tokens",
                "The context the running backend says it has.",
                labels=["instance", "backend"],
            ),
        }
        in_state = dict.fromkeys(InstanceStatus, 0)
        for info in self._manager.list_instances():
            labels = [info.name, info.options.backend_type.value]
            state.add_metric([info.name, info.status.value], 1.0)
            in_state[info.status] += 1
            families["in_flight"].add_metric(labels, info.in_flight)
            families["queued"].add_metric(labels, info.queued)
            families["restarts"].add_metric(labels, info.restarts)
            if info.memory.estimated_bytes is not None:
                families["estimated"].add_metric(labels, info.memory.estimated_bytes)
            if info.memory.measured_bytes is not None:
                families["measured"].add_metric(labels, info.memory.measured_bytes)
            if info.served_context is not None:
                families["context"].add_metric(labels, info.served_context)
        for status, count in in_state.items():
            counts.add_metric([status.value], count)
        yield state
        yield counts
        yield from families.values()
