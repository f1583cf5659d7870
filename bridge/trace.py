"""`reshaper trace`: the frames the running appliance sees, one line each, with the rule and the verdict.

Each line is a frame as it arrived, told as tcpdump tells it (first
RS_TRACE_HEAD bytes, rules/engine/rs_program.h), then the rule it met and
what the rules made of it. The records come from the data path itself:
  ring and XDP mode  a buffer the C loop fills while tracing is on
                     (ring/trace_buffer.c), emptied here by the control thread;
  nfqueue mode       its packet callback (bridge/modes/nfqueue.py);
  kernel mode        the module's tracepoint reshaper:reshaper_frame, read by the
                     client itself from tracefs (bridge/kernel_trace.py), so
                     perf and bpftrace see the same events.
Off, tracing costs ring mode one test per frame. A frame that finds the buffer
full is not shown, only counted: the data path never waits for a reader, so
under load the lines are a sample and the count of those not shown says how
much of one.

The control socket (bridge/control.py) carries a trace as one request line,
then one JSON object per line: first {"mode", ...} or {"error"}, then records
and {"not_shown": N} whenever that count grows.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import select
import socket
import threading
import time

from reshaper._native import lib
from reshaper.rules.binding import DROP_REASONS

POLL_S = 0.02          # how often the control thread empties the buffer while a client traces
PORT_NAMES = "ab"      # a record's port: 0 a, 1 b


class TraceError(Exception):
    """A trace that cannot start or go on; the text says why."""


@dataclasses.dataclass(frozen=True)
class TraceRecord:
    """One traced frame, as every carrier gives it."""
    time_ns: int        # receive time, CLOCK_MONOTONIC
    port: int           # ingress: 0 a, 1 b
    length: int         # as it arrived
    rule: int           # the rule it met, -1: none
    verdict: int        # RS_V_*
    reason: int         # RS_R_*
    copies: int
    delay_ns: int
    head: bytes         # its first bytes as it arrived


def record_json(r: TraceRecord, rule_names: list[str], l3: bool, wall_minus_mono_ns: int) -> dict:
    """A record as the socket carries it and `trace --json` prints it; rule_names are the program's that ran it."""
    return {"time": round((r.time_ns + wall_minus_mono_ns) / 1e9, 6), "port": PORT_NAMES[r.port],
            "len": r.length, "rule": rule_names[r.rule] if 0 <= r.rule < len(rule_names) else None,
            "verdict": "forward" if r.verdict == lib.RS_V_FORWARD else "drop",
            "reason": DROP_REASONS.get(r.reason) if r.verdict != lib.RS_V_FORWARD else None,
            "copies": r.copies, "delay_ns": r.delay_ns, "l3": l3, "head": r.head.hex()}


def rule_index(rule: str | None, names: list[str], path: str) -> int:
    """rule's index among the rule names of file path; -1 for None (every frame)."""
    if rule is None:
        return -1
    if rule not in names:
        raise TraceError(f"no rule named {rule!r} in {path}; its rules: {', '.join(names) or 'none'}")
    return names.index(rule)


def wall_minus_mono() -> int:
    return time.time_ns() - time.monotonic_ns()


# ---- the appliance's side: a trace session per client -------------------------------------------
class TraceSession:
    """One client's trace on the running appliance. The appliance (bridge/appliance.py) calls
    take() from the control thread and, on a reload, before a frame meets the new program
    (reloaded()), so that every record is named after the rules that ran it."""

    def __init__(self, appliance, rule: str | None):
        self.appliance = appliance
        self.rule = rule
        self.lock = threading.Lock()
        self.pending: list[dict] = []
        self.ended: str | None = None   # why the session ended (a reload removed its rule)
        self.offset = wall_minus_mono()

    def rule_index(self, config) -> int:
        return rule_index(self.rule, [r.name for r in config.rules], config.path)

    def take(self, config) -> None:
        """Moves what the data path recorded under config's program into pending."""
        names = [r.name for r in config.rules]
        with self.lock:
            self.pending.extend(record_json(r, names, self.appliance.trace_l3, self.offset)
                                for r in self.appliance.trace_take())

    def reloaded(self, old_config, new_config) -> None:
        """Around a reload: records so far are the old program's; the filter follows the rule's new index."""
        self.take(old_config)
        try:
            self.appliance.trace_start(self.rule_index(new_config))
        except TraceError as exc:
            self.appliance.trace_stop()
            self.ended = f"the reload ended the trace: {exc}"

    def out(self) -> tuple[list[dict], int]:
        with self.lock:
            pending, self.pending = self.pending, []
        return pending, self.appliance.trace_lost()


def serve(conn: socket.socket, appliance, request: dict, stopping: threading.Event) -> None:
    """Streams a trace to one client until it goes, the appliance stops, or a reload ends it."""
    try:
        session = appliance.trace_open(request.get("rule"))
    except TraceError as exc:
        conn.sendall(json.dumps({"error": str(exc)}).encode() + b"\n")
        return
    if session is None:   # kernel mode: the client reads the module's tracepoint itself
        conn.sendall(json.dumps(appliance.trace_kernel_info()).encode() + b"\n")
        return
    try:
        conn.sendall(json.dumps({"mode": appliance.mode, "rule": session.rule}).encode() + b"\n")
        lost_before = appliance.trace_lost()
        shown = -1
        while not stopping.is_set():
            with appliance.swap_lock:
                if appliance.tracer is not session:
                    return   # the appliance is stopping (bridge/appliance.py, run)
                session.take(appliance.config)
            records, lost = session.out()
            lines = [json.dumps(r) for r in records]
            if lost - lost_before != shown:
                shown = lost - lost_before
                lines.append(json.dumps({"not_shown": shown}))
            if session.ended:
                lines.append(json.dumps({"error": session.ended}))
            if lines:
                conn.sendall("\n".join(lines).encode() + b"\n")
            if session.ended:
                return
            # the client sends nothing more: readable means it closed
            if select.select([conn], [], [], POLL_S)[0] and not conn.recv(1):
                return
    except OSError:
        return   # the client went
    finally:
        appliance.trace_close(session)


# ---- the client: tcpdump-like lines --------------------------------------------------------------
def summary(head: bytes, length: int, l3: bool) -> str:
    """The frame's headers in tcpdump's words (as far as its first bytes hold them)."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether

    if l3:
        pkt = IPv6(head) if head[:1] and head[0] >> 4 == 6 else IP(head)
        prefix = ""
    else:
        pkt = Ether(head)
        tags = []
        layer = pkt.payload
        while isinstance(layer, (Dot1Q, Dot1AD)):
            tags.append(f"vlan {layer.vlan}")
            layer = layer.payload
        prefix = "".join(f"{t}, " for t in tags)
        pkt = layer
    if isinstance(pkt, IP):
        family, src, dst, payload_len, upper = "IP", pkt.src, pkt.dst, pkt.len - pkt.ihl * 4, pkt.payload
    elif isinstance(pkt, IPv6):
        family, src, dst, payload_len, upper = "IP6", pkt.src, pkt.dst, pkt.plen, pkt.payload
        while upper.name.startswith("IPv6 Extension"):   # scapy's names of the extension headers
            upper = upper.payload
    elif isinstance(pkt, ARP):
        what = (f"Request who-has {pkt.pdst} tell {pkt.psrc}" if pkt.op == 1 else
                f"Reply {pkt.psrc} is-at {pkt.hwsrc}" if pkt.op == 2 else f"op {pkt.op}")
        return f"{prefix}ARP, {what}, length {length}"
    else:
        ethertype = getattr(pkt.underlayer, "type", None) if pkt.underlayer is not None else None
        return f"{prefix}ethertype 0x{ethertype or 0:04x}, length {length}"
    if isinstance(upper, TCP):
        flags = "".join(c for bit, c in ((0x01, "F"), (0x02, "S"), (0x04, "R"), (0x08, "P"), (0x10, "."),
                                         (0x20, "U"), (0x40, "E"), (0x80, "W")) if int(upper.flags) & bit)
        return (f"{prefix}{family} {src}.{upper.sport} > {dst}.{upper.dport}: Flags [{flags}], "
                f"length {max(0, payload_len - upper.dataofs * 4)}")
    if isinstance(upper, UDP):
        return f"{prefix}{family} {src}.{upper.sport} > {dst}.{upper.dport}: UDP, length {max(0, upper.len - 8)}"
    if isinstance(upper, ICMP):
        kind = {8: "echo request", 0: "echo reply"}.get(upper.type)
        what = f"{kind}, id {upper.id}, seq {upper.seq}" if kind else f"type {upper.type}, code {upper.code}"
        return f"{prefix}{family} {src} > {dst}: ICMP {what}, length {payload_len}"
    proto = pkt.proto if family == "IP" else pkt.nh
    return f"{prefix}{family} {src} > {dst}: ip-proto-{proto}, length {payload_len}"


def verdict_words(rec: dict) -> str:
    if rec["verdict"] == "drop":
        return f"drop ({rec['reason']})"
    words = "forward"
    if rec["copies"]:
        words += f" +{rec['copies']} {'copy' if rec['copies'] == 1 else 'copies'}"
    if rec["delay_ns"]:
        words += f", delay {rec['delay_ns'] / 1e6:.3f} ms"
    return words


def line(rec: dict) -> str:
    clock = datetime.datetime.fromtimestamp(rec["time"]).strftime("%H:%M:%S.%f")
    return (f"{clock} {rec['port']} {summary(bytes.fromhex(rec['head']), rec['len'], rec['l3'])} | "
            f"{rec['rule'] or 'no rule'}: {verdict_words(rec)}")


def request(path: str, rule: str | None) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        s.sendall(b"trace " + json.dumps({"rule": rule}).encode() + b"\n")
    except OSError:
        s.close()
        raise
    return s


def kernel_records(info: dict, rule: str | None, count: int | None, not_shown: list[int]):
    """Kernel mode: the module's tracepoint, read here (bridge/kernel_trace.py); not_shown[0] grows
    by the events the kernel overwrote before they were read."""
    from reshaper.bridge.kernel_trace import kernel_trace

    names = info["rules"]
    index = rule_index(rule, names, info["config"])
    offset = wall_minus_mono()
    # kernel_trace's rule: None for every frame (its -1 is the frames no rule matched)
    for r in kernel_trace(info["netns"], None if rule is None else index, count, lost=not_shown):
        yield record_json(TraceRecord(r["time_ns"], PORT_NAMES.index(r["port"]), r["len"], r["rule"],
                                      r["verdict"], r["reason"], r["copies"], r["delay_ns"], r["head"]),
                          names, False, offset)


def records(path: str, rule: str | None, count: int | None, not_shown: list[int]):
    """The instance's trace records, count of them (None: until interrupted); not_shown[0] follows
    the frames the data path could not record."""
    with request(path, rule) as s:
        f = s.makefile("rb")
        first = f.readline()
        if not first:
            raise TraceError(f"the instance on {path} closed the connection")
        head = json.loads(first)
        if "error" in head:
            raise TraceError(head["error"])
        if head.get("tracefs"):
            yield from kernel_records(head, rule, count, not_shown)
            return
        n = 0
        while count is None or n < count:
            raw = f.readline()
            if not raw:
                raise TraceError("the instance stopped")
            msg = json.loads(raw)
            if "error" in msg:
                raise TraceError(msg["error"])
            if "not_shown" in msg:
                not_shown[0] = msg["not_shown"]
                continue
            n += 1
            yield msg
