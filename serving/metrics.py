"""Where the serving metrics go: each server exports them its own way, through one interface.

The telemetry sink (serving/telemetry.py) calls `add` (a counter), `set` (a gauge) and `observe`
(a duration in milliseconds) and knows nothing of the backend:

- `DeltaMetrics`: increments held until `drain()` hands them over as Seldon's custom-metric dicts
  (the Seldon v1 wrapper returns them with a response; its executor publishes them);
- `PrometheusMetrics`: prometheus_client objects owned by one runtime instance. MLServer's
  `/metrics` shows them: in one process through the collector the runtime registers while it is
  loaded, with parallel workers through the files each worker's values are written to
  (MLServer switches prometheus_client to its multiprocess mode before a worker loads a model).
  Nothing lives at module level, so two runtimes, or two workers, never share a metric.
"""

from __future__ import annotations

import threading
from typing import Dict, List, Tuple


class DeltaMetrics:
    """Increments not yet handed to the metrics backend (Seldon takes deltas per response).

    Timings wait here one per request until a scrape drains them; with nobody scraping they grew
    without bound (some 200 bytes a request: the server's memory rose for hours under load). At
    most `max_timers` wait; older ones are dropped and counted (cd4ml_timings_dropped_total)."""

    def __init__(self, max_timers: int = 20_000):
        self.max_timers = max_timers
        self._lock = threading.Lock()
        self.counts: Dict[Tuple[str, Tuple], float] = {}
        self.gauges: Dict[Tuple[str, Tuple], float] = {}
        self.timers: List[Tuple[str, float, Tuple]] = []

    def add(self, key: str, value: float = 1.0, **tags):
        k = (key, tuple(sorted(tags.items())))
        with self._lock:
            self.counts[k] = self.counts.get(k, 0.0) + value

    def set(self, key: str, value: float, **tags):
        with self._lock:
            self.gauges[(key, tuple(sorted(tags.items())))] = value

    def observe(self, key: str, milliseconds: float, **tags):
        with self._lock:
            self.timers.append((key, milliseconds, tuple(sorted(tags.items()))))
            excess = len(self.timers) > self.max_timers
        if excess:
            with self._lock:
                dropped = len(self.timers) - self.max_timers // 2
                del self.timers[:dropped]  # amortised: one cut per max_timers / 2 observations
            self.add("cd4ml_timings_dropped_total", dropped)

    def drain(self) -> List[Dict]:
        with self._lock:
            timers, counts, gauges = self.timers, self.counts, self.gauges
            self.counts, self.gauges, self.timers = {}, {}, []
        out = [{"type": "TIMER", "key": k, "value": v, "tags": dict(t)} for k, v, t in timers]
        out += [{"type": "COUNTER", "key": k, "value": v, "tags": dict(t)} for (k, t), v in counts.items()]
        out += [{"type": "GAUGE", "key": k, "value": v, "tags": dict(t)} for (k, t), v in gauges.items()]
        return out


class PrometheusMetrics:
    """The same calls as prometheus_client metrics of this instance's own (histograms in seconds)."""

    def __init__(self):
        import prometheus_client as prom

        self._prom = prom
        self._metrics: Dict[str, object] = {}
        self._children: Dict[Tuple, object] = {}
        self._lock = threading.Lock()

    def _metric(self, cls, name: str, tags: Dict, **options):
        key = (name, *tags.items())  # the labelled child, found again without prometheus_client's lookup
        child = self._children.get(key)
        if child is None:
            with self._lock:
                metric = self._metrics.get(name)
                if metric is None:
                    # Counters are named *_total here; prometheus_client adds the suffix itself.
                    base = name[:-len("_total")] if name.endswith("_total") else name
                    metric = self._metrics[name] = cls(base, name, sorted(tags), registry=None, **options)
                child = self._children[key] = metric.labels(**{k: str(v) for k, v in tags.items()}) if tags else metric
        return child

    def add(self, key: str, value: float = 1.0, **tags):
        self._metric(self._prom.Counter, key, tags).inc(value)

    def set(self, key: str, value: float, **tags):
        # With parallel workers each worker writes its own value; the newest one is the reading.
        self._metric(self._prom.Gauge, key, tags, multiprocess_mode="livemostrecent").set(value)

    def observe(self, key: str, milliseconds: float, **tags):
        self._metric(self._prom.Histogram, key, tags).observe(milliseconds / 1000.0)

    def collect(self):
        """The prometheus_client collector protocol: every metric of this instance."""
        for metric in list(self._metrics.values()):
            yield from metric.collect()

    def drain(self) -> List[Dict]:
        return []  # scraped, not handed over
