"""Ring mode delays live, in network namespaces: one flow, one direction, and nothing else.
XDP mode, the same forwarder on AF_XDP sockets, is held to the same bounds.

host a (a0) <-> a1 [reshaper --mode ring|xdp] b1 <-> b0 (host b)

A 20 ms rule on one flow (ICMP over IPv4, or UDP to port 7000) from one
port: that flow's ping RTT and one-way delay grow by 20 ms; IPv6 ping, UDP
to another port, and the same flow in the other direction are left alone.
One-way delays: the sender stamps each datagram, the sink takes the kernel's
receive timestamp (lab/stamped.py); both ends share this machine's
clock. Bounds are loose (the machine is shared): >= 20 ms and < 20 + 8 ms for
the delayed flow's median, < 5 ms for the others'.
"""
import re
import statistics

import pytest

from reshaper.bridge.netns import HOST_B, Topology
from reshaper.lab.stamped import one_way
from tests.helpers.live import LiveAppliance

pytestmark = pytest.mark.live
MS = 1_000_000


@pytest.fixture
def topo():
    with Topology("tl") as t:
        yield t


def rules(direction: str) -> str:
    return f"""version: 1
ports: {{a: a1, b: b1}}
rules:
  - name: slow-ping
    from: {direction}
    match: {{eth_type: ipv4, ip_proto: icmp}}
    actions: [{{delay: {{time: 20ms}}}}]
  - name: slow-udp
    from: {direction}
    match: {{ip_proto: udp, dst_port: 7000}}
    actions: [{{delay: {{time: 20ms}}}}]
"""


def ping_rtts(ns, addr: str, v6: bool = False) -> list[float]:
    argv = ["ping", *(["-6"] if v6 else []), "-c", "10", "-i", "0.05", "-W", "2", addr]
    out = ns.run(argv, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    return [float(x) for x in re.findall(r"time=([\d.]+) ms", out.stdout)]


def median_ms(samples) -> float:
    return statistics.median((rx - tx) / MS for _, tx, rx in samples)


@pytest.mark.parametrize("mode,direction", [("ring", "a"), ("ring", "b"), ("xdp", "a")])
def test_a_20ms_rule_delays_its_flow_in_its_direction_only(tmp_path, topo, mode, direction):
    cfg = tmp_path / "rules.yaml"
    cfg.write_text(rules(direction))
    with LiveAppliance(topo.br, cfg, tmp_path, mode=mode) as appliance:
        ping_rtts(topo.a, HOST_B["v4"])  # ARP, warm-up
        # ping: one leg of the round trip crosses the rule, whichever direction it is
        v4 = ping_rtts(topo.a, HOST_B["v4"])
        v6 = ping_rtts(topo.a, HOST_B["v6"], v6=True)
        assert 20.0 <= min(v4) and statistics.median(v4) < 28.0, v4
        assert statistics.median(v6) < 5.0, v6

        other = "b" if direction == "a" else "a"
        delayed, _ = one_way(topo, 7000, 200, 200, src=direction)
        other_port, _ = one_way(topo, 7001, 200, 200, src=direction)
        reverse, _ = one_way(topo, 7000, 200, 200, src=other)
        assert len(delayed) == len(other_port) == len(reverse) == 200
        assert min((rx - tx) for _, tx, rx in delayed) >= 20 * MS
        assert 20.0 <= median_ms(delayed) < 28.0
        assert median_ms(other_port) < 5.0
        assert median_ms(reverse) < 5.0
        stats = appliance.stats()
    by_name = {r["name"]: r for r in stats["rules"]}
    assert by_name["slow-udp"]["delayed"] == 200
    assert by_name["slow-ping"]["delayed"] == 20  # 10 + 10 pings, one leg each in its direction
    assert by_name["slow-udp"]["held"] == 0  # all gone out
    assert stats["pool_full"] == 0


def test_held_counts_frames_per_rule_while_they_wait(tmp_path, topo):
    cfg = tmp_path / "rules.yaml"
    cfg.write_text("""version: 1
ports: {a: a1, b: b1}
rules:
  - {name: fast, match: {ip_proto: udp, dst_port: 7001}, actions: [{delay: {time: 1ms}}]}
  - {name: slow, match: {ip_proto: udp, dst_port: 7000}, actions: [{delay: {time: 3s}}, {rate: {bitrate: 100mbit, limit: 1000}}]}
""")
    import socket
    with LiveAppliance(topo.br, cfg, tmp_path) as appliance:
        ping_rtts(topo.a, HOST_B["v4"])
        tx = topo.a.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(50):
            tx.sendto(b"x" * 32, (HOST_B["v4"], 7000))
            tx.sendto(b"y" * 32, (HOST_B["v4"], 7001))
        tx.close()
        import time
        time.sleep(0.3)
        stats = appliance.stats()
    held = {r["name"]: r["held"] for r in stats["rules"]}
    assert held == {"fast": 0, "slow": 50}
    assert stats["queued"] == 50 and stats["pool_frames"] >= 4096


def test_pool_that_cannot_fit_is_refused_at_start_and_at_reload(tmp_path, topo):
    import signal
    import time
    big = """version: 1
ports: {a: a1, b: b1}
rules:
  - {name: huge, match: {ip_proto: udp}, actions: [{delay: {time: 2s}}]}
"""
    cfg = tmp_path / "rules.yaml"
    cfg.write_text(big)
    with pytest.raises(RuntimeError, match="delay buffers these rules need do not fit"):
        LiveAppliance(topo.br, cfg, tmp_path).start()
    cfg.write_text(rules("a"))
    with LiveAppliance(topo.br, cfg, tmp_path) as appliance:
        cfg.write_text(big)
        appliance.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not appliance.stats()["last_reload_error"]:
            time.sleep(0.05)
        stats = appliance.stats()
        assert "do not fit" in stats["last_reload_error"] and stats["reloads"] == 0
        assert [r["name"] for r in stats["rules"]] == ["slow-ping", "slow-udp"]
        v4 = ping_rtts(topo.a, HOST_B["v4"])
        assert min(v4) >= 20.0
        # bounded by a rate limit, the same delay fits
        cfg.write_text(big.replace("{delay: {time: 2s}}", "{delay: {time: 2s}}, {rate: {bitrate: 1mbit, limit: 1000}}"))
        appliance.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and appliance.stats()["reloads"] == 0:
            time.sleep(0.05)
        assert appliance.stats()["reloads"] == 1
