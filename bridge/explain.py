"""`reshaper explain`: one frame's way through the rules, told by the engine that forwards.

The frame runs through rs_run_traced (rules/engine/rs_program.h), the engine's own
rule walk with its tracing on: how it parsed the frame, each rule in order and the
first of its tests that failed (with the value the engine read), every action with
the header fields it changed (checksums included), the verdict and the bytes that
leave. Nothing here decides anything: the verdict and the bytes are the engine's,
and its rule walk is held to what rs_run finds (rules/engine/fuzz_engine.c).

A frame of a capture is explained in the state the frames before it left, run as
`reshaper apply` runs them (same seed, their timestamps), so that a rate queue, a
loss pattern or a counter is where `apply` had it; its verdict and bytes are
`apply`'s for that frame (tests/test_explain.py holds them to the golden cases).
"""
from __future__ import annotations

import dataclasses

from scapy.layers.inet import IP
from scapy.layers.l2 import Ether
from scapy.packet import NoPayload, Packet

from reshaper._native import lib
from reshaper.bridge.apply import egress_frame, port_frame
from reshaper.rules.binding import DROP_REASONS, Engine, Trace, Verdict
from reshaper.rules.compiler import rule_ops
from reshaper.rules.fields import ETH_TYPES, IP_PROTOS, VLAN_TPIDS
from reshaper.rules.model import Config

# the rule language's names of the numbers (rules/fields.py), as a rule file writes them
PROTO_NAMES = {number: name for name, number in IP_PROTOS.items()}
ETH_TYPE_NAMES = {number: name for name, number in ETH_TYPES.items()}


@dataclasses.dataclass
class Explanation:
    verdict: Verdict | None      # None: the frame is not on the port (another VLAN)
    leaves: list[bytes]          # what leaves the other port (copies included), as it is sent
    lines: list[str]             # the account, in words


def explain(config: Config, frame: bytes, from_port: str = "a", *, l3: bool = False, seed: int = 0,
            before: list[tuple[int, bytes]] = (), now_ns: int = 0, what: str = "the frame") -> Explanation:
    """Explains frame arriving on from_port at now_ns, after the frames before (timestamp, frame) ran
    through a fresh engine seeded with seed, as `apply` runs a capture. l3: the frame as NFQUEUE hands
    it over (from the IP header on: nfqueue mode)."""
    engine = Engine(config.program, seed)
    zero = before[0][0] if before else now_ns
    engine.start(zero, zero)   # schedules count from the first frame, as in `apply`
    out_port = "b" if from_port == "a" else "a"
    in_vlan = None if l3 else config.ports[from_port].vlan
    out_vlan = None if l3 else config.ports[out_port].vlan
    for t, earlier in before:
        seen = port_frame(earlier, in_vlan)
        if seen is not None:
            engine.run(seen[0], from_port, t, l3)
    lines = [f"{what}: {len(frame)} bytes into port {from_port} ({describe_port(config, from_port, l3)})"]
    seen = port_frame(frame, in_vlan)
    if seen is None:
        lines.append(f"not on port {from_port}: in trunk form it takes only frames tagged with VLAN {in_vlan}; "
                     "the rules never see this one")
        return Explanation(None, [], lines)
    frame_seen, pcp = seen
    if in_vlan is not None:
        lines.append(f"its tag (VLAN {in_vlan}, PCP {pcp}) taken off: the rules see {len(frame_seen)} bytes")
    verdict, out, trace = engine.run_traced(frame_seen, from_port, now_ns, l3)
    lines += tell_parse(trace, l3)
    lines += tell_rules(config, trace)
    phase = engine.rule_phase(verdict.rule) if verdict.rule >= 0 and config.rules[verdict.rule].schedule else None
    lines += tell_actions(config, trace, frame_seen, l3, phase)
    leaves = [egress_frame(out, out_vlan, pcp)] * (1 + verdict.copies) if verdict.forward else []
    lines += tell_verdict(config, verdict, out_port, leaves, out_vlan)
    return Explanation(verdict, leaves, lines)


def ip_packet(frame: bytes) -> bytes | None:
    """The IP packet of an Ethernet frame as NFQUEUE hands it over: past the tags, without the
    Ethernet padding (the bridge's netfilter trims it); None when it carries no IP."""
    at = 12
    while int.from_bytes(frame[at:at + 2], "big") in VLAN_TPIDS:
        at += 4
    packet = frame[at + 2:]
    if frame[at:at + 2] == b"\x08\x00" and len(packet) >= 20:
        return packet[:max(20, int.from_bytes(packet[2:4], "big"))]
    if frame[at:at + 2] == b"\x86\xdd" and len(packet) >= 40:
        return packet[:40 + int.from_bytes(packet[4:6], "big")]
    return None


def describe_port(config: Config, port: str, l3: bool) -> str:
    p = config.ports[port]
    if l3:
        return f"{p.interface}, as NFQUEUE hands it over: from the IP header on"
    return f"{p.interface} VLAN {p.vlan}, trunk form" if p.vlan is not None else p.interface


def where(config: Config, node) -> str:
    if node is None:
        return "a row of its schedule file"   # rules/schedule_file.py's actions have no YAML node
    mark = node.start_mark
    return f"{config.path}:{mark.line + 1}:{mark.column + 1}"


def tell_parse(trace: Trace, l3: bool) -> list[str]:
    e = next((e for e in trace if e.kind == lib.RS_T_PARSE), None)
    if e is None:
        return ["not run: the program does not forward frames from this port (forward:)"]
    tags, ipv, proto = e.b & 0xFF, (e.b >> 8) & 0xFF, e.b >> 16
    l3_at, l4_at = e.c & 0xFFFF, e.c >> 16
    parts = [] if l3 else [f"ethertype {field_value('eth_type', e.a)}"
                           + (f" after {tags} VLAN tag{'s' if tags != 1 else ''}" if tags else ", no VLAN tag")]
    if ipv:
        parts.append(f"IPv{ipv} header at {l3_at}, protocol {field_value('ip_proto', proto)}")
        if e.d:
            parts.append(f"{PROTO_NAMES.get(proto, 'L4').upper()} header at {l4_at} ({e.d} bytes)")
        elif not l4_at:
            parts.append("no upper-layer header (a fragment after the first, or past 8 extension headers)")
    lines = ["parsed: " + ("; ".join(parts) or "no IP header it accepts")]
    if e.rule:
        lines.append("malformed: a runt or a bogus IP header; the rules do not see it (malformed: in the file)")
    return lines


def tell_rules(config: Config, trace: Trace) -> list[str]:
    lines = []
    for e in (e for e in trace if e.kind == lib.RS_T_RULE):
        rule = config.rules[e.rule]
        match_ops, _ = rule_ops(rule)
        head = f"  rule {e.rule + 1} {rule.name} ({where(config, rule.node)}): "
        if e.a:
            lines.append(head + "matched" + (f" ({', '.join(m.field for m in rule.matches)})"
                                             if rule.matches else " (no tests: every frame)"))
        elif e.b == lib.RS_T_FROM:
            lines.append(head + f"no: it takes frames from port {rule.from_port} only")
        else:
            m, op = match_ops[e.b]
            # a field test (RS_M_RANGE) says what it read, or that the frame has no such field
            read = f"; the frame's {m.field} is {field_value(m.field, e.d)}" if e.c else (
                f"; the frame has no {m.field}" if op[0] == lib.RS_M_RANGE else "")
            lines.append(head + f"no: {m.field} ({where(config, m.node)}) did not match{read}")
    return (["rules, in order:"] + lines) if lines else []


def field_value(field: str, value: int) -> str:
    if field == "ip_proto" and value in PROTO_NAMES:
        return f"{value} ({PROTO_NAMES[value]})"
    if field == "eth_type":
        return f"0x{value:04x}" + (f" ({ETH_TYPE_NAMES[value]})" if value in ETH_TYPE_NAMES else "")
    return str(value)


def tell_actions(config: Config, trace: Trace, frame: bytes, l3: bool, phase: int | None = None) -> list[str]:
    """The actions that ran, each with what it did; phase: the one of the rule's schedule they were."""
    steps = [e for e in trace if e.kind == lib.RS_T_ACTION]
    if not steps:
        return []
    rule = config.rules[steps[0].rule]
    _, ops = rule_ops(rule, phase)
    at = "" if phase is None else f", in phase {phase + 1} of {len(rule.schedule.phases)} of its schedule"
    lines, before = [f"actions of {rule.name}{at}:"], frame
    for e in steps:
        action = ops[e.a][0]
        after = e.after if e.after is not None else before
        change = changes(before, after, l3)
        said = f"  {action.kind} ({where(config, action.node)})"
        if e.d != lib.RS_R_NONE:
            said += f": the frame is dropped ({DROP_REASONS.get(e.d, e.d)})"
        elif change:
            said += ": " + ", ".join(change)
        else:
            said += ": " + NO_CHANGE.get(action.kind, "the frame's bytes unchanged")
        lines.append(said)
        before = after
    return lines


NO_CHANGE = {"delay": "no bytes change; its departure is later (the verdict)",
             "rate": "no bytes change; its departure waits its turn in the rate queue (the verdict)",
             "duplicate": "no bytes change; copies, if any, in the verdict",
             "reorder": "no bytes change; whether it goes ahead, in the verdict",
             "loss": "kept", "corrupt": "this time, no bit flipped"}


def changes(before: bytes, after: bytes, l3: bool) -> list[str]:
    """The header fields that differ between two frames, layer by layer, as scapy names them."""
    if before == after:
        return []
    kind = IP if l3 else Ether
    old, new = kind(before), kind(after)
    out = []
    while not isinstance(old, NoPayload) and not isinstance(new, NoPayload):
        if type(old) is not type(new):
            out.append(f"layers {layer_names(old)} -> {layer_names(new)}")
            break
        for f in old.fields_desc:
            a, b = old.getfieldval(f.name), new.getfieldval(f.name)
            if a != b and not isinstance(a, Packet):
                out.append(f"{old.name}.{f.name} {f.i2repr(old, a)} -> {f.i2repr(new, b)}")
        old, new = old.payload, new.payload
    if len(before) != len(after):
        out.append(f"{len(before)} -> {len(after)} bytes")
    return out or [f"bytes past the headers changed ({sum(x != y for x, y in zip(before, after))} differ)"]


def layer_names(p: Packet) -> str:
    names = []
    while not isinstance(p, NoPayload):
        names.append(p.name)
        p = p.payload
    return "/".join(names)


def tell_verdict(config: Config, v: Verdict, out_port: str, leaves: list[bytes], out_vlan: int | None) -> list[str]:
    rule = f"rule {config.rules[v.rule].name}" if v.rule >= 0 else "no rule"
    if not v.forward:
        return [f"verdict: dropped ({v.reason}; {rule})"]
    when = f"{v.delay_ns / 1e6:.3f} ms after it arrived" if v.delay_ns else "at once"
    lines = [f"verdict: forward ({rule}), {1 + v.copies} frame{'s' if v.copies else ''}, {when}"]
    if v.rule >= 0 and config.rules[v.rule].action("python"):
        lines.append("  then its Python hook decides (explain does not run hooks)")
    tag = f", tagged VLAN {out_vlan}" if out_vlan is not None else ""
    lines.append(f"leaves port {out_port}{tag}, {len(leaves[0])} bytes:")
    data = leaves[0]
    lines += [f"  {i:04x}  " + " ".join(f"{b:02x}" for b in data[i:i + 16]) for i in range(0, len(data), 16)]
    return lines
