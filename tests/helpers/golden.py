"""Golden cases: a configuration, the frames that arrive, the exact frames that leave;
here they are read and what left is checked against them (tests/test_golden.py runs
them through `apply`, tests/test_carriers.py live, tests/kmod in the kernel module,
tests/armhf on the armhf wheel).

One case per file, tests/golden/<case>.yaml (in the spirit of Click's .testie):

    # what the case shows
    config:          the rule file exactly as a user writes it; its text is cut
                     out of the case file as written (comments and quoting kept)
    from: a          the port the frames arrive on (default a)
    seed: 0          the engine's PRNG seed (default 0)
    in:              frames arriving, in order
    out:             frames leaving the other port, in departure order
    counts:          optional, checked against the apply result:
                       dropped: {reason: n}   exactly these drop reasons
                       rules: {name: {counter: n}}   the counters named
                       frames_in, frames_out, not_on_port, unmatched: n
    expect:          optional, a word or a list of words that change the check:
                       one-bit-flipped      each frame left must differ from its
                                            `out` frame in exactly one bit, past
                                            the Ethernet header (and the egress
                                            port's tag in trunk form)
                       departures-ordered   departure times never decrease; with
                                            `out` in arrival order (checked frame
                                            by frame) no frame overtook another

Frames. An item of `in` or `out` is either a string or a mapping
{frame: STRING, at: TIME, in: K}. The string is a Python expression evaluated
with the names of scapy.all only (no builtins); it gives a scapy packet or bytes.
Expected frames leave checksums and lengths to scapy, so the engine's
incremental updates are checked independently; a field scapy would fill is
given explicitly where a case needs it (chksum=0).

Times are offsets from BASE_NS (1_700_000_000 s, tests/helpers/captures.py),
written as in the configuration: a number and ns, us, ms or s ("250us", "10ms", "0ms").
  * in[i] arrives at its `at`, or at i ms when it has none.
  * out[j] leaves at its `at` if given; `at` may be a closed range "LO..HI"
    (both with units), then any departure in it is accepted. Without `at`,
    out[j] leaves when input `in: K` arrived (K counts from 0), and without
    `in` either when input j arrived: no delay, the j-th frame out paired
    with the j-th frame in.
The frames that leave are compared as the exact list of
(departure ns, bytes) against `out`; a mismatch shows both sides decoded.
"""
from __future__ import annotations

import difflib
import re
import textwrap
from pathlib import Path

import scapy.all
import yaml

from reshaper.bridge.apply import apply_capture
from reshaper.rules.config import load_config
from tests.helpers.captures import read_outputs, write_capture

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
CASES = sorted(GOLDEN.glob("*.yaml"))
UNITS = {"ns": 1, "us": 10**3, "ms": 10**6, "s": 10**9}
SCAPY = {name: getattr(scapy.all, name) for name in dir(scapy.all) if not name.startswith("_")}
EXPECTS = {"one-bit-flipped", "departures-ordered"}
# what depends on when frames arrive (rates, jitter, reordering): only apply's simulated time
# gives it exactly (tests/test_timing.py checks it statistically); the carriers get the rest
TIMED = {"delay-jitter", "rate", "rate-limit", "reorder"}
UNTIMED_CASES = [p for p in CASES if p.stem not in TIMED]


def parse_time(text) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ns|us|ms|s)", str(text).strip())
    assert m, f"expected a time like 10ms, got {text!r}"
    return round(float(m.group(1)) * UNITS[m.group(2)])


def parse_window(text) -> tuple[int, int]:
    """'10ms' -> (t, t); '5ms..15ms' -> (lo, hi)."""
    lo, _, hi = str(text).partition("..")
    return parse_time(lo), parse_time(hi or lo)


def build(expr: str) -> bytes:
    value = eval(expr, {"__builtins__": {}}, SCAPY)  # noqa: S307 - test data
    return value if isinstance(value, bytes) else bytes(value)


def items(entries) -> list[dict]:
    return [e if isinstance(e, dict) else {"frame": e} for e in entries or []]


def config_text(text: str) -> str:
    """The `config:` mapping's text as written in the case file, dedented."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    node = next(v for k, v in root.value if k.value == "config")
    start = text.rfind("\n", 0, node.start_mark.index) + 1
    return textwrap.dedent(text[start:node.end_mark.index])


class Case:
    def __init__(self, path: Path):
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
        unknown = set(data) - {"config", "from", "seed", "in", "out", "counts", "expect"}
        assert not unknown, f"{path.name}: unknown keys {sorted(unknown)}"
        self.name = path.stem
        self.config = config_text(text)
        self.from_port = data.get("from", "a")
        self.seed = data.get("seed", 0)
        expect = data.get("expect") or []
        self.expect = {expect} if isinstance(expect, str) else set(expect)
        assert self.expect <= EXPECTS, f"{path.name}: unknown expect {self.expect - EXPECTS}"
        self.counts = data.get("counts") or {}
        self.inputs = [(parse_time(e["at"]) if "at" in e else i * 10**6, build(e["frame"]))
                       for i, e in enumerate(items(data["in"]))]
        self.outputs = []  # (lo ns, hi ns, bytes)
        for j, e in enumerate(items(data.get("out"))):
            if "at" in e:
                lo, hi = parse_window(e["at"])
            else:
                lo = hi = self.inputs[e.get("in", j)][0]
            self.outputs.append((lo, hi, build(e["frame"])))

    def write_inputs(self, path: Path) -> None:
        write_capture(path, self.inputs)

    def egress_header_len(self) -> int:
        out_port = (load_config("-", self.config).ports["b" if self.from_port == "a" else "a"])
        return 18 if out_port.vlan is not None else 14


def run_case(case: Case, tmp_path: Path):
    """The case through `reshaper apply` (its rule file written to tmp_path/rules.yaml): the result
    and the frames out, (departure ns, bytes)."""
    config = tmp_path / "rules.yaml"
    config.write_text(case.config)
    in_pcap, out_pcap = tmp_path / "in.pcap", tmp_path / "out.pcap"
    case.write_inputs(in_pcap)
    result = apply_capture(load_config(str(config)), str(in_pcap), str(out_pcap), case.from_port, case.seed)
    return result, read_outputs(out_pcap)


# ---- comparing ------------------------------------------------------------------


def fmt_time(ns: int) -> str:
    return f"{ns / 1e6:+.6f} ms"


def describe(frame: bytes) -> list[str]:
    pkt = scapy.all.Ether(frame)
    return pkt.show2(dump=True).splitlines() + scapy.all.hexdump(frame, dump=True).splitlines()


def one_bit_past(expected: bytes, got: bytes, start: int) -> bool:
    if len(expected) != len(got):
        return False
    diff = [(i, a ^ b) for i, (a, b) in enumerate(zip(expected, got)) if a != b]
    return len(diff) == 1 and diff[0][0] >= start and bin(diff[0][1]).count("1") == 1


def mismatches(case: Case, got: list[tuple[int, bytes]]) -> list[str]:
    problems = []
    if len(got) != len(case.outputs):
        problems.append(f"expected {len(case.outputs)} frames out, got {len(got)}")
    start = case.egress_header_len() if "one-bit-flipped" in case.expect else 0
    for j, ((lo, hi, want), (t, frame)) in enumerate(zip(case.outputs, got)):
        if not lo <= t <= hi:
            when = fmt_time(lo) if lo == hi else f"{fmt_time(lo)} .. {fmt_time(hi)}"
            problems.append(f"frame {j}: expected to leave at {when}, left at {fmt_time(t)}")
        if "one-bit-flipped" in case.expect:
            ok, what = one_bit_past(want, frame, start), f"to differ in one bit past byte {start}"
        else:
            ok, what = want == frame, "these bytes"
        if not ok:
            first = next((i for i, (a, b) in enumerate(zip(want, frame)) if a != b), min(len(want), len(frame)))
            problems.append(f"frame {j}: expected {what}, first difference at byte {first} "
                            f"(lengths {len(want)} expected, {len(frame)} got)")
            problems += difflib.unified_diff(describe(want), describe(frame), "expected", "got", lineterm="")
    for t, frame in got[len(case.outputs):]:
        problems.append(f"unexpected frame at {fmt_time(t)}:")
        problems += describe(frame)
    for lo, hi, want in case.outputs[len(got):]:
        problems.append(f"missing frame at {fmt_time(lo)}:")
        problems += describe(want)
    if "departures-ordered" in case.expect:
        times = [t for t, _ in got]
        if times != sorted(times):
            problems.append(f"departures out of order: {[fmt_time(t) for t in times]}")
    return problems


def count_problems(case: Case, result) -> list[str]:
    problems = []
    for key, want in case.counts.items():
        if key == "dropped":
            have = dict(result.dropped)
        elif key == "rules":
            rules = dict(result.rules)
            have = {name: {c: rules.get(name, {}).get(c) for c in counters} for name, counters in want.items()}
        else:
            have = getattr(result, key)
        if have != want:
            problems.append(f"counts.{key}: expected {want}, got {have}")
    return problems
