"""Ring mode live: real AF_PACKET rings between network namespaces.

host a (a0) <-> a1 [reshaper --mode ring] b1 <-> b0 (host b)
"""
import json
import os
import signal
import socket
import threading
import time

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether

from reshaper.bridge.netns import HOST_A, HOST_B
from reshaper.bridge.offloads import GRO, GSO, TSO, set_offloads
from tests.helpers.frames import MAC_A, MAC_B, PLAIN, TRUNK, ours, rebuilt, write_config
from tests.helpers.live import LiveAppliance

pytestmark = pytest.mark.live


def v4udp(src_mac, dst_mac, sport, dport, payload=b"payload", **ip):
    return Ether(src=src_mac, dst=dst_mac) / IP(src=HOST_A["v4"], dst=HOST_B["v4"], **ip) / \
        UDP(sport=sport, dport=dport) / payload


def assert_to_9000(tap_a, tap_b):
    """A UDP frame to port 7 from a leaves b as RULES' first rule says: port 9000, DSCP 46."""
    udp = v4udp(MAC_A, MAC_B, 1234, 7)
    tap_a.send(bytes(udp))
    expected = udp.copy()
    expected[UDP].dport = 9000
    expected[IP].tos = 46 << 2
    assert tap_b.receive(1, match=ours) == [rebuilt(expected)]


RULES = PLAIN + """rules:
  - name: to-9000
    from: a
    match: {ip_proto: udp, dst_port: 7}
    actions: [{set: {dst_port: 9000, dscp: 46}}]
  - name: back
    from: b
    match: {eth_type: ipv6, ip_proto: tcp}
    actions: [{set: {ip_src: "fd77::99"}}, dec_ttl]
  - name: no-telnet
    match: {ip_proto: tcp, dst_port: 23}
    actions: [drop]
"""


def test_frames_leave_as_the_rules_say_both_directions(tmp_path, topo, taps):
    tap_a, tap_b = taps
    with LiveAppliance(topo.br, write_config(tmp_path, RULES), tmp_path) as appliance:
        assert_to_9000(tap_a, tap_b)

        v6 = Ether(src=MAC_B, dst=MAC_A) / IPv6(src=HOST_B["v6"], dst=HOST_A["v6"], hlim=9) / \
            TCP(sport=80, dport=5555, flags="SA") / b"reply"
        tap_b.send(bytes(v6))
        expected = v6.copy()
        expected[IPv6].src = "fd77::99"
        expected[IPv6].hlim = 8
        assert tap_a.receive(1, match=ours) == [rebuilt(expected)]

        # untouched frames leave bit-identical, even with a wrong checksum
        odd = bytearray(bytes(v4udp(MAC_A, MAC_B, 1, 53)))
        odd[-9] ^= 0xFF
        tap_a.send(bytes(odd))
        assert tap_b.receive(1, match=ours) == [bytes(odd)]

        tap_a.send(bytes(Ether(src=MAC_A, dst=MAC_B) / IP(src=HOST_A["v4"], dst=HOST_B["v4"]) / TCP(dport=23)))
        assert tap_b.receive(1, timeout=0.5, match=ours) == []
        stats = appliance.stats()
    rules = {r["name"]: r for r in stats["rules"]}
    assert (rules["to-9000"]["matched"], rules["back"]["matched"], rules["no-telnet"]["dropped"]) == (1, 1, 1)
    assert stats["ports"]["a"]["rx"] >= 3 and stats["ports"]["b"]["tx"] >= 2


def test_default_drop(tmp_path, topo, taps):
    tap_a, tap_b = taps
    config = PLAIN + "default: drop\nrules:\n  - {name: dns, match: {ip_proto: udp, dst_port: 53}}\n"
    with LiveAppliance(topo.br, write_config(tmp_path, config), tmp_path):
        tap_a.send(bytes(v4udp(MAC_A, MAC_B, 1, 54)))
        tap_a.send(bytes(v4udp(MAC_A, MAC_B, 1, 53)))
        assert tap_b.receive(2, timeout=1, match=ours) == [bytes(v4udp(MAC_A, MAC_B, 1, 53))]


def test_trunk_form_tags_off_on_the_way_in_and_on_on_the_way_out(tmp_path, topo, taps):
    tap_a, tap_b = taps
    config = TRUNK + "rules:\n  - {name: r, match: {ip_proto: udp}, actions: [{set: {dst_port: 99}}]}\n"
    with LiveAppliance(topo.br, write_config(tmp_path, config), tmp_path) as appliance:
        inner = IP(src=HOST_A["v4"], dst=HOST_B["v4"]) / UDP(sport=5, dport=6) / b"x"
        tap_a.send(bytes(Ether(src=MAC_A, dst=MAC_B) / Dot1Q(vlan=100, prio=5) / inner))
        tap_a.send(bytes(Ether(src=MAC_A, dst=MAC_B) / Dot1Q(vlan=300) / inner))  # not port a's VLAN
        tap_a.send(bytes(Ether(src=MAC_A, dst=MAC_B) / inner))                     # untagged: neither
        expected = inner.copy()
        expected[UDP].dport = 99
        got = tap_b.receive(3, timeout=1, match=ours)
        assert got == [rebuilt(Ether(src=MAC_A, dst=MAC_B) / Dot1Q(vlan=200, prio=5) / expected)]
        # and back: VLAN 200 in at b, VLAN 100 out at a
        tap_b.send(bytes(Ether(src=MAC_B, dst=MAC_A) / Dot1Q(vlan=200) / IP() / TCP()))
        assert tap_a.receive(1, match=ours) == [bytes(Ether(src=MAC_B, dst=MAC_A) / Dot1Q(vlan=100) / IP() / TCP())]
        assert appliance.stats()["not_ours"] >= 2


def test_trunk_form_both_ports_on_one_interface(tmp_path, topo, taps):
    tap_a, _ = taps
    config = "version: 1\nports: {a: {interface: a1, vlan: 100}, b: {interface: a1, vlan: 200}}\n"
    with LiveAppliance(topo.br, write_config(tmp_path, config), tmp_path):
        frame = Ether(src=MAC_A, dst=MAC_B) / Dot1Q(vlan=100) / IP() / UDP() / b"hairpin"
        tap_a.send(bytes(frame))
        got = tap_a.receive(1, match=lambda f: ours(f) and f[14:16] == b"\x00\xc8")
        assert got == [bytes(Ether(src=MAC_A, dst=MAC_B) / Dot1Q(vlan=200) / IP() / UDP() / b"hairpin")]


def test_qinq_inner_tag_is_frame_data_to_the_rules(tmp_path, topo, taps):
    tap_a, tap_b = taps
    config = TRUNK + "rules:\n  - {name: q, match: {vlan: 7}, actions: [{set: {vlan: 8}}]}\n"
    with LiveAppliance(topo.br, write_config(tmp_path, config), tmp_path):
        tap_a.send(bytes(Ether(src=MAC_A, dst=MAC_B) / Dot1Q(vlan=100) / Dot1Q(vlan=7) / IP() / UDP()))
        assert tap_b.receive(1, match=ours) == [
            bytes(Ether(src=MAC_A, dst=MAC_B) / Dot1Q(vlan=200) / Dot1Q(vlan=8) / IP() / UDP())]


def test_ping_and_a_50_mb_tcp_transfer_with_checksum_offload_on(tmp_path, topo):
    with LiveAppliance(topo.br, write_config(tmp_path, RULES), tmp_path) as appliance:
        ping = topo.a.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", HOST_B["v4"]], capture_output=True, text=True)
        assert ping.returncode == 0, ping.stdout
        ping6 = topo.a.run(["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", HOST_B["v6"]],
                           capture_output=True, text=True)
        assert ping6.returncode == 0, ping6.stdout

        assert topo.tcp_transfer(50 << 20)[:2] == (50 << 20, True)
        stats = appliance.stats()
    a, b = stats["ports"]["a"], stats["ports"]["b"]
    # the hosts leave their offloads on: a's data come as super-frames, which leave whole with their
    # partial checksums (tests/test_offloads.py), b's ACKs as frames whose checksums the ring completes
    assert a["gso_rx"] > 0 and b["csum_completed"] > 100
    assert a["oversize"] == b["oversize"] == 0


def udp_stream(topo, port, count, rate):
    """Sends count datagrams from a to b at about rate per second; returns ports they arrived on."""
    received = []
    listeners = []
    for p in (9000, 9001):
        s = topo.b.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((HOST_B["v4"], p))
        s.settimeout(1.0)
        listeners.append(s)

    def listen(s):
        try:
            while True:
                data = s.recv(64)
                received.append((s.getsockname()[1], int.from_bytes(data, "big")))
        except socket.timeout:
            pass

    threads = [threading.Thread(target=listen, args=(s,)) for s in listeners]
    for t in threads:
        t.start()
    sender = topo.a.socket(socket.AF_INET, socket.SOCK_DGRAM)
    start = time.monotonic()
    for i in range(count):
        sender.sendto(i.to_bytes(4, "big"), (HOST_B["v4"], port))
        delay = start + (i + 1) / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    for t in threads:
        t.join()
    for s in listeners + [sender]:
        s.close()
    return received


RELOAD_A = PLAIN + "rules:\n  - {name: first, match: {ip_proto: udp, dst_port: 7}, actions: [{set: {dst_port: 9000}}]}\n"
RELOAD_B = PLAIN + "rules:\n  - {name: second, match: {ip_proto: udp, dst_port: 7}, actions: [{set: {dst_port: 9001}}]}\n"


def test_reload_under_traffic_loses_nothing(tmp_path, topo):
    config = write_config(tmp_path, RELOAD_A)
    with LiveAppliance(topo.br, config, tmp_path) as appliance:
        def reload_twice():
            time.sleep(0.5)
            config.write_text(RELOAD_B)
            appliance.send_signal(signal.SIGHUP)
            time.sleep(0.5)
            config.write_text(RELOAD_A)
            appliance.send_signal(signal.SIGHUP)

        thread = threading.Thread(target=reload_twice)
        thread.start()
        got = udp_stream(topo, 7, 3000, 2000)
        thread.join()
        stats = appliance.stats()
    assert sorted(i for _, i in got) == list(range(3000))
    ports = [p for p, _ in sorted(got, key=lambda x: x[1])]
    # in order: 9000, then 9001 after the first reload, then 9000 again
    changes = [ports[i] for i in range(len(ports)) if i == 0 or ports[i] != ports[i - 1]]
    assert changes == [9000, 9001, 9000]
    assert stats["reloads"] == 2 and stats["last_reload_error"] is None


def test_reload_with_a_broken_file_changes_nothing(tmp_path, topo, taps):
    tap_a, tap_b = taps
    config = write_config(tmp_path, RELOAD_A)
    with LiveAppliance(topo.br, config, tmp_path) as appliance:
        config.write_text(PLAIN + "rules:\n  - {name: second, actions: [{delay: {time: 10}}]}\n")
        appliance.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while appliance.stats()["last_reload_error"] is None and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = appliance.stats()
        assert stats["reloads"] == 0 and [r["name"] for r in stats["rules"]] == ["first"]
        assert stats["last_reload_error"].startswith(f"{config}:4:45: error: rule 'second': delay: time:")
        assert f"{config}:4:45: error:" in appliance.log()
        assert "the previous rules keep running" in appliance.log()
        tap_a.send(bytes(v4udp(MAC_A, MAC_B, 1, 7)))
        [frame] = tap_b.receive(1, match=ours)
        assert Ether(frame)[UDP].dport == 9000


def test_systemd_hears_ready_reloading_and_stopping(tmp_path, topo):
    """Type=notify (the BeagleBone unit): READY=1 once forwarding; RELOADING=1 then READY=1
    around a reload, a refused one naming its error in STATUS; STOPPING=1 on SIGTERM."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(10)
        config = write_config(tmp_path, RELOAD_A)
        appliance = LiveAppliance(topo.br, config, tmp_path)
        appliance.env["NOTIFY_SOCKET"] = str(path)
        with appliance:
            assert sock.recv(4096).decode() == "READY=1\nSTATUS=ring mode: a = a1, b = b1; 1 rules"
            config.write_text(PLAIN + "rules:\n  - {name: second, actions: [{delay: {time: 10}}]}\n")
            appliance.send_signal(signal.SIGHUP)
            assert sock.recv(4096) == b"RELOADING=1"
            status = sock.recv(4096).decode()
            assert status.startswith("READY=1\nSTATUS=ring mode: a = a1, b = b1; 1 rules; last reload refused: "
                                     f"{config}:4:45: error: rule 'second': delay: time:"), status
        assert sock.recv(4096) == b"STOPPING=1"


def test_link_down_and_up_is_survived(tmp_path, topo):
    with LiveAppliance(topo.br, write_config(tmp_path, PLAIN), tmp_path) as appliance:
        assert topo.a.run(["ping", "-c", "1", "-W", "2", HOST_B["v4"]], capture_output=True).returncode == 0
        topo.br.set_link("b1", state="down")
        time.sleep(0.5)
        assert topo.a.run(["ping", "-c", "1", "-W", "1", HOST_B["v4"]], capture_output=True).returncode != 0
        topo.br.set_link("b1", state="up")
        up = time.monotonic()
        ping = topo.a.run(["ping", "-c", "1", "-W", "1", HOST_B["v4"]], capture_output=True)
        assert ping.returncode == 0 and time.monotonic() - up < 1.0
        assert appliance.proc.poll() is None


def offloads(ns, ifname):
    with ns.entered():
        before = set_offloads(ifname, GRO | GSO | TSO, True)  # reads them, leaving all on...
        set_offloads(ifname, GRO | GSO | TSO, False)
        set_offloads(ifname, before, True)                    # ...then puts them back
    return before


def test_a_killed_run_is_cleaned_up_by_the_next_start(tmp_path, topo):
    config = write_config(tmp_path, PLAIN)
    with topo.br.entered():
        set_offloads("a1", GRO, True)  # veth has GRO off by default: on, so that there is something to put back
    before = offloads(topo.br, "a1")
    assert before == GRO | GSO | TSO
    appliance = LiveAppliance(topo.br, config, tmp_path).start()
    assert offloads(topo.br, "a1") == GSO | TSO  # ring mode turns GRO off, and leaves TSO/GSO alone
    appliance.stop(signal.SIGKILL)
    state_files = list((tmp_path / "run").glob("state-*.json"))
    assert len(state_files) == 1 and json.loads(state_files[0].read_text())["offloads"]["a1"] == GRO
    with LiveAppliance(topo.br, config, tmp_path) as again:
        assert "did not exit cleanly: restoring its interface settings" in again.log()
        assert topo.a.run(["ping", "-c", "1", "-W", "2", HOST_B["v4"]], capture_output=True).returncode == 0
    assert offloads(topo.br, "a1") == before
    assert list((tmp_path / "run").glob("state-*.json")) == []
    assert not os.path.exists(again.control)


def test_privileges_are_dropped_after_set_up(tmp_path, topo):
    with LiveAppliance(topo.br, write_config(tmp_path, PLAIN), tmp_path) as appliance:
        pid = appliance.proc.pid
        status = open(f"/proc/{pid}/status").read()
        caps = {line.split(":")[0]: int(line.split()[1], 16) for line in status.splitlines()
                if line.startswith("Cap")}
        tasks = os.listdir(f"/proc/{pid}/task")
        thread_caps = {int(open(f"/proc/{pid}/task/{t}/status").read().split("CapEff:")[1].split()[0], 16)
                       for t in tasks}
    assert caps["CapEff"] == caps["CapPrm"] == caps["CapBnd"] == 1 << 12  # CAP_NET_ADMIN only
    assert thread_caps == {1 << 12}


def test_missing_interface_is_a_clear_error(tmp_path, topo):
    config = write_config(tmp_path, "version: 1\nports: {a: a1, b: eth9.100}\n")
    appliance = LiveAppliance(topo.br, config, tmp_path)
    proc = topo.br.run(appliance.argv, capture_output=True, text=True, env=appliance.env)
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith(
        "port b: no interface eth9.100 (create it: ip link add link eth9 name eth9.100 type vlan id 100)")


def test_busy_poll_forwards_the_same(tmp_path, topo, taps):
    tap_a, tap_b = taps
    with LiveAppliance(topo.br, write_config(tmp_path, RULES), tmp_path, extra=["--busy-poll", "5000"]):
        assert_to_9000(tap_a, tap_b)
        assert topo.a.run(["ping", "-c", "2", "-i", "0.2", "-W", "2", HOST_B["v4"]], capture_output=True).returncode == 0
