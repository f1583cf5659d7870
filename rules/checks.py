"""What is checked beyond each value: combinations within a rule, and the engine's limits on the program.

Each value parses on its own (rules/values.py, rules/fields.py); a rule can still
pair fields that never match together, or actions that never run. These checks
report them at the field or action that is wrong. The program's limits are
checked at the rule or the rules list that passes them, with the sizes the
compiler gives each rule's ops.
"""
from __future__ import annotations

from yaml.nodes import Node

from reshaper._native import lib
from reshaper.rules.compiler import compile_action, compile_match, delivery_traces
from reshaper.rules.fields import IP_PROTOS
from reshaper.rules.model import Action, Checker, Rule
from reshaper.rules.values import node_text

L3_MATCH_FIELDS = ("ip_src", "ip_dst", "ip_proto", "src_port", "dst_port", "tcp_flags", "dscp", "ttl")
TCP, UDP, ICMP, ICMPV6 = IP_PROTOS["tcp"], IP_PROTOS["udp"], IP_PROTOS["icmp"], IP_PROTOS["icmpv6"]
L4_PORT_PROTOS = (TCP, UDP)  # the engine reads ports of TCP and UDP
# a rule has at most one of each: the engine keeps one timing state of each per rule (rs_verify_rule,
# rules/engine/engine.c)
TIMING_ACTIONS = ("loss", "delay", "reorder", "rate")
# timing a hook's frames would wait for: a hook rule's frames leave when the hook returns
NOT_WITH_HOOKS = ("delay", "reorder", "rate", "duplicate")


def _protos(rule: Rule) -> set[int] | None:
    m = rule.match("ip_proto")
    if m is None:
        return None
    return {p for lo, hi in m.value for p in range(lo, hi + 1)}


def check_rule(chk: Checker, rule: Rule, ctx: str) -> None:
    """Combinations that can never match or never apply."""
    eth = rule.match("eth_type")
    not_ip = eth is not None and eth.value not in ("ipv4", "ipv6")
    if not_ip:
        for m in rule.matches:
            if m.field in L3_MATCH_FIELDS:
                chk.error(m.node, f"{ctx}match.{m.field} makes no sense with eth_type: {eth.value} "
                                  f"(expected eth_type ipv4 or ipv6, or no eth_type)")
    family = 4 if eth is not None and eth.value == "ipv4" else 6 if eth is not None and eth.value == "ipv6" else None
    for field in ("ip_src", "ip_dst"):
        m = rule.match(field)
        if m is None:
            continue
        if family is not None and m.value.version != family:
            chk.error(m.node, f"{ctx}match.{field}: expected an IPv{family} network to go with "
                              f"{'eth_type: ipv4' if family == 4 else 'eth_type: ipv6 or the other address'}, "
                              f"got {m.value}")
        family = family or m.value.version
    protos = _protos(rule)
    proto_node = rule.match("ip_proto").node if protos is not None else None
    if protos is not None and family == 6 and ICMP in protos and len(protos) == 1:
        chk.error(proto_node, f"{ctx}match.ip_proto: icmp is IPv4's; for IPv6 expected icmpv6 ({ICMPV6})")
    if protos is not None and family == 4 and ICMPV6 in protos and len(protos) == 1:
        chk.error(proto_node, f"{ctx}match.ip_proto: icmpv6 is IPv6's; for IPv4 expected icmp ({ICMP})")
    for field in ("src_port", "dst_port"):
        m = rule.match(field)
        if m is not None and protos is not None and not protos & set(L4_PORT_PROTOS):
            chk.error(m.node, f"{ctx}match.{field} needs ip_proto tcp or udp, not {node_text(proto_node)}")
    m = rule.match("tcp_flags")
    if m is not None and protos is not None and TCP not in protos:
        chk.error(m.node, f"{ctx}match.tcp_flags needs ip_proto tcp, not {node_text(proto_node)}")
    m = rule.match("bytes")
    if m is not None and m.value["base"] == "l4" and not_ip:
        chk.error(m.node, f"{ctx}match.bytes: base l4 makes no sense with eth_type: {eth.value}")

    _check_actions(chk, rule, rule.actions, ctx, not_ip, family, protos, proto_node)
    if rule.schedule is not None:
        if rule.action("python") is not None:
            chk.error(rule.schedule.node, f"{ctx}schedule cannot go with a python hook: the hook runs on "
                                          "every frame of the rule, whatever its phase")
        for i, phase in enumerate(rule.schedule.phases):
            if phase.actions is not None:
                _check_actions(chk, rule, phase.actions, f"{ctx}schedule: phases[{i}]: ", not_ip, family, protos,
                               proto_node, in_phase=True)
        # the engine keeps one such flag a rule (rules/engine/rs_program.h, RS_RF_REORDER_ON_JITTER)
        delays = [a for actions in rule.action_lists() for a in actions if a.kind == "delay"]
        for delay in delays[1:]:
            if delay.params["reorder_on_jitter"] != delays[0].params["reorder_on_jitter"]:
                chk.error(delay.node, f"{ctx}delay: expected the same reorder_on_jitter in every delay of a "
                                      "scheduled rule (the rule's own and its phases')")


def _check_actions(chk, rule, actions, ctx, not_ip, family, protos, proto_node, in_phase=False) -> None:
    """One list of actions: the rule's own or a phase's."""
    eth = rule.match("eth_type")
    seen: dict[str, Action] = {}
    for action in actions:
        kind = action.kind
        if (kind in TIMING_ACTIONS or kind == "python") and kind in seen:
            chk.error(action.node, f"{ctx}expected at most one {kind} action in a rule "
                                   f"(the first is at line {seen[kind].node.start_mark.line + 1})")
        seen.setdefault(kind, action)
        if "drop" in seen and seen["drop"] is not action:
            chk.error(action.node, f"{ctx}{action.kind}: actions after drop never run")
        if action.kind == "set":
            _check_set(chk, rule, action, ctx, not_ip, family, protos, proto_node)
        if action.kind == "dec_ttl" and not_ip:
            chk.error(action.node, f"{ctx}dec_ttl makes no sense with eth_type: {eth.value}")
    if "python" in seen and in_phase:
        chk.error(seen["python"].node, f"{ctx}python: a hook cannot be in a phase (it would run in some phases "
                                       "and not in others); give the rule its own hook")
    elif "python" in seen:
        if actions[-1] is not seen["python"]:
            chk.error(seen["python"].node, f"{ctx}python: expected the hook to be the rule's last action "
                                           "(actions before it run first, in the engine)")
        for kind in NOT_WITH_HOOKS:
            if kind in seen:
                chk.error(seen[kind].node, f"{ctx}{kind} cannot go with a python hook in one rule: "
                                           "the hook's frames leave when it returns")
    if "reorder" in seen and "delay" not in seen:
        chk.error(seen["reorder"].node, f"{ctx}reorder needs a delay action in the same rule "
                                        "(frames are reordered by skipping the delay)")


def _check_set(chk, rule, action, ctx, not_ip, family, protos, proto_node) -> None:
    for key, value in action.params.items():
        if key in ("ip_src", "ip_dst", "dscp", "ecn", "ttl", "src_port", "dst_port") and not_ip:
            chk.error(action.node, f"{ctx}set.{key} makes no sense with eth_type: {rule.match('eth_type').value}")
        elif key in ("ip_src", "ip_dst") and family is not None and value.version != family:
            chk.error(action.node, f"{ctx}set.{key}: expected an IPv{family} address, as the rule matches "
                                   f"IPv{family} packets, got {value}")
        elif key in ("src_port", "dst_port") and protos is not None and not protos & set(L4_PORT_PROTOS):
            chk.error(action.node, f"{ctx}set.{key} needs ip_proto tcp or udp, not {node_text(proto_node)}")


def check_program(chk: Checker, rules: list[Rule], node: Node) -> None:
    """The engine's limits on a program (rules/engine/rs_program.h), at the rule or the list past them;
    the compiler says how many ops and bytes each rule takes."""
    length = lib.RS_HDR_LEN
    for rule in rules:
        ctx = f"rule {rule.name!r}: "
        try:
            ops = [compile_match(m) for m in rule.matches] + [op for a in rule.actions for op in compile_action(a)]
        except Exception as exc:  # a value the parsers let through and the program cannot carry
            chk.error(rule.node, f"{ctx}cannot be compiled ({type(exc).__name__}: {exc})")
            continue
        actions = len(ops) - len(rule.matches)
        if actions > lib.RS_MAX_OPS:
            per_field = " (a set takes one per field)" if rule.action("set") else ""
            chk.error(rule.node, f"{ctx}expected at most {lib.RS_MAX_OPS} actions in a rule, got {actions}{per_field}")
        length += lib.RS_RULE_HDR_LEN + sum(map(len, ops))
        for i, phase in enumerate(rule.schedule.phases if rule.schedule else []):
            phase_ops = [op for a in phase.actions or [] for op in compile_action(a)]
            if len(phase_ops) > lib.RS_MAX_OPS:
                chk.error(phase.node, f"{ctx}schedule: phases[{i}]: expected at most {lib.RS_MAX_OPS} actions, "
                                      f"got {len(phase_ops)}")
            length += lib.RS_PHASE_HDR_LEN + sum(map(len, phase_ops))
    delivery = delivery_traces(rules)
    if len(delivery) > lib.RS_MAX_TRACES:
        chk.error(node, f"expected at most {lib.RS_MAX_TRACES} delivery traces, these rules name {len(delivery)}")
    length += sum(len(t.program_bytes()) for t in delivery)
    if len(rules) > lib.RS_MAX_RULES:
        chk.error(node, f"expected at most {lib.RS_MAX_RULES} rules, got {len(rules)}")
    elif length > lib.RS_MAX_PROGRAM_LEN:
        chk.error(node, f"expected rules that compile to at most {lib.RS_MAX_PROGRAM_LEN} bytes, these take {length}")
