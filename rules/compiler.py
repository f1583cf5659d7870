"""Compiling a validated Config into the binary rule program (engine/PROGRAM.md).

The opcodes and field numbers come from rs_program.h through the cffi
extension, so the compiler and the engine cannot disagree on them; the names
the language gives the engine's numbers (bases, distributions, from) are
rules/fields.py's. rules/checks.py checks the engine's limits at the place in
the file that passes them; what it missed is a ConfigError here too, never
another exception.
"""
from __future__ import annotations

import struct

from reshaper._native import lib
from reshaper.rules.binding import ProgramError, program_verify
from reshaper.rules.delivery_trace import DeliveryTrace
from reshaper.rules.fields import BASES, DISTRIBUTIONS, ETH_TYPES, FROM_PORTS, VLAN_TPIDS
from reshaper.rules.model import Action, Config, ConfigError, Diagnostic, Match, Phase, Rule

_RANGE_FIELDS = {
    "vlan": lib.RS_F_VLAN, "vlan_pcp": lib.RS_F_VLAN_PCP, "ip_proto": lib.RS_F_IP_PROTO,
    "src_port": lib.RS_F_SRC_PORT, "dst_port": lib.RS_F_DST_PORT, "dscp": lib.RS_F_DSCP,
    "ttl": lib.RS_F_TTL, "length": lib.RS_F_LENGTH,
}
_SET_FIELDS = {
    "dscp": lib.RS_F_DSCP, "ecn": lib.RS_F_ECN, "ttl": lib.RS_F_TTL,
    "src_port": lib.RS_F_SRC_PORT, "dst_port": lib.RS_F_DST_PORT,
    "vlan": lib.RS_F_VLAN, "vlan_pcp": lib.RS_F_VLAN_PCP,
}
_WHICH = {"src": lib.RS_SRC, "dst": lib.RS_DST}


def probability(p: float) -> int:
    """A probability as the engine's u32 threshold (event when rs_prng_u32() < p)."""
    if p >= 1.0:
        return lib.RS_PROB_ALWAYS
    return min(round(p * 2**32), lib.RS_PROB_ALWAYS - 1)


def _op(code: int, operands: bytes = b"") -> bytes:
    return struct.pack("<BB", code, len(operands)) + operands


def _ranges(field: int, ranges: list[tuple[int, int]]) -> bytes:
    body = struct.pack("<BB", field, len(ranges))
    body += b"".join(struct.pack("<HH", lo, hi) for lo, hi in ranges)
    return _op(lib.RS_M_RANGE, body)


def _bytes_operands(spec: dict) -> bytes:
    value = spec["value"]
    return struct.pack("<BHB", BASES[spec["base"]], spec["offset"], len(value)) + value + spec["mask"]


def _ip_operands(which: str, address) -> bytes:
    family = lib.RS_FAMILY_IPV4 if address.version == 4 else lib.RS_FAMILY_IPV6
    return struct.pack("<BB", _WHICH[which], family) + address.packed


def compile_match(m: Match) -> bytes:
    if m.field in ("eth_src", "eth_dst"):
        mac, mask = m.value
        return _op(lib.RS_M_ETH, bytes([_WHICH[m.field[4:]]]) + mac + mask)
    if m.field == "eth_type":
        if m.value == "vlan":
            return _op(lib.RS_M_HAS_VLAN)
        ethertype = ETH_TYPES.get(m.value, m.value)
        if ethertype in VLAN_TPIDS:
            return _op(lib.RS_M_HAS_VLAN)
        return _ranges(lib.RS_F_ETH_TYPE, [(ethertype, ethertype)])
    if m.field in ("ip_src", "ip_dst"):
        net = m.value
        mask = net.netmask.packed
        return _op(lib.RS_M_IP, _ip_operands(m.field[3:], net.network_address) + mask)
    if m.field == "tcp_flags":
        mask, value = m.value
        return _op(lib.RS_M_TCP_FLAGS, struct.pack("<BB", mask, value))
    if m.field == "bytes":
        return _op(lib.RS_M_BYTES, _bytes_operands(m.value))
    return _ranges(_RANGE_FIELDS[m.field], m.value)


def compile_action(a: Action, traces: dict[str, int] | None = None) -> list[bytes]:
    """An action's ops; traces: the program's delivery traces by path, their index (None: sizes only)."""
    p = a.params
    if a.kind == "set":
        ops = []
        for key, value in p.items():
            if key in ("eth_src", "eth_dst"):
                ops.append(_op(lib.RS_A_SET_ETH, bytes([_WHICH[key[4:]]]) + value))
            elif key in ("ip_src", "ip_dst"):
                ops.append(_op(lib.RS_A_SET_IP, _ip_operands(key[3:], value)))
            else:
                ops.append(_op(lib.RS_A_SET_FIELD, struct.pack("<BH", _SET_FIELDS[key], value)))
        return ops
    simple = {"dec_ttl": lib.RS_A_DEC_TTL, "pop_vlan": lib.RS_A_POP_VLAN, "drop": lib.RS_A_DROP}
    if a.kind in simple:
        return [_op(simple[a.kind])]
    if a.kind == "push_vlan":
        tci = (p["pcp"] << 13) | p["vlan"]
        return [_op(lib.RS_A_PUSH_VLAN, struct.pack("<HH", p["tpid"], tci))]
    if a.kind == "payload":
        return [_op(lib.RS_A_PAYLOAD, _bytes_operands(p))]
    if a.kind == "truncate":
        return [_op(lib.RS_A_TRUNCATE, struct.pack("<H", p["length"]))]
    if a.kind == "duplicate":
        return [_op(lib.RS_A_DUPLICATE, struct.pack("<BI", p["copies"], probability(p["probability"])))]
    if a.kind == "corrupt":
        return [_op(lib.RS_A_CORRUPT, struct.pack("<I", probability(p["probability"])))]
    if a.kind == "loss" and p["model"] == "gilbert-elliott":
        return [_op(lib.RS_A_LOSS_GE, struct.pack("<IIII", *(probability(p[k]) for k in "prhk")))]
    if a.kind == "loss":
        return [_op(lib.RS_A_LOSS, struct.pack("<II", probability(p["probability"]),
                                              probability(p["correlation"])))]
    if a.kind == "delay":
        return [_op(lib.RS_A_DELAY, struct.pack("<QQBI", p["time"], p["jitter"],
                                               DISTRIBUTIONS[p["distribution"]],
                                               probability(p["correlation"])))]
    if a.kind == "reorder":
        return [_op(lib.RS_A_REORDER, struct.pack("<II", probability(p["probability"]), p["gap"]))]
    if a.kind == "python":
        return []  # carried out by the carrier, for frames whose verdict names this rule
    if a.kind == "rate" and p["trace"] is not None:
        index = traces[p["delivery"].path] if traces is not None else 0
        return [_op(lib.RS_A_RATE_TRACE, struct.pack("<HhH", index, p["overhead"], p["limit"]))]
    if a.kind == "rate":
        # no bit rate either: an error rules/config.py reports; the op still has its size
        return [_op(lib.RS_A_RATE, struct.pack("<QhH", p["bitrate"] or 0, p["overhead"], p["limit"]))]
    raise AssertionError(f"no compiler for action {a.kind}")


def action_ops(actions: list[Action], reorder: Action | None,
               traces: dict[str, int] | None = None) -> list[tuple[Action, bytes]]:
    """A list of actions' ops in program order, each with the action it comes from."""
    ops = []
    for a in actions:
        if a.kind == "reorder":
            continue
        if a.kind == "delay" and reorder is not None:
            # the engine decides reordering at the delay, so it comes right before it
            ops += [(reorder, op) for op in compile_action(reorder)]
        ops += [(a, op) for op in compile_action(a, traces)]
    return ops


def _reorder(actions: list[Action]) -> Action | None:
    return next((a for a in actions if a.kind == "reorder"), None)


def rule_ops(rule: Rule, phase: int | None = None,
             traces: dict[str, int] | None = None) -> tuple[list[tuple[Match, bytes]], list[tuple[Action, bytes]]]:
    """A rule's match ops and action ops (its own, or those of its schedule's phase), in program order, each
    with what in the file it comes from (a match field compiles to one op; an action to none or more:
    `reshaper explain` names them)."""
    matches = [(m, compile_match(m)) for m in rule.matches]
    actions = rule.actions
    if phase is not None and rule.schedule.phases[phase].actions is not None:
        actions = rule.schedule.phases[phase].actions
    return matches, action_ops(actions, _reorder(actions), traces)


def _phase(phase: Phase, traces: dict[str, int]) -> bytes:
    if phase.actions is None:
        return struct.pack("<QBBH", phase.duration_ns, 0, lib.RS_PHF_OWN, lib.RS_PHASE_HDR_LEN)
    ops = [op for _, op in action_ops(phase.actions, _reorder(phase.actions), traces)]
    return struct.pack("<QBBH", phase.duration_ns, len(ops), 0,
                       lib.RS_PHASE_HDR_LEN + sum(map(len, ops))) + b"".join(ops)


def _delay_flags(actions: list[Action]) -> int:
    delay = next((a for a in actions if a.kind == "delay"), None)
    return lib.RS_RF_REORDER_ON_JITTER if delay is not None and delay.params["reorder_on_jitter"] else 0


def compile_rule(rule: Rule, traces: dict[str, int] | None = None) -> bytes:
    match_ops, action_ops_ = rule_ops(rule, traces=traces)
    matches, actions = [op for _, op in match_ops], [op for _, op in action_ops_]
    # one flag for the rule: rules/checks.py holds every delay of the rule to the same reorder_on_jitter
    flags = 0
    for listed in rule.action_lists():
        flags |= _delay_flags(listed)
    body = b"".join(matches) + b"".join(actions)
    phases = 0
    if rule.schedule is not None:
        schedule = rule.schedule
        flags |= lib.RS_RF_SCHEDULE
        flags |= lib.RS_RF_REPEAT if schedule.repeat else 0
        flags |= lib.RS_RF_KEEP_TIME if schedule.keep_time else 0
        phases = len(schedule.phases)
        body += b"".join(_phase(p, traces) for p in schedule.phases)
    header = struct.pack("<HBBBBH", lib.RS_RULE_HDR_LEN + len(body), FROM_PORTS[rule.from_port], flags,
                         len(matches), len(actions), phases)
    return header + body


def delivery_traces(rules: list[Rule]) -> list[DeliveryTrace]:
    """The delivery traces the rules' rates read, each once, in the order they are first named."""
    found: dict[str, DeliveryTrace] = {}
    for rule in rules:
        for actions in rule.action_lists():
            for a in actions:
                if a.kind == "rate" and a.params.get("delivery") is not None:
                    found.setdefault(a.params["delivery"].path, a.params["delivery"])
    return list(found.values())


def compile_rules(config: Config) -> bytes:
    """The program for a validated configuration, accepted by the engine's verifier.

    Raises ConfigError at the rule or the rules list when it cannot be built or verified.
    """
    compiled, problems = [], []
    delivery = delivery_traces(config.rules)
    traces = {t.path: i for i, t in enumerate(delivery)}
    for r in config.rules:
        try:
            compiled.append(compile_rule(r, traces))
        except Exception as exc:  # e.g. struct.error: a value too large for its field
            problems.append(Diagnostic.at(config.path, r.node.start_mark,
                                          f"rule {r.name!r}: cannot be compiled ({type(exc).__name__}: {exc})"))
    if problems:
        raise ConfigError(problems)
    flags = 0
    if config.default == "drop":
        flags |= lib.RS_PF_DEFAULT_DROP
    if config.forward in ("both", "a-to-b"):
        flags |= lib.RS_PF_FWD_A_TO_B
    if config.forward in ("both", "b-to-a"):
        flags |= lib.RS_PF_FWD_B_TO_A
    if config.malformed == "drop":
        flags |= lib.RS_PF_MALFORMED_DROP
    rules = b"".join(compiled) + b"".join(t.program_bytes() for t in delivery)
    length = lib.RS_HDR_LEN + len(rules)
    try:
        header = struct.pack("<IHHHHI", lib.RS_MAGIC, lib.RS_VERSION, flags, len(config.rules), len(delivery),
                             length)
        program_verify(header + rules)
    except (struct.error, ProgramError) as exc:
        mark = config.rules_node.start_mark if config.rules_node is not None else None
        raise ConfigError([Diagnostic.at(config.path, mark, f"rules: {exc}")]) from None
    return header + rules
