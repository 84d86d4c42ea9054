"""Prometheus metrics in the text exposition format (version 0.0.4), kept in memory, thread-safe.

What ``GET /metrics`` reports:

- ``fewshot_requests_total{route, method, status}``: answered requests, by route template (``/v1/models/{name}
  /predict``, never the concrete name, so the label set stays small) and status code.
- ``fewshot_request_duration_seconds{route}``: a latency histogram per route.
- ``fewshot_batch_size{encoder}``: items per coalesced model call (a histogram).
- ``fewshot_queue_depth{encoder}``: items waiting for a model call now.
- ``fewshot_inflight_requests``: requests doing model or index work now (the bound of the 429 answer).
- ``fewshot_rejected_total{reason}``: requests refused before any work (``overload``, ``body_too_large``,
  ``body_timeout``, ``untrusted_host``).
- ``fewshot_merged_writes``: index writes that carried more than one request's items, over the indexes the
  server holds now (a gauge: an index let go or deleted takes its count with it).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Sequence

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    esc = [str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for v in values]
    return "{" + ",".join(f'{n}="{v}"' for n, v in zip(names, esc)) + "}"


class Counter:
    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        self.name, self.help, self.labels = name, help, tuple(labels)
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + amount

    def value(self, *labels: str) -> float:
        return self._values.get(labels, 0.0)

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        with self._lock:
            items = sorted(self._values.items())
        out += [f"{self.name}{_labels(self.labels, k)} {v:g}" for k, v in items]
        return out


class Gauge:
    """A gauge read from callbacks when scraped: ``source()`` returns {label values: value}."""

    def __init__(
        self, name: str, help: str, labels: Sequence[str], source: Callable[[], dict[tuple[str, ...], float]]
    ) -> None:
        self.name, self.help, self.labels, self.source = name, help, tuple(labels), source

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} gauge"]
        out += [f"{self.name}{_labels(self.labels, k)} {v:g}" for k, v in sorted(self.source().items())]
        return out


class Histogram:
    def __init__(self, name: str, help: str, labels: Sequence[str], buckets: Sequence[float]) -> None:
        self.name, self.help, self.labels, self.buckets = name, help, tuple(labels), tuple(buckets)
        self._data: dict[tuple[str, ...], list[float]] = {}  # per label set: bucket counts, then count and sum
        self._lock = threading.Lock()

    def observe(self, value: float, *labels: str) -> None:
        i = bisect.bisect_left(self.buckets, value)
        with self._lock:
            d = self._data.get(labels)
            if d is None:
                d = self._data[labels] = [0.0] * (len(self.buckets) + 2)
            if i < len(self.buckets):
                d[i] += 1
            d[-2] += 1
            d[-1] += value

    def count(self, *labels: str) -> int:
        d = self._data.get(labels)
        return 0 if d is None else int(d[-2])

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._data.items())
        for key, d in items:
            running = 0.0
            for b, c in zip(self.buckets, d):
                running += c
                out.append(f"{self.name}_bucket{_labels((*self.labels, 'le'), (*key, f'{b:g}'))} {running:g}")
            out.append(f"{self.name}_bucket{_labels((*self.labels, 'le'), (*key, '+Inf'))} {d[-2]:g}")
            out.append(f"{self.name}_count{_labels(self.labels, key)} {d[-2]:g}")
            out.append(f"{self.name}_sum{_labels(self.labels, key)} {d[-1]:.6g}")
        return out


class Metrics:
    """The service's metrics; ``queue_source`` and ``inflight_source`` are read at scrape time."""

    def __init__(
        self,
        queue_source: Callable[[], dict[tuple[str, ...], float]] = dict,
        inflight_source: Callable[[], float] = lambda: 0.0,
        group_commit_source: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.requests = Counter(
            "fewshot_requests_total", "Requests answered, by route, method and status.", ("route", "method", "status")
        )
        self.latency = Histogram(
            "fewshot_request_duration_seconds", "Time from request to response, by route.", ("route",), LATENCY_BUCKETS
        )
        self.batch = Histogram("fewshot_batch_size", "Items per coalesced model call.", ("encoder",), BATCH_BUCKETS)
        self.rejected = Counter("fewshot_rejected_total", "Requests refused before any work, by reason.", ("reason",))
        self._gauges = [
            Gauge("fewshot_queue_depth", "Items waiting for a model call, by encoder.", ("encoder",), queue_source),
            Gauge(
                "fewshot_inflight_requests",
                "Requests doing model or index work (running or waiting).",
                (),
                lambda: {(): float(inflight_source())},
            ),
            Gauge(
                "fewshot_merged_writes",
                "Index writes that merged several requests into one journal write, over the indexes held now.",
                (),
                lambda: {(): float(group_commit_source())},
            ),
        ]

    def render(self) -> str:
        lines: list[str] = []
        for m in (self.requests, self.latency, self.batch, self.rejected, *self._gauges):
            lines += m.render()
        return "\n".join(lines) + "\n"
