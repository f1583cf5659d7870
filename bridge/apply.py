"""Offline `reshaper apply`: a capture through the engine, with simulated time.

Every frame of the input is taken as arriving on one port at its capture
timestamp; what would leave the other port is written with its departure
timestamp, in departure order. The same C engine as the live modes decides
everything, so a seed reproduces an experiment's impairment pattern. The loop
over the frames runs in C (bridge/apply_loop.c) unless a rule calls a Python
hook (_python_loop).
"""
from __future__ import annotations

import dataclasses
import heapq
import struct
from collections import Counter

from reshaper.bridge.captures import CaptureOutput, CaptureReader
from reshaper.rules.binding import Engine, RULE_COUNTERS
from reshaper.rules.fields import TPID_8021Q
from reshaper.rules.model import Config


def port_frame(frame: bytes, vlan: int | None) -> tuple[bytes, int] | None:
    """The frame as the pipeline sees it on a port, and the PCP of the tag taken off.

    A port in trunk form owns only frames tagged with its VLAN (the tag is
    removed); a VLAN interface or plain port sees frames as they are.
    """
    if vlan is None:
        return frame, 0
    if len(frame) < 18 or int.from_bytes(frame[12:14], "big") != TPID_8021Q:
        return None
    tci = int.from_bytes(frame[14:16], "big")
    if tci & 0x0FFF != vlan:
        return None
    return frame[:12] + frame[16:], tci >> 13


def egress_frame(frame: bytes, vlan: int | None, pcp: int) -> bytes:
    """The frame as it leaves a port: trunk form adds the port's tag."""
    if vlan is None:
        return frame
    return frame[:12] + struct.pack("!HH", TPID_8021Q, (pcp << 13) | vlan) + frame[12:]


@dataclasses.dataclass
class ApplyResult:
    frames_in: int = 0
    not_on_port: int = 0
    frames_out: int = 0
    dropped: Counter = dataclasses.field(default_factory=Counter)
    rules: list[tuple[str, dict[str, int]]] = dataclasses.field(default_factory=list)
    unmatched: int = 0
    replies: int = 0
    hooks: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    timestamps_cut: int = 0

    def report(self) -> str:
        lines = [f"in {self.frames_in}, out {self.frames_out}, "
                 f"dropped {sum(self.dropped.values())}"
                 + (f" ({', '.join(f'{k} {v}' for k, v in sorted(self.dropped.items()))})" if self.dropped else "")
                 + (f", not on the port {self.not_on_port}" if self.not_on_port else "")
                 + f", unmatched {self.unmatched}"
                 + (f", replies {self.replies}" if self.replies else "")]
        if self.timestamps_cut:
            n = self.timestamps_cut
            lines.append(f"{n} timestamp{'s' if n != 1 else ''} finer than a nanosecond "
                         f"{'were' if n != 1 else 'was'} cut to whole nanoseconds")
        if self.rules:
            width = max(len(name) for name, _ in self.rules)
            shown = [c for c in RULE_COUNTERS if c != "bytes"]
            lines.append(f"{'rule':<{width}}  " + " ".join(f"{c:>10}" for c in shown))
            for name, counters in self.rules:
                lines.append(f"{name:<{width}}  " + " ".join(f"{counters[c]:>10}" for c in shown))
        for name, counters in self.hooks.items():
            lines.append(f"hook of {name}: " + ", ".join(f"{k} {v}" for k, v in counters.items()))
        return "\n".join(lines)


def apply_capture(config: Config, in_path: str, out_path: str, from_port: str = "a",
                  seed: int = 0, program: bytes | None = None, replies_path: str | None = None,
                  python_loop: bool = False) -> ApplyResult:
    """Runs the capture at in_path (pcap or pcapng) through the rules; writes what leaves to out_path
    (pcapng if its name ends in .pcapng, else nanosecond pcap), only if the whole capture went through.

    The loop runs in C (bridge/apply_native.py) unless a rule calls a Python hook, or python_loop asks
    for the Python loop of the hooks on any rules (tests/test_apply_native.py holds the C loop's output
    to it, byte for byte). Frames that python hooks send back by the ingress port go to replies_path. A
    hook's frame leaves at its capture time, however long the hook took (its timeout bounds that).
    """
    from reshaper.bridge.apply_native import NativeLoop
    from reshaper.bridge.hooks import Hooks

    program = program or config.program
    engine = Engine(program, seed)
    hooks = Hooks(config, "apply")
    in_vlan = config.ports[from_port].vlan
    out_vlan = config.ports["b" if from_port == "a" else "a"].vlan
    result = ApplyResult()
    reader = CaptureReader(in_path)
    outputs: list[CaptureOutput] = []
    native: NativeLoop | None = None
    ok = False
    try:
        writer = CaptureOutput(out_path)  # an empty capture is still a valid capture
        outputs.append(writer)
        replies = CaptureOutput(replies_path) if replies_path else None
        if replies:
            outputs.append(replies)
        if hooks or python_loop:
            _python_loop(engine, hooks, reader, writer, replies, from_port, in_vlan, out_vlan, result)
        else:
            native = NativeLoop(engine, from_port, in_vlan, out_vlan, writer)
            reader.bulk = native.records
            for now, data in reader.frames():
                native.frame(now, data)
            native.finish()
            result.frames_in, result.not_on_port, result.frames_out, dropped = native.counts()
            result.dropped.update(dropped)
        ok = True
    finally:
        if native:
            native.close()
        hooks.close()
        reader.close()
        for output in outputs:
            output.finish(ok)
    result.timestamps_cut = reader.timestamps_cut
    result.hooks = hooks.counters()
    result.unmatched = engine.counters()["unmatched"]
    result.rules = [(rule.name, engine.rule_counters(i)) for i, rule in enumerate(config.rules)]
    return result


def _python_loop(engine: Engine, hooks, reader: CaptureReader, writer: CaptureOutput, replies: CaptureOutput | None,
                 from_port: str, in_vlan: int | None, out_vlan: int | None, result: ApplyResult) -> None:
    """The loop of rule files with Python hooks, one frame at a time: bridge/apply_loop.c's without them."""
    pending: list[tuple[int, int, bytes]] = []  # (departure ns, sequence, frame)
    seq = 0

    def flush(until: int | None) -> None:
        while pending and (until is None or pending[0][0] <= until):
            t, _, frame = heapq.heappop(pending)
            writer.write(t, frame)
            result.frames_out += 1

    for now, data in reader.frames():
        # departures are never before arrivals: what is due by now can be written
        flush(now)
        if not result.frames_in:
            engine.start(now, now)  # schedules count from the capture's first frame, as in bridge/apply_loop.c
        result.frames_in += 1
        seen = port_frame(data, in_vlan)
        if seen is None:
            result.not_on_port += 1
            continue
        frame, pcp = seen
        verdict, out = engine.run(frame, from_port, now)
        if not verdict.forward:
            result.dropped[verdict.reason] += 1
            continue
        if verdict.rule in hooks.by_rule:
            leaving = []
            for back, frame_out in hooks.run(verdict.rule, out, from_port, now):
                if not back:
                    leaving.append(frame_out)
                    continue
                if replies:
                    replies.write(now, egress_frame(frame_out, in_vlan, pcp))
                result.replies += 1
        else:
            leaving = [out] * (1 + verdict.copies)
        for frame_out in leaving:
            heapq.heappush(pending, (now + verdict.delay_ns, seq, egress_frame(frame_out, out_vlan, pcp)))
            seq += 1
    flush(None)
