"""Hostile rule files: whatever a file holds, the loader answers FILE:LINE:COL: error: ...
(`reshaper check` exits 1), never a traceback; its work and memory stay bounded; and a
program that `check --mode kernel` accepts fits the netlink attribute it is sent in.
"""
import contextlib
import gc
import io
import struct
import sys
import time
import tracemalloc

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reshaper.rules.values
from reshaper.bridge import modes
from reshaper.bridge.cli import main
from reshaper._native import lib
from reshaper.bridge.kernel_genl import KernelError, ReshaperSocket, reshapermsg
from reshaper.bridge.modes.kernel import KERNEL_MAX_PROGRAM_LEN
from reshaper.rules.binding import program_verify
from reshaper.rules.compiler import compile_rules
from reshaper.rules.config import load_config
from reshaper.rules.fields import ACTIONS, MATCH_FIELDS, MAX_BITRATE, RULE_KEYS, SET_FIELDS, TOP_KEYS
from reshaper.rules.loader import MAX_ALIASES, MAX_DEPTH, MAX_NODES
from reshaper.rules.model import ConfigError
from reshaper.examples import EXAMPLES
from tests.helpers.config_errors import PORTS, at, errors, rule_text
from tests.helpers.golden import CASES, config_text


def check(path, *args) -> tuple[int, str, str]:
    """`reshaper check PATH ARGS`: exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["check", str(path), *args])
    return status, out.getvalue(), err.getvalue()


def refused(diagnostic: str, path) -> str:
    """check's stderr for a file with this one error (written for r.yaml)."""
    return diagnostic.replace("r.yaml", str(path), 1) + "\n1 error; nothing applied\n"


# ---- item 2: each class of value YAML resolves to something unexpected ----------------------

BIG = "9" * 5000  # more digits than int() reads (4300)
HUGE = "1" + "0" * 400  # more than a float holds

VALUE_CASES = [
    # (name, one rule, token the error points at, message)
    ("invalid date", "{name: r, match: {ttl: 2024-13-01}}", "2024",
     "rule 'r': match.ttl: expected an integer from 0 to 255, a range like \"0-255\", got '2024-13-01'"),
    ("date", "{name: r, actions: [{set: {dscp: 2024-01-01}}]}", "2024",
     "rule 'r': set: dscp: expected an integer from 0 to 63, got '2024-01-01'"),
    ("timestamp", "{name: r, actions: [{corrupt: {probability: 2024-01-01 10:00:00}}]}", "2024",
     "rule 'r': corrupt: probability: expected a probability (e.g. 1% or 0.01), got '2024-01-01 10:00:00'"),
    ("!!int of no integer", "{name: r, actions: [{set: {dscp: !!int abc}}]}", "!!int",
     "rule 'r': set: dscp: expected an integer from 0 to 63, got 'abc'"),
    ("!!bool of no boolean", "{name: r, actions: [{delay: {time: 1ms, reorder_on_jitter: !!bool maybe}}]}", "!!bool",
     "rule 'r': delay: reorder_on_jitter: expected true or false, got 'maybe'"),
    ("!!binary", "{name: r, match: {dscp: !!binary aGk=}}", "!!binary",
     "rule 'r': match.dscp: expected an integer from 0 to 63, a range like \"0-63\", got 'aGk='"),
    ("!!map on a value", "{name: r, match: {ttl: !!map x}}", "!!map",
     "rule 'r': match.ttl: expected an integer from 0 to 255, a range like \"0-255\", got 'x'"),
    ("unknown tag", "{name: r, match: {ttl: !foo 5}}", "!foo", "unknown tag '!foo'; expected plain YAML values"),
    ("python tag", "{name: r, actions: [{set: {dscp: !!python/object/apply:os.system [ls]}}]}", "!!python",
     "unknown tag 'tag:yaml.org,2002:python/object/apply:os.system'; expected plain YAML values"),
    ("integer of 5000 digits", "{name: r, actions: [{set: {dscp: " + BIG + "}}]}", BIG,
     f"rule 'r': set: dscp: expected an integer from 0 to 63, got '{BIG}'"),
    ("hex integer of 5000 digits", "{name: r, actions: [{set: {ttl: 0x" + "f" * 5000 + "}}]}", "0x",
     "rule 'r': set: ttl: expected an integer from 0 to 255, got 0x" + "f" * 5000),
    ("range of 5000 digits", "{name: r, match: {dst_port: 1-" + BIG + "}}", "1-",
     f"rule 'r': match.dst_port: expected an integer from 0 to 65535, a range like \"0-65535\", got '1-{BIG}'"),
    ("MAC prefix of 5000 digits", "{name: r, match: {eth_src: '02:00:00:00:00:01/" + BIG + "'}}", "'02",
     f"rule 'r': match.eth_src: expected a MAC mask like ff:ff:ff:00:00:00 or a prefix length 0-48, got '{BIG}'"),
    ("MAC prefix of a superscript digit", "{name: r, match: {eth_src: '02:00:00:00:00:01/²'}}", "'02",
     "rule 'r': match.eth_src: expected a MAC mask like ff:ff:ff:00:00:00 or a prefix length 0-48, got '²'"),
    ("probability past a float", "{name: r, actions: [{corrupt: {probability: " + HUGE + "}}]}", HUGE,
     f"rule 'r': corrupt: probability: expected a probability between 0% and 100%, got '{HUGE}'"),
    ("time past a float", "{name: r, actions: [{delay: {time: " + HUGE + "ms}}]}", HUGE,
     f"rule 'r': delay: time: expected a time of at most 60s, got '{HUGE}ms'"),
    ("bit rate past a float", "{name: r, actions: [{rate: {bitrate: " + HUGE + "gbit}}]}", HUGE,
     f"rule 'r': rate: bitrate: expected a bit rate of at most {MAX_BITRATE}bit, got '{HUGE}gbit'"),
    ("bit rate past its field", "{name: r, actions: [{rate: {bitrate: 99999999999gbit}}]}", "9999",
     f"rule 'r': rate: bitrate: expected a bit rate of at most {MAX_BITRATE}bit, got '99999999999gbit'"),
    ("one bit per second past the field", "{name: r, actions: [{rate: {bitrate: " + str(MAX_BITRATE + 1) + "bit}}]}",
     str(MAX_BITRATE + 1), f"rule 'r': rate: bitrate: expected a bit rate of at most {MAX_BITRATE}bit, "
                           f"got '{MAX_BITRATE + 1}bit'"),
    ("one action past the verifier", "{name: r, actions: [" + ", ".join(["dec_ttl"] * (lib.RS_MAX_OPS + 1)) + "]}",
     "{name", f"rule 'r': expected at most {lib.RS_MAX_OPS} actions in a rule, got {lib.RS_MAX_OPS + 1}"),
    ("a set's fields are actions", "{name: r, actions: [" + ", ".join(["dec_ttl"] * (lib.RS_MAX_OPS - 4))
     + ", {set: {dscp: 1, ecn: 1, ttl: 1, vlan: 1, vlan_pcp: 1}}]}", "{name",
     f"rule 'r': expected at most {lib.RS_MAX_OPS} actions in a rule, got {lib.RS_MAX_OPS + 1} "
     "(a set takes one per field)"),
]


@pytest.mark.parametrize("name,rule,token,message", VALUE_CASES, ids=[c[0] for c in VALUE_CASES])
def test_hostile_values(name, rule, token, message):
    text = rule_text(rule)
    assert errors(text) == [at(text, token, message)]


@pytest.mark.parametrize("rule", [
    "{name: r, actions: [{rate: {bitrate: " + str(MAX_BITRATE) + "bit}}]}",
    "{name: r, actions: [" + ", ".join(["dec_ttl"] * lib.RS_MAX_OPS) + "]}",
    "{name: r, actions: [" + ", ".join(["dec_ttl"] * (lib.RS_MAX_OPS - 5))
    + ", {set: {dscp: 1, ecn: 1, ttl: 1, vlan: 1, vlan_pcp: 1}}]}",
], ids=["largest bit rate", "most actions", "most actions with a set"])
def test_values_at_the_limits_load(rule):
    program_verify(compile_rules(load_config("r.yaml", rule_text(rule))))


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x08", "\x1b", "\x7f", "\x9f", "\ufffe"])
def test_control_characters(char):
    text = rule_text("{name: r" + char + "}")
    assert errors(text) == [at(text, char, f"not valid YAML: unacceptable character U+{ord(char):04X}: "
                                           "special characters are not allowed")]


@pytest.mark.parametrize("bad,reason", [
    (b"\xff", "invalid start byte"),
    (b"\xc3(", "invalid continuation byte"),
    (b"\xed\xa0\x80", "invalid continuation byte"),  # a UTF-16 surrogate
    (b"\xe2\x82", "unexpected end of data"),
])
def test_invalid_utf8_says_the_byte_offset_and_where_it_is(tmp_path, bad, reason):
    path = tmp_path / "r.yaml"
    before = PORTS + "# café "  # the column counts characters, the offset bytes
    path.write_bytes(before.encode() + bad)
    status, out, err = check(path)
    offset = len(before.encode())
    assert (status, out) == (1, "")
    assert err == refused(f"r.yaml:3:{len('# café ') + 1}: error: not valid UTF-8: byte 0x{bad[0]:02x} at byte "
                          f"offset {offset} ({reason})", path)


@pytest.mark.parametrize("open_,close,past", [
    # the root mapping is level 1 and the rules' value level 2, so the list at index MAX_DEPTH - 1
    # is the first too deep; a mapping's key is a level below the mapping: that of the one before is
    ("[", "]", MAX_DEPTH - 1),
    ("{a: ", "}", len("{a: ") * (MAX_DEPTH - 2) + len("{")),
])
def test_deep_nesting(open_, close, past):
    text = PORTS + "rules: " + open_ * 5000 + close * 5000 + "\n"
    start = len(PORTS + "rules: ") + past
    assert errors(text) == [at(text, text[start], f"nested more than {MAX_DEPTH} levels deep; a rule file needs "
                                                  "far fewer", start)]


def test_too_many_rules():
    text = PORTS + "rules:\n" + "".join(f"  - {{name: r{i}}}\n" for i in range(lib.RS_MAX_RULES + 1))
    assert errors(text) == [at(text, "- {name: r0}", f"expected at most {lib.RS_MAX_RULES} rules, "
                                                     f"got {lib.RS_MAX_RULES + 1}")]


# ---- programs of an exact size -------------------------------------------------------------

# the largest op: a payload of RS_MAX_BYTES and its mask, after 4 bytes of base, offset, length
PAYLOAD = lib.RS_OP_HDR_LEN + 4 + 2 * lib.RS_MAX_BYTES
RULE_BODY = (lib.RS_MAX_OPS - 4) * PAYLOAD  # room left for the ops that make up the odd bytes


def _actions(size: int) -> list[str]:
    """Actions that compile to size bytes (size >= 16)."""
    items = []
    if size % 2:
        items.append("duplicate")  # 7 bytes, where the ops below take an even number
        size -= 7
    full, rest = divmod(size, PAYLOAD)
    items += ["{payload: {offset: 0, value: '0x" + "ab" * lib.RS_MAX_BYTES + "'}}"] * full
    if rest >= 8:
        items.append("{payload: {offset: 0, value: '0x" + "ab" * ((rest - 6) // 2) + "'}}")
    else:
        items += ["dec_ttl"] * (rest // 2)
    return items


def rules_of_size(size: int) -> str:
    """A rule file whose program is exactly size bytes."""
    bodies, rest = [], size - lib.RS_HDR_LEN
    while rest > lib.RS_RULE_HDR_LEN + RULE_BODY + 24:
        bodies.append(RULE_BODY)
        rest -= lib.RS_RULE_HDR_LEN + RULE_BODY
    bodies.append(rest - lib.RS_RULE_HDR_LEN)
    return PORTS + "rules:\n" + "".join(f"  - {{name: r{i}, actions: [{', '.join(_actions(body))}]}}\n"
                                        for i, body in enumerate(bodies))


@pytest.mark.parametrize("size", [100, 4301, lib.RS_MAX_PROGRAM_LEN])
def test_rules_of_size(size):
    assert len(compile_rules(load_config("r.yaml", rules_of_size(size)))) == size


def test_a_program_past_the_engines_length(tmp_path):
    text = rules_of_size(lib.RS_MAX_PROGRAM_LEN + 1)
    path = tmp_path / "r.yaml"
    path.write_text(text)
    assert check(path) == (1, "", refused(at(text, "- {name: r0", "expected rules that compile to at most "
                                                                  f"{lib.RS_MAX_PROGRAM_LEN} bytes, these take "
                                                                  f"{lib.RS_MAX_PROGRAM_LEN + 1}"), path))


@pytest.mark.parametrize("name", ["invalid date", "bit rate past its field", "one action past the verifier"])
def test_check_exits_1_with_the_diagnostic(tmp_path, name):
    text = rule_text(next(rule for case, rule, _, _ in VALUE_CASES if case == name))
    path = tmp_path / "r.yaml"
    path.write_text(text)
    assert check(path) == (1, "", refused(errors(text)[0], path))


# ---- item 2: properties over generated and mutated files ------------------------------------

def loads_or_says_where(path: str, text: str | None = None) -> None:
    """load_config raises ConfigError with positions, or gives a config that compiles and verifies."""
    try:
        config = load_config(path, text)
    except ConfigError as exc:
        assert exc.diagnostics
        for d in exc.diagnostics:
            assert (d.path, d.line >= 1, d.column >= 1, bool(d.message)) == (path, True, True, True), d
        return
    program_verify(compile_rules(config))
    for mode in modes.MODES.values():
        for d in mode.limits(config):
            assert d.line >= 1 and d.column >= 1, d


SEEDS = ([p.read_text(encoding="utf-8") for p in sorted(EXAMPLES.glob("*.yaml"))]
         + [config_text(p.read_text(encoding="utf-8")) for p in CASES])


def _values(node) -> list:
    """The scalar nodes under node, but for mapping keys."""
    if isinstance(node, yaml.ScalarNode):
        return [node]
    children = node.value if isinstance(node, yaml.SequenceNode) else [value for _, value in node.value]
    return [s for child in children for s in _values(child)]


# where each seed's values are, to put hostile ones there
SPANS = [[(n.start_mark.index, n.end_mark.index) for n in _values(yaml.compose(seed))] for seed in SEEDS]
HOSTILE = [
    "2024-13-01", "2024-01-01", "2024-01-01 10:00:00", "!foo 5", "!!python/name:os.system", "!!binary aGk=",
    "!!binary ###", "!!int abc", "!!bool maybe", "!!float x", "!!timestamp x", "!!set x", "!!map x", "!!seq x",
    "!!omap x", "!!null x", "!!str", BIG, "0x" + "f" * 5000, "-" + BIG, HUGE, HUGE + "ms", HUGE + "gbit",
    "99999999999gbit", str(MAX_BITRATE + 1) + "bit", "1e999", ".inf", "-.inf", ".nan", "1:2:3:4:5:6:7:8:9",
    "0o7777777777777777777777", "0b" + "1" * 200, "-1", "65536", "4294967296", "1-" + BIG, "'02:00:00:00:00:01/²'",
    "'02:00:00:00:00:01/" + BIG + "'", '"\\0"', '"\\ud800"', '"\\x01"', '"a\\nb"', "~", "null", "yes", "[]", "{}",
    "[*a]", "*a", "&a x", "&a [*a]", "'", '"', "|", ">", "?", "- x", "{a: 1}", "[1, [2, [3]]]",
    "'0x" + "ab" * 40 + "'", "''", "\t", "é", "\u2028", "\x85", "\x01", "\ufeff", "[" * 100, "{" * 100,
    "[" + ", ".join(["dec_ttl"] * 70) + "]", "- " * 50, "\n  - x", ": :", "<<: *a", "---", "...", "%YAML 1.1",
]


@st.composite
def mutated_files(draw) -> bytes:
    """An example or golden rule file with values, lines or bytes replaced (values most often:
    the rest of the file stays valid, so that the checker and the compiler see them)."""
    i = draw(st.integers(0, len(SEEDS) - 1))
    text, spans = SEEDS[i], SPANS[i]
    family = draw(st.sampled_from(["values", "values", "values", "lines", "bytes"]))
    n = draw(st.integers(1, 3))
    chosen = draw(st.lists(st.sampled_from(spans), min_size=1, max_size=n, unique=True)) if family == "values" else []
    for start, end in sorted(chosen, reverse=True):
        text = text[:start] + draw(st.sampled_from(HOSTILE) | st.text(max_size=12)) + text[end:]
    lines = text.split("\n")
    for _ in range(n if family == "lines" else 0):
        k = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["drop", "repeat", "indent", "dedent", "swap"]))
        if kind == "drop":
            del lines[k]
        elif kind == "repeat":
            lines[k:k] = [lines[k]] * draw(st.integers(1, 300))
        elif kind == "indent":
            lines[k] = " " * draw(st.integers(1, 4)) + lines[k]
        elif kind == "dedent":
            lines[k] = lines[k].lstrip()
        else:
            j = draw(st.integers(0, len(lines) - 1))
            lines[k], lines[j] = lines[j], lines[k]
        lines = lines or [""]
    data = bytearray("\n".join(lines).encode("utf-8"))
    for _ in range(n if family == "bytes" else 0):
        k = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["set", "insert", "delete"]))
        if kind == "set" and k < len(data):
            data[k] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[k:k] = draw(st.binary(min_size=1, max_size=4))
        else:
            del data[k:k + draw(st.integers(1, 16))]
    return bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=mutated_files())
def test_mutated_files(tmp_path_factory, data):
    path = tmp_path_factory.getbasetemp() / "mutated.yaml"
    path.write_bytes(data)
    loads_or_says_where(str(path))
    status, _, err = check(path)
    assert status == 0 or (status == 1 and err.endswith("; nothing applied\n")), err


KEYS = sorted({*TOP_KEYS, *RULE_KEYS, *MATCH_FIELDS, *ACTIONS, *SET_FIELDS, "a", "b", "interface", "vlan",
               "time", "probability", "bitrate", "offset", "value", "mask", "base", "model", "call"})
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | st.dates()
           | st.datetimes() | st.binary(max_size=6) | st.sampled_from(["1ms", "10mbit", "50%", "tcp", "eth0.100",
                                                                      "0x0800", "10.0.0.0/8", "1000-2000", "r"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=4),
                      max_leaves=12)
RULES = st.fixed_dictionaries(
    {"name": st.sampled_from(["r", "s", "Web"]) | SCALARS},
    optional={"from": st.sampled_from(["a", "b", "any"]) | VALUES,
              "match": st.dictionaries(st.sampled_from(sorted(MATCH_FIELDS)), VALUES, max_size=4) | VALUES,
              "actions": st.lists(st.dictionaries(st.sampled_from(sorted(ACTIONS)), VALUES, min_size=1, max_size=1)
                                  | st.sampled_from(sorted(ACTIONS)) | VALUES, max_size=5) | VALUES})
VALID_PORTS = {"a": "eth0.100", "b": "eth0.200"}
DOCUMENTS = st.fixed_dictionaries(  # valid around the rules most often, so that the checker sees them
    {"version": st.one_of(*[st.just(1)] * 3, VALUES), "ports": st.one_of(*[st.just(VALID_PORTS)] * 3, VALUES)},
    optional={"forward": st.sampled_from(["both", "a-to-b"]) | VALUES, "default": st.sampled_from(["drop"]) | VALUES,
              "malformed": st.sampled_from(["drop"]) | VALUES, "hooks_path": VALUES,
              "rules": st.one_of(*[st.lists(RULES, max_size=4)] * 3, VALUES)})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=DOCUMENTS, style=st.sampled_from([None, True, False]))
def test_generated_documents(doc, style):
    loads_or_says_where("r.yaml", yaml.safe_dump(doc, default_flow_style=style, allow_unicode=True))


TOKENS = ["[", "]", "{", "}", ":", ": ", ",", "- ", "? ", "&a ", "*a", "!", "!!", "|", ">", "'", '"', "#", "%",
          "@", "`", "\n", "  ", "\t", "\r", "\x85", "\u2028", "\ufeff", "version: 1\n", "ports: {a: x, b: y}\n",
          "rules:", "name: r", "actions:", "match:", "dec_ttl", "0x", "9" * 50, "2024-13-01", "!!int ", "<<"]


@settings(max_examples=100, deadline=None)
@given(text=st.lists(st.sampled_from(TOKENS) | st.text(max_size=3), max_size=40).map("".join))
def test_generated_text(text):
    loads_or_says_where("r.yaml", text)


# ---- item 3: aliases and the size of what a file stands for ---------------------------------

def test_alias_amplification_is_refused_quickly():
    # 600 KB, 200,000 aliases of one rule: the checker would walk 4 million nodes
    head = PORTS + "rules: [&r {name: r, actions: [" + ", ".join(["dec_ttl"] * 15) + "]}"
    text = head + ",*r" * 200_000 + "]\n"
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_config("r.yaml", text)
    assert time.perf_counter() - t0 < 0.5
    # 9 nodes of version and ports, the key rules and its list, 20 nodes in the rule; 20 more per alias
    alias = (MAX_NODES - 9 - 2 - 20) // 20 + 1
    assert [str(d) for d in info.value.diagnostics] == [at(
        text, "*r", f"the file stands for more than {MAX_NODES:,} YAML nodes (an alias counts as every node it "
                    "repeats); a rule file needs far fewer", len(head) + 3 * (alias - 1))]


def test_many_aliases_are_refused_quickly():
    head = PORTS + "rules: [&a r"
    text = head + ",*a" * 200_000 + "]\n"
    t0 = time.perf_counter()
    assert errors(text) == [at(text, "*a", f"more than {MAX_ALIASES:,} aliases (*name); a rule file needs far fewer",
                               len(head) + 3 * MAX_ALIASES)]
    assert time.perf_counter() - t0 < 0.5


def test_nested_aliases_are_refused():
    # each list ten aliases of the one before: l4 stands for 111,111 nodes, l5 for 1,111,111
    levels = ["l0: &l0 [" + ", ".join(["x"] * 10) + "]"]
    levels += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 8)]
    text = "\n".join(levels) + "\n"
    # the mapping, then per level its key, its list and its ten items (an alias counts what it stands for)
    nodes, size = 1, 1
    for level in range(8):
        nodes += 2
        if nodes + 10 * size > MAX_NODES:
            break
        nodes += 10 * size
        size = 1 + 10 * size
    alias = (MAX_NODES - nodes) // size + 1
    name = f"*l{level - 1}"
    assert errors(text) == [at(text, name, f"the file stands for more than {MAX_NODES:,} YAML nodes (an alias "
                                           "counts as every node it repeats); a rule file needs far fewer",
                               text.index(name, text.index(f"l{level}:")) + len(name + ", ") * (alias - 1))]


def test_an_alias_inside_its_anchor():
    text = PORTS + "rules: &r [*r]\n"
    assert errors(text) == [at(text, "*r", "alias *r stands for a node it is inside of (an endless structure)")]


def test_the_largest_rule_files_load():
    # 256 rules of 64 actions as verbose as YAML writes them, their match shared through an alias
    rules = ["  - name: r0\n    match: &m {eth_type: ipv4, ip_proto: tcp, dst_port: ["
             + ", ".join(str(p) for p in range(1, 17)) + "]}\n"]
    rules += [f"  - name: r{i}\n    match: *m\n" for i in range(1, 256)]
    actions = "    actions: [" + ", ".join(["{dec_ttl: {}}"] * lib.RS_MAX_OPS) + "]\n"
    config = load_config("r.yaml", PORTS + "rules:\n" + "".join(rule + actions for rule in rules))
    assert {len(rule.actions) for rule in config.rules} == {lib.RS_MAX_OPS}
    # every rule the engine takes, with as many actions as the program's bytes leave (2 bytes each)
    per_rule = ((lib.RS_MAX_PROGRAM_LEN - lib.RS_HDR_LEN) // lib.RS_MAX_RULES - lib.RS_RULE_HDR_LEN) // 2
    actions = "    actions: [" + ", ".join(["{dec_ttl: {}}"] * per_rule) + "]\n"
    config = load_config("r.yaml", PORTS + "rules:\n" + "".join(f"  - name: r{i}\n" + actions
                                                                for i in range(lib.RS_MAX_RULES)))
    assert len(config.rules) == lib.RS_MAX_RULES


# ---- item 4: reloading ------------------------------------------------------------------------

RELOADED = PORTS + "rules:\n" + "".join(f"  - {{name: r{i}, match: {{dscp: {i % 64}}}}}\n"
                                        for i in range(256))


def test_repeated_loads_do_not_grow_memory():
    for _ in range(3):
        load_config("r.yaml", RELOADED)
    gc.collect()
    blocks = sys.getallocatedblocks()
    for _ in range(50):
        load_config("r.yaml", RELOADED)
    gc.collect()
    assert sys.getallocatedblocks() - blocks < 1000  # a constructor kept across loads: about 2,800 per load
    tracemalloc.start()  # bytes too, over fewer loads: tracing makes each one about 4 times slower
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(5):
            load_config("r.yaml", RELOADED)
        gc.collect()
        assert tracemalloc.get_traced_memory()[0] - before < 64 * 1024
    finally:
        tracemalloc.stop()


def test_a_constructor_per_value_costs_no_noticeable_time(monkeypatch):
    shared = reshaper.rules.values.SafeConstructor()
    times: dict[str, list[float]] = {"fresh": [], "kept": []}
    for _ in range(7):  # interleaved, so that the machine's other work falls on both alike
        for way, took in times.items():
            if way == "kept":  # one constructor for every value, as before
                monkeypatch.setattr(reshaper.rules.values, "SafeConstructor", lambda: shared)
            t0 = time.perf_counter()
            load_config("r.yaml", RELOADED)
            took.append(time.perf_counter() - t0)
            monkeypatch.undo()
    assert min(times["fresh"]) < min(times["kept"]) * 1.2


# ---- item 5: a program check --mode kernel accepts fits its netlink attribute -----------------

class Unsent(ReshaperSocket):
    """ReshaperSocket's requests encoded as sending them would, and kept instead of sent."""
    prid = 0x20  # the family id bind() would have found

    def __init__(self):  # no socket, no bind
        self.sent: list[bytes] = []

    def nlm_request(self, msg, msg_type, msg_flags):
        msg["header"]["type"], msg["header"]["flags"] = msg_type, msg_flags
        msg.encode()
        self.sent.append(msg.data)
        return iter(())


def test_the_largest_program_check_mode_kernel_accepts_encodes(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(rules_of_size(KERNEL_MAX_PROGRAM_LEN))
    status, out, err = check(path, "--mode", "kernel")
    assert (status, err) == (0, "")
    assert f"{KERNEL_MAX_PROGRAM_LEN} bytes" in out
    program = compile_rules(load_config(str(path)))
    sock = Unsent()
    sock.load(program, "eth0.100", "eth0.200")
    request = reshapermsg(sock.sent[0])
    request.decode()
    assert (request["cmd"], request.get_attr("RESHAPER_A_PROGRAM")) == (lib.RESHAPER_CMD_LOAD, program)


def test_one_byte_more_is_refused_by_check_mode_kernel(tmp_path):
    path = tmp_path / "r.yaml"
    text = rules_of_size(KERNEL_MAX_PROGRAM_LEN + 1)
    path.write_text(text)
    status, out, _ = check(path)  # the engine takes it
    modes = out.splitlines()[-1]
    assert (status, modes.startswith("  modes: ring yes, ")) == (0, True)
    assert modes.endswith(", kernel no (1 problem; see --mode kernel)")
    assert check(path, "--mode", "kernel") == (1, "", refused(at(
        text, "- {name: r0", f"expected rules that compile to at most {KERNEL_MAX_PROGRAM_LEN} bytes for the kernel "
                             f"module, these take {KERNEL_MAX_PROGRAM_LEN + 1} (the program goes in one netlink "
                             "attribute; use --mode ring or nfqueue)"), path))
    program = compile_rules(load_config(str(path)))
    with pytest.raises(KernelError, match=f"^program refused: {len(program)} bytes do not fit one netlink attribute"):
        Unsent().load(program, "eth0.100", "eth0.200")
    with pytest.raises(struct.error):  # what the limit spares the loader: pyroute2 cannot encode it
        Unsent()._request(lib.RESHAPER_CMD_LOAD, [("RESHAPER_A_PROGRAM", program)], "load")
