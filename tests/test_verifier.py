"""The engine's verifier: every valid program passes, every malformed one is refused."""
import struct

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from reshaper._native import ffi, lib
from reshaper.rules.compiler import compile_rules
from reshaper.rules.config import load_config
from reshaper.rules.binding import Engine, ProgramError, program_verify
from reshaper.examples import EXAMPLES

PORTS = "version: 1\nports: {a: eth0.100, b: eth0.200}\n"


def program(rules_yaml: str = "") -> bytes:
    return compile_rules(load_config("p.yaml", PORTS + rules_yaml))


def code(prog: bytes) -> int:
    with pytest.raises(ProgramError) as info:
        program_verify(prog)
    return info.value.code


def with_rule(body: bytes, n_match: int, n_action: int, flags: int = 0) -> bytes:
    """A one-rule program around hand-made ops."""
    rule = struct.pack("<HBBBBH", 8 + len(body), 0, flags, n_match, n_action, 0) + body
    return struct.pack("<IHHHHI", lib.RS_MAGIC, lib.RS_VERSION, lib.RS_PF_FWD_A_TO_B, 1, 0, 16 + len(rule)) + rule


def op(opcode: int, operands: bytes = b"") -> bytes:
    return bytes([opcode, len(operands)]) + operands


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_verify(path):
    assert program_verify(compile_rules(load_config(str(path)))) > 0


def test_every_truncation_is_refused():
    prog = compile_rules(load_config(str(EXAMPLES / "five-rules.yaml")))
    for n in range(len(prog)):
        short = prog[:n]
        # the declared length no longer fits: refused whatever the cut
        assert code(short) in (lib.RS_E_SHORT, lib.RS_E_RULES), n
        # even when the header is patched to the new length
        if n >= 16:
            patched = short[:12] + struct.pack("<I", n) + short[16:]
            assert code(patched) in (lib.RS_E_RULES, lib.RS_E_OPLEN), n


def test_trailing_bytes_are_refused():
    prog = program() + b"\0"
    assert code(prog) == lib.RS_E_SHORT
    assert code(prog[:12] + struct.pack("<I", len(prog)) + prog[16:]) == lib.RS_E_RULES


@pytest.mark.parametrize("offset,value,error", [
    (0, b"XSHP", lib.RS_E_MAGIC),
    (4, struct.pack("<H", lib.RS_VERSION + 1), lib.RS_E_VERSION),
    (6, struct.pack("<H", 0x10), lib.RS_E_FLAGS),
    (10, struct.pack("<H", 1), lib.RS_E_TRACE),                      # a delivery trace counted, none there
    (10, struct.pack("<H", lib.RS_MAX_TRACES + 1), lib.RS_E_TRACE),
    (8, struct.pack("<H", 257), lib.RS_E_RULES),
])
def test_bad_header(offset, value, error):
    prog = bytearray(program())
    prog[offset:offset + len(value)] = value
    assert code(bytes(prog)) == error


@pytest.mark.parametrize("name,prog,error", [
    ("unknown match opcode", with_rule(op(0x3f), 1, 0), lib.RS_E_OPCODE),
    ("unknown action opcode", with_rule(op(0x7f), 0, 1), lib.RS_E_OPCODE),
    ("action among matches", with_rule(op(lib.RS_A_DROP), 1, 0), lib.RS_E_OPCODE),
    ("match among actions", with_rule(op(lib.RS_M_HAS_VLAN), 0, 1), lib.RS_E_OPCODE),
    ("operand length", with_rule(op(lib.RS_A_DROP, b"\0"), 0, 1), lib.RS_E_OPLEN),
    ("op past its rule", with_rule(bytes([lib.RS_A_TRUNCATE, 2, 60]), 0, 1), lib.RS_E_RULES),
    ("range field", with_rule(op(lib.RS_M_RANGE, bytes([99, 1]) + struct.pack("<HH", 1, 2)), 1, 0),
     lib.RS_E_OPERAND),
    ("range low above high", with_rule(op(lib.RS_M_RANGE, bytes([lib.RS_F_DST_PORT, 1]) + struct.pack("<HH", 9, 2)), 1, 0),
     lib.RS_E_OPERAND),
    ("17 ranges", with_rule(op(lib.RS_M_RANGE, bytes([lib.RS_F_DST_PORT, 17]) + struct.pack("<HH", 1, 2) * 17), 1, 0),
     lib.RS_E_OPERAND),
    ("bytes base", with_rule(op(lib.RS_M_BYTES, struct.pack("<BHB", 3, 0, 1) + b"\0\xff"), 1, 0), lib.RS_E_OPERAND),
    ("no bytes", with_rule(op(lib.RS_M_BYTES, struct.pack("<BHB", 0, 0, 0)), 1, 0), lib.RS_E_OPERAND),
    ("ip family", with_rule(op(lib.RS_M_IP, bytes([0, 5]) + bytes(32)), 1, 0), lib.RS_E_OPERAND),
    ("truncate below 14", with_rule(op(lib.RS_A_TRUNCATE, struct.pack("<H", 13)), 0, 1), lib.RS_E_OPERAND),
    ("copies", with_rule(op(lib.RS_A_DUPLICATE, struct.pack("<BI", 17, 1)), 0, 1), lib.RS_E_OPERAND),
    ("distribution", with_rule(op(lib.RS_A_DELAY, struct.pack("<QQBI", 1, 0, 4, 0)), 0, 1), lib.RS_E_OPERAND),
    ("delay over 60 s", with_rule(op(lib.RS_A_DELAY, struct.pack("<QQBI", 61 * 10**9, 0, 0, 0)), 0, 1),
     lib.RS_E_OPERAND),
    ("rate 0", with_rule(op(lib.RS_A_RATE, struct.pack("<QhH", 0, 0, 10)), 0, 1), lib.RS_E_OPERAND),
    ("rate limit 0", with_rule(op(lib.RS_A_RATE, struct.pack("<QhH", 1000, 0, 0)), 0, 1), lib.RS_E_OPERAND),
    ("reorder alone", with_rule(op(lib.RS_A_REORDER, struct.pack("<II", 1, 1)), 0, 1), lib.RS_E_ORDER),
    ("two delays", with_rule(op(lib.RS_A_DELAY, struct.pack("<QQBI", 1, 0, 0, 0)) * 2, 0, 2), lib.RS_E_ORDER),
    ("rule flag", with_rule(b"", 0, 0, flags=0x80), lib.RS_E_FLAGS),
])
def test_bad_rule(name, prog, error):
    assert code(prog) == error


def test_engine_refuses_a_bad_program_with_a_message():
    with pytest.raises(ProgramError, match="program rejected by the verifier: unknown opcode"):
        Engine(with_rule(op(0x3f), 1, 0))


def test_state_size_grows_with_rate_limit():
    small = program("rules:\n  - {name: r, actions: [{rate: {bitrate: 1mbit, limit: 1}}]}\n")
    big = program("rules:\n  - {name: r, actions: [{rate: {bitrate: 1mbit, limit: 1001}}]}\n")
    assert program_verify(big) - program_verify(small) == 8000


def test_a_state_runs_its_own_copy_of_the_program():
    """rs_state_init copies the program into the state (rules/engine/PROGRAM.md) and rs_run takes the
    state alone: the caller's bytes overwritten after the load change no verdict and no frame; a
    state too small for program and copy stays empty, and passes frames untouched, counting none."""
    rules = "rules:\n  - {name: mark, match: {ip_proto: udp}, actions: [{set: {dscp: 46}}]}\n"
    frame = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(dport=53))
    expected = Engine(program(rules)).run(frame, "a")
    engine = Engine(program(rules))
    ffi.memmove(engine.program, b"\xff" * engine.program_len, engine.program_len)
    assert engine.run(frame, "a") == expected and expected[0].rule == 0 and expected[1] != frame

    prog = program(rules)
    size = program_verify(prog)
    state = ffi.new("uint8_t[]", size)
    lib.rs_state_init(prog, len(prog), state, size - 8, 1)
    buf = ffi.new("uint8_t[]", frame + bytes(lib.RS_FRAME_ROOM))
    v = ffi.new("struct rs_verdict *")
    lib.rs_run(state, buf, len(frame), len(frame) + lib.RS_FRAME_ROOM, lib.RS_PORT_A, 0, 0, v)
    assert (v.verdict, v.rule, v.len, ffi.buffer(buf, len(frame))[:]) == (lib.RS_V_FORWARD, -1, len(frame), frame)
    assert bytes(ffi.buffer(state, size)) == bytes(size)


def test_every_verifier_error_has_its_words():
    """rs_verify_strerror (engine.c) is the one text of each error, for Python and the module."""
    codes = sorted(getattr(lib, n) for n in dir(lib) if n.startswith("RS_E_"))
    assert codes == list(range(1, len(codes) + 1))
    words = [ffi.string(lib.rs_verify_strerror(c)).decode() for c in codes]
    assert "unknown verifier error" not in words and len(set(words)) == len(words), words
    assert ffi.string(lib.rs_verify_strerror(len(codes) + 1)).decode() == "unknown verifier error"
    assert str(ProgramError(lib.RS_E_MAGIC)) == "program rejected by the verifier: not a reshaper program (bad magic)"


def test_a_state_copied_out_must_hold_the_rules_it_names():
    """The kernel module's GET_STATS state (rules/binding.py's state_counters): a short or long copy is an
    error, not counters read past its end."""
    from reshaper.rules.binding import state_counters
    engine = Engine(program("rules:\n" + "".join(f"  - {{name: r{i}, match: {{dscp: {i}}}}}\n" for i in range(3))))
    engine.run(bytes(60), "a")
    whole = bytes(ffi.buffer(engine.state, ffi.sizeof("struct rs_state") + 3 * ffi.sizeof("struct rs_rule_state")))
    counters, rules, _ = state_counters(whole)
    assert counters["frames_in"] == 1 and len(rules) == 3
    for cut in (whole[:-1], whole + b"\0" * 8, whole[:10]):
        with pytest.raises(ValueError, match="does not hold the header and rules it names"):
            state_counters(cut)
