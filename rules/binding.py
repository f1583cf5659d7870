"""The C engine seen from Python (the cffi binding): verify a program, run frames, read counters."""
from __future__ import annotations

import typing

from reshaper._native import ffi, lib

# the engine's drop reasons, ports and counters, named and numbered by rules/engine/rs_program.h
DROP_REASONS = {getattr(lib, name): name.removeprefix("RS_R_").lower() for name in dir(lib) if name.startswith("RS_R_")}
PORTS = {"a": lib.RS_PORT_A, "b": lib.RS_PORT_B}
# the global counters the engine counts: the ways frames went (struct rs_counters)
COUNTED_GLOBALS = tuple(name for name, _ in ffi.typeof("struct rs_counters").fields)
# and first what came in, left and was dropped: sums of those and of the rules' (engine_counters)
GLOBAL_COUNTERS = ("frames_in", "forwarded", "dropped", *COUNTED_GLOBALS)
# struct rs_rule_state opens with its counters; its timing state starts at last_departure
_RULE_STATE = [name for name, _ in ffi.typeof("struct rs_rule_state").fields]
RULE_COUNTERS = tuple(_RULE_STATE[:_RULE_STATE.index("last_departure")])


class ProgramError(ValueError):
    """The engine's verifier refused a program."""

    def __init__(self, code: int):
        self.code = code
        super().__init__(f"program rejected by the verifier: {ffi.string(lib.rs_verify_strerror(code)).decode()}")


def program_verify(program: bytes) -> int:
    """Runs the engine's verifier; returns the state size the program needs."""
    size = ffi.new("uint32_t *")
    rc = lib.rs_program_verify(program, len(program), size)
    if rc != 0:
        raise ProgramError(-rc)
    return size[0]


class Verdict(typing.NamedTuple):  # a tuple: built once per frame, so kept cheap
    forward: bool
    reason: str        # why dropped, "none" when forwarded
    length: int
    copies: int
    rule: int          # index of the matching rule, -1 for none
    flags: int
    delay_ns: int


class TraceEvent(typing.NamedTuple):
    """One step of rs_run_traced (rs_program.h, struct rs_trace_event); after: for an action, the frame
    after it."""
    kind: int
    rule: int
    a: int
    b: int
    c: int
    d: int
    after: bytes | None


Trace = list[TraceEvent]


class Engine:
    """One program with its state: the PRNG, counters and timing queues."""

    def __init__(self, program: bytes, seed: int = 0):
        self.state_size = program_verify(program)
        self.program = ffi.new("uint8_t[]", program)
        self.program_len = len(program)
        self.state = ffi.new("uint8_t[]", self.state_size)
        lib.rs_state_init(self.program, self.program_len, self.state, self.state_size, seed)
        self._buf = ffi.new("uint8_t[]", lib.RS_MAX_FRAME + lib.RS_FRAME_ROOM)
        self._verdict = ffi.new("struct rs_verdict *")
        self._header = ffi.cast("struct rs_state *", self.state)
        self._rules = ffi.cast("struct rs_rule_state *", self.state + ffi.sizeof("struct rs_state"))
        self.n_rules = self._header.n_rules

    def run(self, frame: bytes, port: str, now_ns: int = 0, l3: bool = False) -> tuple[Verdict, bytes]:
        """Runs one frame arriving on port ("a" or "b"); returns the verdict and the frame after it."""
        n = self._put(frame)
        lib.rs_run(self.state, self._buf, n, n + lib.RS_FRAME_ROOM, PORTS[port], lib.RS_RUN_L3 if l3 else 0,
                   now_ns, self._verdict)
        return self._result()

    def _put(self, frame: bytes) -> int:
        """Copies frame into the engine's buffer; its length."""
        n = len(frame)
        if n > lib.RS_MAX_FRAME:
            raise ValueError(f"frame of {n} bytes is over the engine's {lib.RS_MAX_FRAME}")
        ffi.memmove(self._buf, frame, n)
        return n

    def _result(self) -> tuple[Verdict, bytes]:
        """The verdict of the last run, and the frame it left in the buffer."""
        v = self._verdict
        verdict = Verdict(v.verdict == lib.RS_V_FORWARD, DROP_REASONS.get(v.reason, str(v.reason)),
                          v.len, v.copies, v.rule, v.flags, v.delay_ns)
        return verdict, ffi.buffer(self._buf, v.len)[:]

    def run_traced(self, frame: bytes, port: str, now_ns: int = 0, l3: bool = False) -> tuple[Verdict, bytes, Trace]:
        """run() by rs_run_traced (the same verdict, frame and state): also the trace of the frame's
        way through the engine (rs_program.h, struct rs_trace), for `reshaper explain`."""
        n = self._put(frame)
        cap = n + lib.RS_FRAME_ROOM
        # an event a rule, one for the parser, one an action op; a copy of the frame after each op
        events = ffi.new("struct rs_trace_event[]", self.n_rules + 1 + lib.RS_MAX_OPS)
        copies = ffi.new("uint8_t[]", lib.RS_MAX_OPS * cap)
        trace = ffi.new("struct rs_trace *", {"ev": events, "cap": len(events), "frames": copies,
                                              "frame_cap": cap, "nframes": lib.RS_MAX_OPS})
        lib.rs_run_traced(self.state, self._buf, n, cap, PORTS[port], lib.RS_RUN_L3 if l3 else 0, now_ns,
                          self._verdict, trace)
        steps = []
        for e in events[0:min(trace.n, trace.cap)]:
            after = None
            if e.kind == lib.RS_T_ACTION and e.a < lib.RS_MAX_OPS:
                after = ffi.buffer(copies + e.a * cap, e.c)[:]
            steps.append(TraceEvent(e.kind, e.rule, e.a, e.b, e.c, e.d, after))
        return (*self._result(), steps)

    def start(self, load_ns: int, first_ns: int) -> None:
        """Time zero of the program's schedules (rs_state_start), on the clock of run's now_ns: when it
        was loaded, and when the first program of this run was (for keep_time). Not called: the first frame."""
        lib.rs_state_start(self.state, load_ns, first_ns)

    def time_zero(self) -> tuple[int, int] | None:
        return state_time_zero(self._header)

    def counters(self) -> dict[str, int]:
        return engine_counters(self._header, self._rules)

    def rule_phase(self, index: int) -> int:
        """The phase of a scheduled rule the last of its frames ran in (struct rs_rule_state)."""
        return self._rules[index].phase

    def rule_counters(self, index: int) -> dict[str, int]:
        if not 0 <= index < self.n_rules:
            raise IndexError(f"rule {index} of {self.n_rules}")
        return rule_counters(self._rules[index])


def engine_counters(header, rules) -> dict[str, int]:
    """The global counters of a state (a struct rs_state, its header.n_rules struct rs_rule_state at
    rules). The engine counts each frame by the way it went (rules/engine/rs_program.h, struct
    rs_counters): a frame a rule matched left with its copies unless the rule dropped it; an
    unmatched or malformed one left or was dropped as the program's flags say; one from a port that
    does not forward was dropped. What left, was dropped and came in are those added up."""
    counts = {name: getattr(header.counters, name) for name in COUNTED_GLOBALS}
    matched = copies = rule_drops = 0
    for i in range(header.n_rules):
        rule = rules[i]
        matched += rule.matched
        copies += rule.duplicated
        rule_drops += rule.dropped + rule.lost + rule.queue_drops
    unmatched_drop = bool(header.prog_flags & lib.RS_PF_DEFAULT_DROP)
    malformed_drop = bool(header.prog_flags & lib.RS_PF_MALFORMED_DROP)
    dropped = (rule_drops + counts["direction"] + (counts["unmatched"] if unmatched_drop else 0)
               + (counts["malformed"] if malformed_drop else 0))
    forwarded = (matched - rule_drops + copies + (0 if unmatched_drop else counts["unmatched"])
                 + (0 if malformed_drop else counts["malformed"]))
    frames_in = matched + counts["unmatched"] + counts["malformed"] + counts["direction"]
    return {"frames_in": frames_in % 2**64, "forwarded": forwarded % 2**64, "dropped": dropped % 2**64} | counts


def state_time_zero(header) -> tuple[int, int] | None:
    """A state's time zero of schedules, this load's and the first's (struct rs_state); None before any."""
    return (header.epoch_load, header.epoch_first) if header.epoch_set else None


def rule_counters(rule) -> dict[str, int]:
    """One rule's counters in a state (a struct rs_rule_state), its rate queue's depth with them."""
    return {name: getattr(rule, name) for name in RULE_COUNTERS} | {"queue_depth": rule.rate_count}


def state_counters(state: bytes) -> tuple[dict[str, int], list[dict[str, int]], tuple[int, int] | None]:
    """The global and per-rule counters of a state copied out of the engine (the kernel module's
    GET_STATS): struct rs_state, then one struct rs_rule_state a rule; and its time zero."""
    head, each = ffi.sizeof("struct rs_state"), ffi.sizeof("struct rs_rule_state")
    buf = ffi.from_buffer(state)
    header = ffi.cast("struct rs_state *", buf) if len(state) >= head else None
    if header is None or len(state) != head + header.n_rules * each:
        raise ValueError(f"a state of {len(state)} bytes does not hold the header and rules it names")
    rules = ffi.cast("struct rs_rule_state *", buf + head)
    return (engine_counters(header, rules), [rule_counters(rules[i]) for i in range(header.n_rules)],
            state_time_zero(header))
