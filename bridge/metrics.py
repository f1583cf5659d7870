"""`reshaper run --metrics [ADDR:]PORT`: the counters of `reshaper stats` in Prometheus' text
format, served over HTTP by prometheus_client (the ecosystem's library) at /metrics.

Every scrape takes one snapshot (Appliance.snapshot, the same as `reshaper stats --json`),
so the numbers of one scrape belong together, in every mode. Names follow Prometheus'
rules: a `reshaper_` prefix, counters end in `_total`, units in the name; every sample
carries the `mode` label, a rule's the `rule` label, a port's `port`, `interface` and `vlan`
(empty: untagged).
A successful reload starts the engine's counters from zero, as a restart does
(Prometheus' rate() takes that for a counter reset). docs/metrics.md lists them.

The socket is bound before the appliance drops its capabilities (a port below 1024
needs CAP_NET_BIND_SERVICE) and served from a thread started after (capabilities are
per thread: bridge/appliance.py).
"""
from __future__ import annotations

import ipaddress
import socket
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

from reshaper.rules.binding import RULE_COUNTERS

LOOPBACK = "127.0.0.1"  # where --metrics PORT listens: nothing is exposed unless an address is given

# what each engine counter (struct rs_counters, rs_program.h) and rule counter (struct rs_rule_state)
# becomes: metric name, help
ENGINE = {
    "frames_in": ("reshaper_engine_frames_total", "Frames the engine ran on."),
    "forwarded": ("reshaper_engine_forwarded_frames_total", "Frames that left, copies included."),
    "dropped": ("reshaper_engine_dropped_frames_total", "Frames dropped, for whatever reason."),
    "malformed": ("reshaper_engine_malformed_frames_total", "Runts and bogus IP headers (passed or dropped)."),
    "unmatched": ("reshaper_engine_unmatched_frames_total", "Frames no rule matched."),
    "direction": ("reshaper_engine_direction_dropped_frames_total",
                  "Frames dropped as they came from a port the rules do not forward from."),
}
RULE = {
    "matched": ("reshaper_rule_matched_frames_total", "Frames the rule matched."),
    "bytes": ("reshaper_rule_matched_bytes_total", "Bytes of the frames the rule matched."),
    "dropped": ("reshaper_rule_dropped_frames_total", "Frames the rule's drop action or a TTL of 0 dropped."),
    "lost": ("reshaper_rule_lost_frames_total", "Frames the rule's loss action dropped."),
    "queue_drops": ("reshaper_rule_queue_dropped_frames_total", "Frames the rule's full rate queue dropped."),
    "duplicated": ("reshaper_rule_duplicate_frames_total", "Copies the rule's duplicate action made."),
    "corrupted": ("reshaper_rule_corrupted_frames_total", "Frames the rule's corrupt action changed."),
    "reordered": ("reshaper_rule_reordered_frames_total", "Frames the rule's reorder action sent ahead."),
    "delayed": ("reshaper_rule_delayed_frames_total", "Frames the rule's delay action delayed."),
}
RULE_GAUGES = {
    "queue_depth": ("reshaper_rule_rate_queue_frames", "Frames in the rule's rate queue now."),
    "held": ("reshaper_rule_held_frames", "Frames of the rule waiting for their departure now (ring mode)."),
    "phase": ("reshaper_rule_phase", "The phase of the rule's schedule now, from 0 (rules with a schedule)."),
}
# a port's fields that are no counters
PORT_FIELDS = ("interface", "vlan", "bridge_port")


class ListenError(ValueError):
    """--metrics is not [ADDR:]PORT."""


def parse_listen(text: str) -> tuple[str, int]:
    """'9464' -> (127.0.0.1, 9464); '0.0.0.0:9464', '[::1]:9464' -> that address and port."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        if sep:
            ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        number = -1
    if not 0 < number < 65536 or (sep and not host):
        raise ListenError(f"--metrics expected [ADDR:]PORT (e.g. 9464, 0.0.0.0:9464, [::1]:9464), got {text!r}")
    return (host if sep else LOOPBACK), number


class SnapshotCollector:
    """A prometheus_client collector over snapshot() (Appliance.snapshot)."""

    def __init__(self, snapshot):
        self._snapshot = snapshot

    def collect(self):
        stats = self._snapshot()
        mode = stats["mode"]
        yield InfoMetricFamily("reshaper", "The running instance.",
                               value={"mode": mode, "config": stats["config"]})
        yield counter("reshaper_reloads_total", "Reloads that installed new rules.", mode, stats["reloads"])
        yield counter("reshaper_reloads_refused_total", "Reloads refused (the old rules kept running).", mode,
                      stats["reloads_refused"])
        error = InfoMetricFamily("reshaper_last_reload_error", "Why the last reload was refused (none: no sample).",
                                 labels=["mode"])
        if stats.get("last_reload_error"):
            error.add_metric([mode], {"error": stats["last_reload_error"]})
        yield error
        for key, value in stats["engine"].items():
            name, doc = ENGINE.get(key, (f"reshaper_engine_{key}_total", f"The engine's {key} counter."))
            yield counter(name, doc, mode, value)
        yield from self.rules(stats, mode)
        yield from self.ports(stats, mode)
        yield from self.queues(stats, mode)

    @staticmethod
    def rules(stats: dict, mode: str):
        families = {key: CounterMetricFamily(*RULE.get(key, (f"reshaper_rule_{key}_total", key)),
                                             labels=["mode", "rule"]) for key in RULE_COUNTERS}
        gauges = {key: GaugeMetricFamily(*doc, labels=["mode", "rule"]) for key, doc in RULE_GAUGES.items()}
        for rule in stats["rules"]:
            for key, value in rule.items():
                family = families.get(key) or gauges.get(key)
                if family is not None:
                    family.add_metric([mode, rule["name"]], value)
        yield from families.values()
        yield from (g for key, g in gauges.items() if any(key in rule for rule in stats["rules"]))

    @staticmethod
    def ports(stats: dict, mode: str):
        families: dict[str, CounterMetricFamily] = {}
        for port, counters in sorted(stats["ports"].items()):
            where = [mode, port, counters["interface"], str(counters.get("vlan") or "")]
            for key, value in counters.items():
                if key in PORT_FIELDS or not isinstance(value, int):
                    continue
                family = families.setdefault(key, CounterMetricFamily(
                    f"reshaper_port_{key}_total", f"The port's {key} counter ({mode} mode: docs/modes.md).",
                    labels=["mode", "port", "interface", "vlan"]))
                family.add_metric(where, value)
        yield from families.values()

    @staticmethod
    def queues(stats: dict, mode: str):
        """The delay queue and ring mode's pool of buffers, where the mode has them."""
        if "queued" in stats:
            yield gauge("reshaper_queued_frames", "Frames waiting for their departure now.", mode, stats["queued"])
        if "pool_frames" in stats:
            yield gauge("reshaper_pool_frames", "Buffers in ring mode's delay pool.", mode, stats["pool_frames"])
        if "pool_full" in stats:
            yield counter("reshaper_pool_full_frames_total", "Delayed frames dropped: no buffer left in the pool.",
                          mode, stats["pool_full"])
        if "queue_drops" in stats:
            yield counter("reshaper_queue_dropped_frames_total", "Frames a full delay queue refused.", mode,
                          stats["queue_drops"])
        if "not_ours" in stats:
            yield counter("reshaper_not_ours_frames_total", "Frames on a port's interface that belong to no port.",
                          mode, stats["not_ours"])


def counter(name: str, doc: str, mode: str, value) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=["mode"])
    family.add_metric([mode], value)
    return family


def gauge(name: str, doc: str, mode: str, value) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["mode"])
    family.add_metric([mode], value)
    return family


def url_host(host: str, port: int) -> str:
    """host:port as a URL writes it ([::1]:9464)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Quiet(WSGIRequestHandler):
    def log_message(self, format, *args):   # noqa: A002 - http.server's signature
        pass   # a scrape every few seconds is no news for the journal


class MetricsServer:
    """Binds at once (with the privileges the caller still has); serves from start() on."""

    def __init__(self, address: tuple[str, int], snapshot):
        registry = CollectorRegistry()
        registry.register(SnapshotCollector(snapshot))
        registry.register(ProcessCollector(registry=None))
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        server_class = type("MetricsWSGIServer", (WSGIServer,), {"address_family": family})
        self._server = server_class(address, _Quiet)
        self._server.set_app(make_wsgi_app(registry))
        self.url = f"http://{url_host(*address)}/metrics"
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
