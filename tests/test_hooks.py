"""Python hooks: the shipped examples through `apply`, failures, loading rules, nfqueue live."""
import subprocess
import sys
import textwrap

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.utils import RawPcapReader, wrpcap

from bridge.apply import apply_capture
from bridge.hooks import HookLoadError, Hooks
from bridge.netns import HOST_A, HOST_B, Topology
from rules.config import ConfigError, load_config, mode_problems
from rules.examples import example
from tests.live import Bridge, FrameTap
from tests.test_ring import MAC_A, MAC_B, ours

HOOKS_YAML = example("hooks.yaml")
T0 = 1_700_000_000


def run_apply(tmp_path, config, frames):
    for i, f in enumerate(frames):
        f.time = T0 + i / 1000
    wrpcap(str(tmp_path / "in.pcap"), frames)
    result = apply_capture(config, str(tmp_path / "in.pcap"), str(tmp_path / "out.pcap"),
                           replies_path=str(tmp_path / "replies.pcap"))
    out = [d for d, _ in RawPcapReader(str(tmp_path / "out.pcap"))]
    replies = [d for d, _ in RawPcapReader(str(tmp_path / "replies.pcap"))]
    return result, out, replies


def udp(payload: bytes, dport=9999):
    return Ether(src=MAC_A, dst=MAC_B) / IP(src=HOST_A["v4"], dst=HOST_B["v4"]) / UDP(sport=1000, dport=dport) / payload


def test_example_rewrites_a_udp_payload_to_another_length(tmp_path):
    result, out, _ = run_apply(tmp_path, load_config(str(HOOKS_YAML)), [udp(b"say hello!"), udp(b"hello", dport=53)])
    # the hook's frame, with IP and UDP lengths and both checksums as scapy computes them from scratch
    assert out == [bytes(udp(b"say howdy, partner!")), bytes(udp(b"hello", dport=53))]
    assert result.hooks["greet"] == {"calls": 1, "errors": 0, "timeouts": 0, "dropped": 0, "frames_out": 1,
                                     "replies": 0}


def test_example_answers_arp_for_its_address_back_out_of_the_ingress_port(tmp_path):
    who_has = Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=MAC_A, psrc=HOST_A["v4"], pdst="10.77.0.254")
    other = Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=MAC_A, psrc=HOST_A["v4"], pdst=HOST_B["v4"])
    result, out, replies = run_apply(tmp_path, load_config(str(HOOKS_YAML)), [who_has, other])
    assert out == [bytes(other)]
    assert replies == [bytes(Ether(src="02:00:00:00:00:fe", dst=MAC_A) /
                             ARP(op=2, hwsrc="02:00:00:00:00:fe", psrc="10.77.0.254", hwdst=MAC_A, pdst=HOST_A["v4"]))]
    assert result.replies == 1


def hook_config(tmp_path, code: str, params: str = "", name="myhook"):
    hooks = tmp_path / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / f"{name}.py").write_text(textwrap.dedent(code))
    path = tmp_path / "rules.yaml"
    path.write_text("version: 1\nports: {a: a1, b: b1}\nhooks_path: hooks\nrules:\n"
                    f"  - name: h\n    match: {{ip_proto: udp}}\n"
                    f"    actions: [{{python: {{call: \"{name}:fn\"{params}}}}}]\n")
    return load_config(str(path))


@pytest.mark.parametrize("on_error,expected", [("pass", "unchanged"), ("drop", "nothing")])
def test_a_hook_that_raises_is_counted_and_the_frame_follows_on_error(tmp_path, capsys, on_error, expected):
    config = hook_config(tmp_path, "def fn(frame, ctx):\n    raise RuntimeError('boom')\n",
                         f", on_error: {on_error}")
    result, out, _ = run_apply(tmp_path, config, [udp(b"x")])
    assert out == ([bytes(udp(b"x"))] if expected == "unchanged" else [])
    assert result.hooks["h"]["errors"] == 1
    assert "RuntimeError: boom" in capsys.readouterr().err


def test_a_hook_over_its_timeout_is_counted(tmp_path):
    config = hook_config(tmp_path, "import time\ndef fn(frame, ctx):\n    time.sleep(0.01)\n    return None\n",
                         ", timeout: 1ms, on_error: pass")
    result, out, _ = run_apply(tmp_path, config, [udp(b"slow")])
    assert result.hooks["h"]["timeouts"] == 1
    assert out == [bytes(udp(b"slow"))]  # on_error pass: its own answer (drop) is not used


def test_a_hook_returning_several_frames_and_raw_bytes(tmp_path):
    code = """
    def fn(frame, ctx):
        assert isinstance(frame, bytes) and ctx.port == "a" and ctx.rule == "h"
        return [frame, frame[:-1] + b"!", frame]
    """
    config = hook_config(tmp_path, code, ", raw: true")
    result, out, _ = run_apply(tmp_path, config, [udp(b"abc")])
    assert out == [bytes(udp(b"abc")), bytes(udp(b"ab!")), bytes(udp(b"abc"))]
    assert result.hooks["h"]["frames_out"] == 3


def test_none_drops(tmp_path):
    config = hook_config(tmp_path, "def fn(frame, ctx):\n    return None\n")
    result, out, _ = run_apply(tmp_path, config, [udp(b"gone")])
    assert out == [] and result.hooks["h"]["dropped"] == 1


def test_hooks_load_only_from_hooks_path(tmp_path, monkeypatch):
    (tmp_path / "sneaky.py").write_text("def fn(frame, ctx):\n    return None\n")
    monkeypatch.chdir(tmp_path)
    text = ("version: 1\nports: {a: a1, b: b1}\nrules:\n"
            "  - {name: h, actions: [{python: {call: \"sneaky:fn\"}}]}\n")
    with pytest.raises(ConfigError) as info:
        load_config("r.yaml", text)
    assert str(info.value) == ("r.yaml:4:25: error: rule 'h': python hooks are loaded only from directories you "
                               "name: set hooks_path in the file (or give --hooks-path)")
    (tmp_path / "hooks").mkdir()
    config = load_config(str(tmp_path / "r.yaml"), text, hooks_path=[str(tmp_path / "hooks")])
    with pytest.raises(HookLoadError, match="no module 'sneaky' in hooks_path"):
        Hooks(config, "apply")


def test_a_hook_module_may_not_shadow_an_imported_one(tmp_path):
    config = hook_config(tmp_path, "def fn(frame, ctx):\n    return frame\n", name="json")
    with pytest.raises(HookLoadError, match="hook module 'json' is already imported from elsewhere"):
        Hooks(config, "apply")


def test_kernel_mode_refuses_hook_rules():
    problems = mode_problems(load_config(str(HOOKS_YAML)), "kernel")
    assert [p.message for p in problems] == [
        f"rule '{name}': python hooks run in user space; the kernel module cannot call them "
        "(use --mode ring or nfqueue)" for name in ("greet", "proxy-arp")]


def test_hook_rules_take_no_timing_actions_and_come_last():
    text = ("version: 1\nports: {a: a1, b: b1}\nhooks_path: .\nrules:\n"
            "  - {name: h, actions: [{python: {call: \"m:f\"}}, {delay: {time: 1ms}}]}\n")
    with pytest.raises(ConfigError) as info:
        load_config("r.yaml", text)
    assert [d.message for d in info.value.diagnostics] == [
        "rule 'h': python: expected the hook to be the rule's last action (actions before it run first, "
        "in the engine)",
        "rule 'h': delay cannot go with a python hook in one rule: the hook's frames leave when it returns"]


def test_cli_apply_runs_hooks(tmp_path):
    wrpcap(str(tmp_path / "in.pcap"), [udp(b"hello")])
    result = subprocess.run([sys.executable, "-m", "bridge", "apply", str(HOOKS_YAML), str(tmp_path / "in.pcap"),
                             str(tmp_path / "out.pcap")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "hook of greet: calls 1, errors 0, timeouts 0, dropped 0, frames_out 1, replies 0" in result.stdout
    assert [d for d, _ in RawPcapReader(str(tmp_path / "out.pcap"))] == [bytes(udp(b"howdy, partner"))]


def test_nfqueue_mode_runs_hooks_on_the_l3_packet(tmp_path):
    # the example's ARP rule is L2, which NFQUEUE does not see: only the UDP rewrite here
    config = tmp_path / "nfq.yaml"
    config.write_text(f"version: 1\nports: {{a: a1, b: b1}}\nhooks_path: {HOOKS_YAML.parent / 'hooks'}\nrules:\n"
                      "  - {name: greet, match: {ip_proto: udp, dst_port: 9999}, "
                      "actions: [{python: {call: \"udp_rewrite:rewrite\", timeout: 50ms}}]}\n")
    with Topology("rh") as topo:
        tap_a, tap_b = FrameTap(topo.a, "a0"), FrameTap(topo.b, "b0")
        try:
            with Bridge(topo.br, config, tmp_path, mode="nfqueue") as bridge:
                tap_a.send(bytes(udp(b"hello there")))
                assert tap_b.receive(1, match=ours) == [bytes(udp(b"howdy, partner there"))]
                assert bridge.stats()["hooks"]["greet"]["calls"] == 1
        finally:
            tap_a.close()
            tap_b.close()


def test_ring_mode_hooks_rewrite_answer_and_keep_order_while_other_rules_stay_in_c(tmp_path):
    config = tmp_path / "ring.yaml"
    config.write_text(HOOKS_YAML.read_text().replace("hooks_path: [hooks]", f"hooks_path: [{HOOKS_YAML.parent / 'hooks'}]")
                      + "  - {name: fast, match: {ip_proto: udp, dst_port: 7}, actions: [{set: {dst_port: 9}}]}\n")
    with Topology("rh") as topo:
        tap_a, tap_b = FrameTap(topo.a, "a0"), FrameTap(topo.b, "b0")
        try:
            with Bridge(topo.br, config, tmp_path, mode="ring") as bridge:
                for i in range(50):
                    tap_a.send(bytes(udp(b"hello %d" % i)))
                got = tap_b.receive(50, match=ours)
                assert got == [bytes(udp(b"howdy, partner %d" % i)) for i in range(50)]  # in order

                tap_a.send(bytes(udp(b"hello", dport=7)))  # another rule: stays in C, not rewritten by a hook
                expected = udp(b"hello", dport=9)
                del expected[IP].chksum, expected[UDP].chksum
                assert tap_b.receive(1, match=ours) == [bytes(expected)]

                who_has = Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=MAC_A, psrc=HOST_A["v4"],
                                                                          pdst="10.77.0.254")
                tap_a.send(bytes(who_has))
                answer = tap_a.receive(1, match=lambda f: f[6:12] == bytes.fromhex("0200000000fe"))
                assert [Ether(f)[ARP].op for f in answer] == [2]
                stats = bridge.stats()
        finally:
            tap_a.close()
            tap_b.close()
    assert stats["hooks"]["greet"]["calls"] == 50 and stats["hooks"]["proxy-arp"]["replies"] == 1
    assert stats["hooks_slow_path"]["overflow"] == 0
    assert stats["hooks_slow_path"]["queued"] >= 51
