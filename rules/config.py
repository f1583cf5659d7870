"""Loading a reshaper configuration (version 1): load_config, the public entry of the rule language.

The file is composed into bounded YAML nodes (rules/loader.py), walked by the
field tables (rules/fields.py; their kinds, rules/kinds.py, parse each value),
checked for combinations and the engine's limits (rules/checks.py) and compiled
(rules/compiler.py). Validation is complete before the program is built: all
errors are collected and reported together, and a file with any error yields
nothing. The result and the errors are rules/model.py's, re-exported here for
the modules that import them from here.
"""
from __future__ import annotations

import os

from yaml.nodes import Node, SequenceNode

from reshaper.rules.checks import check_program, check_rule
from reshaper.rules.compiler import compile_rules
from reshaper.rules.fields import ACTION_ITEM, MATCH_FIELDS, PHASE_KEYS, PORTS, RULE_KEYS, SCHEDULE_KEYS, TOP_KEYS
from reshaper.rules.loader import compose, read_text
from reshaper.rules.model import (  # noqa: F401  (re-exported)
    Action, Checker, Config, ConfigError, Diagnostic, Match, Phase, Port, Rule, Schedule)
from reshaper.rules.delivery_trace import DeliveryTrace, read_delivery_trace
from reshaper.rules.schedule_file import read_schedule_file
from reshaper.rules.values import is_null, node_kind, read_mapping

PHASE_LIMIT = SCHEDULE_KEYS["phases"].value.most

__all__ = ["load_config", "Action", "Config", "ConfigError", "Diagnostic", "Match", "Port", "Rule"]


def load_config(path: str, text: str | None = None, hooks_path: list[str] | None = None) -> Config:
    """Reads and validates a configuration file; raises ConfigError with every problem.

    hooks_path adds directories python hooks may be loaded from to the file's own hooks_path.
    Whatever the file holds, ConfigError is the only exception; a Config returned compiles
    to a program the engine's verifier accepts.
    """
    if text is None:
        text = read_text(path)
    try:
        return _load(path, text, hooks_path)
    except ConfigError:
        raise
    except Exception as exc:  # the last line of defence: a problem the checks did not foresee
        raise ConfigError([Diagnostic(path, 1, 1, f"cannot check the file ({type(exc).__name__}: {exc})")]) from None


def _top(chk: Checker, top: dict[str, Node], key: str, *args):
    """A top-level key's value: parsed by its kind when given, else its default."""
    field = TOP_KEYS[key]
    return chk.parse(top[key], field.value.parse, *args) if key in top else field.default


def _load(path: str, text: str, hooks_path: list[str] | None) -> Config:
    root = compose(path, text)
    chk = Checker(path)
    top = chk.parse(root, read_mapping, TOP_KEYS, chk)
    if top is None or "version" not in top:
        raise ConfigError(chk.errors)

    version = _top(chk, top, "version")
    ports = _load_ports(chk, top["ports"]) if "ports" in top else {}
    forward = _top(chk, top, "forward")
    default = _top(chk, top, "default")
    malformed = _top(chk, top, "malformed")
    hooks = _top(chk, top, "hooks_path", os.path.dirname(os.path.abspath(path))) or []
    hooks += [os.path.abspath(h) for h in hooks_path or []]
    rules_node = top.get("rules")
    rules = _load_rules(chk, rules_node) if rules_node is not None else []
    for rule in rules:
        hook = rule.action("python")
        if hook is not None and not hooks:
            chk.error(hook.node, f"rule {rule.name!r}: python hooks are loaded only from directories you name: "
                                 "set hooks_path in the file (or give --hooks-path)")
    if chk.errors or version is None:
        raise ConfigError(chk.errors)
    config = Config(path, ports, forward, default, malformed, rules, hooks, rules_node)
    config.program = compile_rules(config)  # what the checks missed and the engine refuses: a ConfigError too
    return config


def _load_ports(chk: Checker, node: Node) -> dict[str, Port]:
    spec = chk.parse(node, read_mapping, PORTS, chk, "ports: ")
    if spec is None:
        return {}
    ports = {}
    for name, value in spec.items():
        port = chk.parse(value, PORTS[name].value.parse)
        if port is not None:
            ports[name] = port
    if len(ports) == 2 and (ports["a"].interface, ports["a"].vlan) == (ports["b"].interface, ports["b"].vlan):
        chk.error(spec["b"], "expected port b to differ from port a (same interface and VLAN)")
    return ports


def _load_rules(chk: Checker, node: Node) -> list[Rule]:
    if not isinstance(node, SequenceNode):
        chk.error(node, f"expected a list of rules, got a {node_kind(node)}")
        return []
    rules, names = [], {}
    traces: dict[str, DeliveryTrace | ConfigError] = {}   # each trace file read once, however many name it
    for rule_node in node.value:
        rule = _load_rule(chk, rule_node, traces)
        if rule is None:
            continue
        if rule.name in names:
            chk.error(rule.node, f"rule name {rule.name!r} already used by the rule at line {names[rule.name]}")
        else:
            names[rule.name] = rule.node.start_mark.line + 1
        rules.append(rule)
    check_program(chk, rules, node)
    return rules


def _load_rule(chk: Checker, node: Node, traces: dict) -> Rule | None:
    spec = chk.parse(node, read_mapping, RULE_KEYS, chk)
    if spec is None or "name" not in spec:
        return None
    name = chk.parse(spec["name"], RULE_KEYS["name"].value.parse)
    from_port = RULE_KEYS["from"].default
    if "from" in spec:
        from_port = chk.parse(spec["from"], RULE_KEYS["from"].value.parse, context="from: ")
    ctx = f"rule {name!r}: " if name else ""
    matches = _load_matches(chk, spec["match"], ctx) if "match" in spec else []
    actions = _load_actions(chk, spec["actions"], ctx) if "actions" in spec else []
    schedule = _load_schedule(chk, spec["schedule"], ctx) if "schedule" in spec else None
    rule = Rule(name or "", from_port or RULE_KEYS["from"].default, matches, actions, node, schedule)
    _load_delivery_traces(chk, rule, ctx, traces)
    check_rule(chk, rule, ctx)
    return rule if name is not None and from_port is not None else None


def _load_matches(chk: Checker, node: Node, ctx: str) -> list[Match]:
    if is_null(node):
        return []
    spec = chk.parse(node, read_mapping, MATCH_FIELDS, chk, ctx + "match: ", context=ctx + "match: ")
    if spec is None:
        return []
    matches = []
    for field, value_node in spec.items():
        value = chk.parse(value_node, MATCH_FIELDS[field].value.parse, context=f"{ctx}match.{field}: ")
        if value is not None:
            matches.append(Match(field, value, value_node))
    return matches


def _load_actions(chk: Checker, node: Node, ctx: str) -> list[Action]:
    if not isinstance(node, SequenceNode):
        chk.error(node, f"{ctx}expected a list of actions (e.g. [dec_ttl] or - delay: {{time: 10ms}}), "
                        f"got a {node_kind(node)}")
        return []
    actions = []
    for item in node.value:
        action = chk.parse(item, ACTION_ITEM.parse, context=ctx)
        if action is not None:
            actions.append(action)
    return actions


def _load_schedule(chk: Checker, node: Node, ctx: str) -> Schedule | None:
    ctx += "schedule: "
    spec = chk.parse(node, read_mapping, SCHEDULE_KEYS, chk, ctx, context=ctx)
    if spec is None:
        return None
    flags = {key: chk.parse(spec[key], SCHEDULE_KEYS[key].value.parse, context=f"{ctx}{key}: ")
             if key in spec else SCHEDULE_KEYS[key].default for key in ("repeat", "keep_time")}
    if ("phases" in spec) == ("file" in spec):
        chk.error(node, f"{ctx}expected phases or a file of them, {'not both' if 'file' in spec else 'got neither'}")
        return None
    name = None
    if "phases" in spec:
        phases = _load_phases(chk, spec["phases"], ctx)
    else:
        name = chk.parse(spec["file"], SCHEDULE_KEYS["file"].value.parse, context=f"{ctx}file: ")
        if name is None:
            return None
        try:
            phases = read_schedule_file(os.path.join(os.path.dirname(chk.path), name))
        except ConfigError as exc:
            chk.errors += exc.diagnostics
            chk.error(spec["file"], f"{ctx}file: {name} is not a schedule (its errors name its lines)")
            return None
    # what parsed, also when something did not: the phases' actions are checked all the same
    return Schedule(phases, bool(flags["repeat"]), bool(flags["keep_time"]), node, name) if phases else None


def _load_phases(chk: Checker, node: Node, ctx: str) -> list[Phase]:
    if not isinstance(node, SequenceNode) or not node.value:
        chk.error(node, f"{ctx}phases: expected a list of phases like - {{for: 10s, actions: [drop]}}, "
                        f"got {'an empty list' if isinstance(node, SequenceNode) else 'a ' + node_kind(node)}")
        return []
    if len(node.value) > PHASE_LIMIT:
        chk.error(node, f"{ctx}phases: expected at most {PHASE_LIMIT} phases, got {len(node.value)}")
        return []
    phases = []
    for i, item in enumerate(node.value):
        at = f"{ctx}phases[{i}]: "
        spec = chk.parse(item, read_mapping, PHASE_KEYS, chk, at, context=at)
        duration, actions = None, None
        if spec is not None and "for" in spec:
            duration = chk.parse(spec["for"], PHASE_KEYS["for"].value.parse, context=f"{at}for: ")
            if duration == 0:
                chk.error(spec["for"], f"{at}for: expected a phase longer than 0")
            actions = _load_actions(chk, spec["actions"], at) if "actions" in spec else None
        # a phase that is wrong (an error is recorded) keeps its place: the checks name phases by index
        phases.append(Phase(duration or 0, actions, item))
    return phases


def _load_delivery_traces(chk: Checker, rule: Rule, ctx: str, traces: dict) -> None:
    """Each rate's bit rate or delivery trace, the trace read into its params ("delivery"); traces: the
    files read so far (path: the trace, or the ConfigError it gave, whose errors are reported once)."""
    for actions in rule.action_lists():
        for action in actions:
            if action.kind != "rate":
                continue
            given = [key for key in ("bitrate", "trace") if action.params[key] is not None]
            if len(given) != 1:
                chk.error(action.node, f"{ctx}rate: expected a bitrate or a trace, "
                                       f"{'not both' if given else 'got neither'}")
            elif given == ["trace"]:
                name = action.params["trace"]
                path = os.path.join(os.path.dirname(chk.path), name)
                if path not in traces:
                    try:
                        traces[path] = read_delivery_trace(path)
                    except ConfigError as exc:
                        traces[path] = exc
                        chk.errors += exc.diagnostics
                if isinstance(traces[path], ConfigError):
                    chk.error(action.node, f"{ctx}rate: trace: {name} is not a delivery trace "
                                           "(its errors name its lines)")
                else:
                    action.params["delivery"] = traces[path]
