"""`reshaper demo`: the appliance in network namespaces, with real traffic.

Host a and host b, each in a namespace, talk through reshaper running in
ring mode in a third one, on the rules of examples/demo.yaml. The
demo sends ping, UDP and TCP across, shows what the rules did as host b saw
it and reshaper's counters, then removes everything it made.
"""
from __future__ import annotations

import os
import socket
import sys
import tempfile
import time

from reshaper.bridge.control import read_stats
from reshaper.bridge.launcher import RunningAppliance
from reshaper.bridge.netns import HOST_B, Topology
from reshaper.examples import example

IP_RECVTOS = getattr(socket, "IP_RECVTOS", 13)


def say(text: str) -> None:
    print(text, flush=True)


def demo_udp(topo: Topology) -> None:
    listener = topo.b.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.setsockopt(socket.IPPROTO_IP, IP_RECVTOS, 1)
    listener.bind(("0.0.0.0", 9000))
    listener.settimeout(2)
    sender = topo.a.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.sendto(b"hello through reshaper", (HOST_B["v4"], 7))
    data, ancillary, _, peer = listener.recvmsg(2048, 64)
    tos = ancillary[0][2][0] if ancillary else 0
    say(f"  host a sent UDP to port 7; host b received {data!r} on port 9000 from {peer[0]}, "
        f"DSCP {tos >> 2} (rule udp-to-9000: dst_port 7 -> 9000, dscp 46)")
    listener.close()
    sender.close()


def demo_loss(topo: Topology, count: int = 200) -> None:
    listener = topo.b.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("0.0.0.0", 5000))
    listener.settimeout(0.5)
    sender = topo.a.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(count):
        sender.sendto(i.to_bytes(4, "big"), (HOST_B["v4"], 5000))
        time.sleep(0.001)
    received = 0
    try:
        while True:
            listener.recv(64)
            received += 1
    except socket.timeout:
        pass
    say(f"  host a sent {count} UDP datagrams to port 5000; host b received {received} "
        f"(rule lossy-udp: 10% loss)")
    listener.close()
    sender.close()


def demo_tcp(topo: Topology, control: str, size: int = 4 << 20) -> None:
    before = read_stats(control)["ports"]["a"]
    received, intact, elapsed = topo.tcp_transfer(size)
    after = read_stats(control)["ports"]["a"]
    # the hosts keep veth's default offloads: TSO hands the bridge whole 64 KB segments
    say(f"  TCP: {received:,} bytes from a to b in {elapsed:.2f} s, "
        f"{'byte-exact' if intact else 'CORRUPTED'} (no rule: forwarded as is; host a's TSO sent "
        f"{after['gso_rx'] - before['gso_rx']} super-frames, {after['rx'] - before['rx']:,} frames on the wire)")

    blocked = topo.a.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocked.settimeout(1)
    try:
        blocked.connect((HOST_B["v4"], 23))
        say("  TCP to port 23 connected (unexpected)")
    except (socket.timeout, OSError) as exc:
        say(f"  TCP to port 23: no answer ({exc.__class__.__name__}; rule no-telnet drops it)")
    finally:
        blocked.close()


def run_demo() -> int:
    config = str(example("demo.yaml"))
    say(f"reshaper demo: rules {config}")
    with tempfile.TemporaryDirectory(prefix="reshaper-demo-") as tmp, Topology("rsdemo") as topo:
        control = os.path.join(tmp, "control.sock")
        say("namespaces rsdemo-a (10.77.0.1), rsdemo-br (reshaper, ring mode), rsdemo-b (10.77.0.2)")
        with RunningAppliance(config, control, "ring", ns=topo.br):
            ping = topo.a.run(["ping", "-c", "3", "-i", "0.2", HOST_B["v4"]], capture_output=True, text=True)
            rtts = [line.split("time=")[1] for line in ping.stdout.splitlines() if "time=" in line]
            say(f"  ping a -> b: {', '.join(rtts)} (rule slow-ping: 20 ms +- 2 ms each way)")
            demo_udp(topo)
            demo_loss(topo)
            demo_tcp(topo, control)
            say("\nreshaper stats:")
            stats = topo.br.run([sys.executable, "-m", "reshaper", "stats", "--control", control],
                                capture_output=True, text=True)
            say(stats.stdout.rstrip())
    say("\nnamespaces removed; done")
    return 0
