"""NFQUEUE mode live: Linux bridge + br_netfilter + iptables NFQUEUE, in namespaces.

host a (a0) <-> a1 [bridge rsbrN, reshaper --mode nfqueue] b1 <-> b0 (host b)
"""
import signal

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether

from reshaper.bridge.netns import HOST_A, HOST_B
from reshaper.bridge.modes.nfqueue import FILTER_VLAN_TAGGED
from tests.helpers.frames import MAC_A, MAC_B, PLAIN, ours, rebuilt, write_config
from tests.helpers.live import LiveAppliance

RULES = PLAIN + """rules:
  - name: dns
    from: a
    match: {ip_proto: udp, dst_port: 53}
    actions: [{set: {dst_port: 5353, dscp: 10}}]
  - name: v6-web
    match: {eth_type: ipv6, ip_proto: tcp, dst_port: 80}
    actions: [{set: {ip_dst: "fd77::2", dst_port: 8080}}, dec_ttl]
  - name: ttl-zero-drop
    match: {ip_proto: icmp, ttl: 0-1}
    actions: [dec_ttl]
  - name: no-telnet
    match: {ip_proto: tcp, dst_port: 23}
    actions: [drop]
"""


def iptables_rules(topo) -> str:
    return topo.br.run(["iptables", "-S"], capture_output=True, text=True).stdout + \
        topo.br.run(["ip6tables", "-S"], capture_output=True, text=True).stdout


def links(topo) -> set[str]:
    with topo.br.ipr() as ipr:
        return {link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}


def test_l3_l4_rules_give_the_exact_packets(tmp_path, topo, taps):
    tap_a, tap_b = taps
    with LiveAppliance(topo.br, write_config(tmp_path, RULES), tmp_path, mode="nfqueue") as appliance:
        dns = Ether(src=MAC_A, dst=MAC_B) / IP(src=HOST_A["v4"], dst=HOST_B["v4"]) / UDP(sport=3333, dport=53) / b"q"
        tap_a.send(bytes(dns))
        expected = dns.copy()
        expected[UDP].dport = 5353
        expected[IP].tos = 40
        assert tap_b.receive(1, match=ours) == [rebuilt(expected)]

        web = Ether(src=MAC_B, dst=MAC_A) / IPv6(src=HOST_B["v6"], dst="fd77::77", hlim=30) / \
            TCP(sport=4444, dport=80, flags="S")
        tap_b.send(bytes(web))
        expected = web.copy()
        expected[IPv6].dst = "fd77::2"
        expected[IPv6].hlim = 29
        expected[TCP].dport = 8080
        assert tap_a.receive(1, match=ours) == [rebuilt(expected)]

        # a rule that matches nothing here, and a drop
        other = Ether(src=MAC_A, dst=MAC_B) / IP(src=HOST_A["v4"], dst=HOST_B["v4"]) / UDP(sport=1, dport=54)
        tap_a.send(bytes(other))
        assert tap_b.receive(1, match=ours) == [bytes(other)]
        tap_a.send(bytes(Ether(src=MAC_A, dst=MAC_B) / IP(src=HOST_A["v4"], dst=HOST_B["v4"], ttl=1) / ICMP()))
        tap_a.send(bytes(Ether(src=MAC_A, dst=MAC_B) / IP(src=HOST_A["v4"], dst=HOST_B["v4"]) / TCP(dport=23)))
        assert tap_b.receive(2, timeout=0.5, match=ours) == []
        stats = appliance.stats()
    rules = {r["name"]: r for r in stats["rules"]}
    assert [rules[n]["matched"] for n in ("dns", "v6-web", "ttl-zero-drop", "no-telnet")] == [1, 1, 1, 1]
    assert stats["ports"]["a"]["dropped"] == 2


def test_ping_and_tcp_across_and_everything_removed_on_exit(tmp_path, topo):
    before_links = links(topo)
    with LiveAppliance(topo.br, write_config(tmp_path, RULES), tmp_path, mode="nfqueue"):
        assert "-N RESHAPER" in iptables_rules(topo)
        ping = topo.a.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", HOST_B["v4"]], capture_output=True, text=True)
        assert ping.returncode == 0, ping.stdout
        assert topo.tcp_transfer(5 << 20)[:2] == (5 << 20, True)
    assert "RESHAPER" not in iptables_rules(topo)
    assert links(topo) == before_links  # the bridge it made is gone


def test_a_killed_process_leaves_traffic_flowing_and_the_next_start_cleans_up(tmp_path, topo):
    config = write_config(tmp_path, RULES)
    appliance = LiveAppliance(topo.br, config, tmp_path, mode="nfqueue").start()
    appliance.stop(signal.SIGKILL)
    # fail-open: with nothing bound to the queues the kernel accepts
    assert topo.a.run(["ping", "-c", "1", "-W", "2", HOST_B["v4"]], capture_output=True).returncode == 0
    assert iptables_rules(topo).count("-N RESHAPER") == 2  # v4 and v6, left behind
    with LiveAppliance(topo.br, config, tmp_path, mode="nfqueue") as again:
        assert "did not exit cleanly: restoring its interface settings" in again.log()
        assert iptables_rules(topo).count("-j RESHAPER") == 2  # one jump per family, not two
        assert topo.a.run(["ping", "-c", "1", "-W", "2", HOST_B["v4"]], capture_output=True).returncode == 0
    assert "RESHAPER" not in iptables_rules(topo)


def test_delay_holds_the_verdict(tmp_path, topo):
    config = PLAIN + "rules:\n  - {name: slow, match: {ip_proto: icmp}, actions: [{delay: {time: 30ms}}]}\n"
    with LiveAppliance(topo.br, write_config(tmp_path, config), tmp_path, mode="nfqueue"):
        ping = topo.a.run(["ping", "-c", "3", "-i", "0.2", HOST_B["v4"]], capture_output=True, text=True)
    rtts = [float(line.split("time=")[1].split()[0]) for line in ping.stdout.splitlines() if "time=" in line]
    assert len(rtts) == 3 and all(60 <= rtt < 75 for rtt in rtts), rtts


def test_reuses_an_existing_bridge_and_puts_its_switches_back(tmp_path, topo):
    with topo.br.ipr() as ipr:
        ipr.link("add", ifname="mybr", kind="bridge")
        bridge_index = ipr.link_lookup(ifname="mybr")[0]
        for iface in ("a1", "b1"):
            ipr.link("set", index=ipr.link_lookup(ifname=iface)[0], master=bridge_index)
        ipr.link("set", index=bridge_index, state="up")
    with LiveAppliance(topo.br, write_config(tmp_path, RULES), tmp_path, mode="nfqueue") as appliance:
        assert appliance.stats()["bridge"] == "mybr"
        assert topo.a.run(["ping", "-c", "1", "-W", "2", HOST_B["v4"]], capture_output=True).returncode == 0
    with topo.br.ipr() as ipr:
        info = ipr.get_links(bridge_index)[0].get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
        assert info.get_attr("IFLA_BR_NF_CALL_IPTABLES") == 0
    assert "mybr" in links(topo)


def test_check_mode_nfqueue_refuses_what_it_cannot_do(tmp_path):
    from reshaper.bridge import modes
    from reshaper.rules.config import load_config

    config = load_config("n.yaml", PLAIN + "rules:\n  - {name: r, match: {length: 64-128}, actions: [duplicate]}\n")
    assert [d.message for d in modes.get("nfqueue").limits(config)] == [
        "rule 'r': match.length counts frame bytes, and NFQUEUE sees packets from the IP header on "
        "(use --mode ring or kernel)",
        "rule 'r': duplicate: a queue verdict passes one packet, NFQUEUE cannot send copies "
        "(use --mode ring or kernel)"]


L2_ONLY = PLAIN + """default: drop
forward: a-to-b
rules:
  - name: udp
    match: {ip_proto: udp}
    actions: [{set: {dscp: 10}}]
"""


def test_frames_the_queue_never_sees_follow_default_and_forward(tmp_path, topo, taps):
    """ARP and other non-IP frames never reach NFQUEUE: with `default: drop` (or from the port
    `forward` leaves out) the bridge drops them and counts them, as ring mode's engine drops
    them; IP in an 802.1Q tag reaches the queue and the rules, as in ring mode."""
    tap_a, tap_b = taps
    arp = Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / ARP(hwsrc=MAC_A, psrc=HOST_A["v4"], pdst=HOST_B["v4"])
    other = Ether(src=MAC_A, dst=MAC_B, type=0x88B5) / (b"local experimental" + bytes(28))
    tagged = Ether(src=MAC_A, dst=MAC_B) / Dot1Q(vlan=7) / IP(src=HOST_A["v4"], dst=HOST_B["v4"]) / \
        UDP(sport=1, dport=2) / b"tagged"
    back = Ether(src=MAC_B, dst=MAC_A) / Dot1Q(vlan=7) / IP(src=HOST_B["v4"], dst=HOST_A["v4"]) / UDP(sport=2, dport=1)
    expected = tagged.copy()
    expected[IP].tos = 10 << 2
    for mode in ("ring", "nfqueue"):
        with LiveAppliance(topo.br, write_config(tmp_path, L2_ONLY), tmp_path, mode=mode) as appliance:
            for frame in (arp, other, tagged):
                tap_a.send(bytes(frame))
            assert tap_b.receive(3, timeout=1.5, match=ours) == [rebuilt(expected)], mode
            tap_b.send(bytes(arp)[:6] + bytes.fromhex(MAC_B.replace(":", "")) + bytes(arp)[12:])
            tap_b.send(bytes(back))
            assert tap_a.receive(2, timeout=1.5, match=ours) == [], mode
            stats = appliance.stats()
        if mode == "nfqueue":
            assert stats["ports"]["a"]["bridge_dropped"] == 2 and stats["ports"]["b"]["bridge_dropped"] == 1
            # the hosts' own IPv6 neighbour discovery is queued (and dropped by default) too
            assert stats["ports"]["a"]["tx"] == 1 and stats["ports"]["b"]["dropped"] >= 1, stats["ports"]
    rules = topo.br.run(["ebtables", "-S"], capture_output=True, text=True).stdout
    assert "RESHAPER" not in rules, rules
    with open(FILTER_VLAN_TAGGED) as f:
        assert f.read().strip() == "0"


def test_a_two_way_conversation_sent_from_one_side_crosses_whole(tmp_path, topo, taps):
    """A capture of both directions replayed from one port: every frame crosses in every
    mode (a two-port wire). A learning bridge would keep the replies, whose destination it
    learned on the sending port, from crossing."""
    tap_a, tap_b = taps
    client, server = "02:00:00:00:0c:01", "02:00:00:00:0c:02"
    conversation = []
    for i in range(6):
        src, dst = (client, server) if i % 2 == 0 else (server, client)
        conversation.append(bytes(Ether(src=src, dst=dst) / IP(src=HOST_A["v4"], dst=HOST_B["v4"]) /
                                  UDP(sport=1000 + i, dport=2000) / b"conversation"))
    senders = {bytes.fromhex(m.replace(":", "")) for m in (client, server)}
    for mode in ("ring", "nfqueue"):
        with LiveAppliance(topo.br, write_config(tmp_path, PLAIN), tmp_path, mode=mode):
            for frame in conversation:
                tap_a.send(frame)
            got = tap_b.receive(len(conversation), timeout=2, match=lambda f: f[6:12] in senders)
        assert got == conversation, mode


def test_offloaded_tcp_reaches_the_rules_as_wire_packets(tmp_path, topo):
    """Hosts at their default offloads hand the bridge 64 KB TCP super-frames. NFQUEUE gets
    them segmented (python-netfilterqueue does not ask for NFQA_CFG_F_GSO, so the kernel
    segments before queueing): a rule counts and loses wire packets, and TCP recovers."""
    config = PLAIN + "rules:\n  - name: tcp\n    match: {ip_proto: tcp}\n    actions: [{loss: {probability: 10%}}]\n"
    with LiveAppliance(topo.br, write_config(tmp_path, config), tmp_path, mode="nfqueue") as appliance:
        received, intact, _ = topo.tcp_transfer(1_000_000)
        rule = appliance.stats()["rules"][0]
    assert received == 1_000_000 and intact
    assert rule["matched"] > 1_000_000 // 1500 and rule["bytes"] / rule["matched"] <= 1500, rule
    assert 0.05 <= rule["lost"] / rule["matched"] <= 0.15, rule
