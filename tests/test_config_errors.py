"""Bad configurations: each class of mistake gives FILE:LINE:COL and what was expected."""
import subprocess
import sys

import pytest

from reshaper.rules.config import load_config
from tests.helpers.config_errors import PORTS, at, errors, rule_text

CASES = [
    # (name, file text, token the error points at, message)
    ("not yaml", "version: 1\nports: [a\n", None, "not valid YAML: expected ',' or ']', but got '<stream end>'"),
    ("empty", "", None, "the file is empty; expected a mapping with version: 1, ports and rules"),
    ("version", "version: 2\nports: {a: x, b: y}\n", "2", "expected version from 1 to 1, got 2"),
    ("unknown top key", PORTS + "colour: red\n", "colour",
     "unknown key 'colour'; expected one of version, ports, forward, default, malformed, hooks_path, rules"),
    ("port missing", "version: 1\nports: {a: eth0.100}\n", "{a", "ports: missing key 'b'"),
    ("port c", "version: 1\nports: {a: x, b: y, c: z}\n", "c:", "ports: unknown key 'c'; expected one of a, b"),
    ("same ports", "version: 1\nports: {a: {interface: eth0, vlan: 5}, b: {interface: eth0, vlan: 5}}\n",
     "{interface: eth0, vlan: 5}}", "expected port b to differ from port a (same interface and VLAN)"),
    ("vlan range", "version: 1\nports: {a: {interface: eth0, vlan: 4095}, b: y}\n", "4095",
     "expected a VLAN id from 1 to 4094, got 4095"),
    ("bad interface", "version: 1\nports: {a: eth0/1, b: y}\n", "eth0/1",
     "expected an interface name (1-15 characters, no spaces or '/'), got 'eth0/1'"),
    ("forward", PORTS + "forward: sideways\n", "sideways", "expected one of both, a-to-b, b-to-a, got 'sideways'"),
    ("default", PORTS + "default: maybe\n", "maybe", "expected one of forward, drop, got 'maybe'"),
]

RULE_CASES = [
    # (name, one rule, token the error points at, message)
    ("rule name", "{name: Web Proxy}", "Web",
     "expected a rule name of 1-32 characters from a-z, 0-9, _ and -, got 'Web Proxy'"),
    ("from c", "{name: r, from: c}", "c}", "from: expected one of a, b, any, got 'c'"),
    ("unknown match", "{name: r, match: {colour: red}}", "colour",
     "rule 'r': match: unknown key 'colour'; expected one of eth_src, eth_dst, eth_type, vlan, "
     "vlan_pcp, ip_src, ip_dst, ip_proto, src_port, dst_port, tcp_flags, dscp, ttl, length, bytes"),
    ("cidr host bits", "{name: r, match: {ip_src: 10.0.0.1/24}}", "10.",
     "rule 'r': match.ip_src: expected a network address: 10.0.0.1/24 has host bits set (did you mean 10.0.0.0/24?)"),
    ("cidr garbage", "{name: r, match: {ip_dst: 10.0.0.300}}", "10.",
     "rule 'r': match.ip_dst: expected an IPv4 or IPv6 address or CIDR network, got '10.0.0.300'"),
    ("mac", "{name: r, match: {eth_src: '02:00:00:00:00'}}", "'02",
     "rule 'r': match.eth_src: expected a MAC address like 02:00:00:00:00:01 (optional /mask), got '02:00:00:00:00'"),
    ("port range", "{name: r, match: {ip_proto: tcp, dst_port: 2000-1000}}", "2000",
     "rule 'r': match.dst_port: expected a range low-high, got '2000-1000' (low above high)"),
    ("port too big", "{name: r, match: {dst_port: [80, 70000]}}", "70000",
     "rule 'r': match.dst_port: expected values from 0 to 65535, got '70000'"),
    ("tcp flags", "{name: r, match: {tcp_flags: 'syn,!fun'}}", "'syn",
     "rule 'r': match.tcp_flags: expected TCP flags like \"syn,!ack\" from fin, syn, rst, psh, "
     "ack, urg, ece, cwr (each once, ! to require it clear), got 'syn,!fun'"),
    ("ip field with arp", "{name: r, match: {eth_type: arp, ip_src: 10.0.0.0/8}}", "10.",
     "rule 'r': match.ip_src makes no sense with eth_type: arp (expected eth_type ipv4 or ipv6, or no eth_type)"),
    ("family clash", "{name: r, match: {eth_type: ipv4, ip_dst: '2001:db8::/32'}}", "'2001",
     "rule 'r': match.ip_dst: expected an IPv4 network to go with eth_type: ipv4, got 2001:db8::/32"),
    ("icmp on v6", "{name: r, match: {ip_dst: '2001:db8::/32', ip_proto: icmp}}", "icmp",
     "rule 'r': match.ip_proto: icmp is IPv4's; for IPv6 expected icmpv6 (58)"),
    ("ports with icmp", "{name: r, match: {ip_proto: icmp, dst_port: 80}}", "80",
     "rule 'r': match.dst_port needs ip_proto tcp or udp, not icmp"),
    ("bytes mask", "{name: r, match: {bytes: {offset: 12, value: '0x0800', mask: '0xff'}}}", "'0xff'",
     "rule 'r': match.bytes: expected a mask as long as the value (2 bytes), got 1"),
    ("unknown action", "{name: r, actions: [frobnicate]}", "frobnicate",
     "rule 'r': unknown action 'frobnicate'; expected one of set, dec_ttl, pop_vlan, drop, "
     "push_vlan, payload, truncate, duplicate, corrupt, loss, delay, reorder, python, rate"),
    ("bare needs params", "{name: r, actions: [delay]}", "delay",
     "rule 'r': action 'delay' needs parameters, e.g. - delay: {...}"),
    ("time unit", "{name: r, actions: [{delay: {time: 10}}]}", "10}",
     "rule 'r': delay: time: expected a time with a unit (e.g. 250us, 20ms, 1s), got '10'"),
    ("probability", "{name: r, actions: [{loss: {probability: 120%}}]}", "120%",
     "rule 'r': loss: probability: expected a probability between 0% and 100%, got '120%'"),
    ("bitrate", "{name: r, actions: [{rate: {bitrate: 10mbps}}]}", "10mbps",
     "rule 'r': rate: bitrate: expected a bit rate with a unit (e.g. 512kbit, 10mbit, 1gbit), got '10mbps'"),
    ("gilbert-elliott", "{name: r, actions: [{loss: {model: gilbert-elliott, p: 1%}}]}", "{model",
     "rule 'r': loss: missing key 'r'"),
    ("reorder without delay", "{name: r, actions: [{reorder: {probability: 25%}}]}", "{reorder",
     "rule 'r': reorder needs a delay action in the same rule (frames are reordered by skipping the delay)"),
    ("two delays", "{name: r, actions: [{delay: {time: 1ms}}, {delay: {time: 2ms}}]}", "{delay: {time: 2ms",
     "rule 'r': expected at most one delay action in a rule (the first is at line 4)"),
    ("after drop", "{name: r, actions: [drop, dec_ttl]}", "dec_ttl",
     "rule 'r': dec_ttl: actions after drop never run"),
    ("set port on icmp", "{name: r, match: {ip_proto: icmp}, actions: [{set: {dst_port: 80}}]}", "{set",
     "rule 'r': set.dst_port needs ip_proto tcp or udp, not icmp"),
    ("set v6 addr on v4", "{name: r, match: {eth_type: ipv4}, actions: [{set: {ip_src: '2001:db8::1'}}]}", "{set",
     "rule 'r': set.ip_src: expected an IPv4 address, as the rule matches IPv4 packets, got 2001:db8::1"),
    ("set unknown", "{name: r, actions: [{set: {colour: red}}]}", "colour",
     "rule 'r': set: unknown key 'colour'; expected one of eth_src, eth_dst, ip_src, ip_dst, "
     "dscp, ecn, ttl, src_port, dst_port, vlan, vlan_pcp"),
    ("dscp range", "{name: r, actions: [{set: {dscp: 64}}]}", "64",
     "rule 'r': set: dscp: expected an integer from 0 to 63, got 64"),
    ("truncate", "{name: r, actions: [{truncate: {length: 10}}]}", "10}",
     "rule 'r': truncate: length: expected a frame length from 14 to 65535, got 10"),
]


@pytest.mark.parametrize("name,text,token,message", CASES, ids=[c[0] for c in CASES])
def test_file_errors(name, text, token, message):
    expected = at(text, token, message) if token else None
    got = errors(text)
    assert len(got) == 1
    if expected is None:  # YAML errors: the position is the parser's
        assert got[0].endswith(f": error: {message}")
    else:
        assert got == [expected]


@pytest.mark.parametrize("name,rule,token,message", RULE_CASES, ids=[c[0] for c in RULE_CASES])
def test_rule_errors(name, rule, token, message):
    text = rule_text(rule)
    assert errors(text) == [at(text, token, message)]


def test_duplicate_rule_names():
    text = rule_text("{name: r}\n  - {name: r}")
    assert errors(text) == ["r.yaml:5:5: error: rule name 'r' already used by the rule at line 4"]


def test_all_errors_at_once_in_file_order():
    text = PORTS + "forward: nowhere\nrules:\n  - {name: x, from: c}\n  - {name: y, actions: [explode]}\n"
    assert [e.split(": error")[0] for e in errors(text)] == [
        at(text, tok, "").split(": error")[0] for tok in ("nowhere", "c}", "explode")]


def test_a_mac_that_looks_like_a_base_60_number_stays_a_mac():
    # YAML 1.1 reads 10:22:33:44:55:66 unquoted as an integer; the loader keeps the text
    config = load_config("r.yaml", PORTS + "rules:\n  - {name: r, match: {eth_src: 10:22:33:44:55:66}}\n")
    assert config.rules[0].matches[0].value == (bytes.fromhex("102233445566"), b"\xff" * 6)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "reshaper", *args], capture_output=True, text=True)


def test_check_exit_status_and_stderr(tmp_path):
    bad = tmp_path / "bad.yaml"
    text = rule_text("{name: r, from: c}")
    bad.write_text(text)
    result = run_cli("check", str(bad))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (at(text, "c}", "from: expected one of a, b, any, got 'c'").replace("r.yaml", str(bad))
                             + "\n1 error; nothing applied\n")


def test_check_usage_error_exits_2():
    assert run_cli("check").returncode == 2
    assert run_cli("check", "x.yaml", "--mode", "warp").returncode == 2


def test_check_missing_file(tmp_path):
    result = run_cli("check", str(tmp_path / "none.yaml"))
    assert result.returncode == 1
    assert result.stderr.startswith(f"{tmp_path / 'none.yaml'}:1:1: error: cannot read the file: No such file")


def test_check_mode_nfqueue_refuses_l2_rules(tmp_path):
    config = tmp_path / "l2.yaml"
    text = PORTS + "rules:\n  - name: r\n    match: {eth_src: '02:00:00:00:00:01'}\n    actions: [pop_vlan]\n"
    config.write_text(text)
    assert run_cli("check", str(config)).returncode == 0
    result = run_cli("check", str(config), "--mode", "nfqueue")
    assert result.returncode == 1
    why = "needs L2 access, and NFQUEUE sees packets from the IP header on (use --mode ring or kernel)"
    assert result.stderr.splitlines() == [
        at(text, "'02", f"rule 'r': match.eth_src {why}").replace("r.yaml", str(config)),
        at(text, "pop_vlan", f"rule 'r': pop_vlan {why}").replace("r.yaml", str(config)),
        "2 errors; nothing applied"]


def test_apply_with_a_bad_file_writes_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(PORTS + "default: maybe\n")
    out = tmp_path / "out.pcap"
    result = run_cli("apply", str(bad), str(tmp_path / "in.pcap"), str(out))
    assert result.returncode == 1
    assert not out.exists()


def test_actions_with_only_optional_parameters_may_be_bare_words():
    config = load_config("r.yaml", rule_text("{name: r, actions: [duplicate, {drop: {}}]}"))
    assert [(a.kind, a.params) for a in config.rules[0].actions] == [
        ("duplicate", {"copies": 1, "probability": 1.0}), ("drop", {})]


def test_push_vlan_takes_only_tag_tpids():
    text = rule_text("{name: r, actions: [{push_vlan: {vlan: 5, tpid: 0x0800}}]}")
    assert errors(text) == [at(text, "0x0800", "rule 'r': push_vlan: tpid: expected a TPID of 0x8100 (802.1Q) "
                                               "or 0x88a8 (802.1ad), got '0x0800'")]
