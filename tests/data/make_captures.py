"""Makes the pcapng captures beside this file the way Wireshark saves them (run once, as root; needs the
Debian package tshark for dumpcap and editcap). The tests read the files; they do not run this.

    .venv/bin/python tests/data/make_captures.py [conversation]   (only conversation.pcapng)

dumpcap-ethernet.pcapng            dumpcap on a veth end: SHB, an Ethernet IDB with if_tsresol 9
                                   (nanoseconds), 4 EPBs (the last with a VLAN tag), an ISB
dumpcap-ethernet-and-any.pcapng    dumpcap on the veth end and on "any" (which sees only the second
                                   frame): a second IDB, of link type 113 (Linux cooked); records 1-2
                                   are Ethernet, 3-4 cooked
editcap-usec.pcapng                dumpcap-ethernet.pcapng through editcap to microsecond pcap and back
                                   to pcapng: an IDB without if_tsresol (microseconds)
conversation.pcapng                dumpcap on one end of a veth between two namespaces while they talk:
                                   ping, a UDP request and its answer, a TCP connection with 20 KB each
                                   way; both directions, wire-size frames (TSO off on the talkers, as
                                   on a NIC), locally sent ones with the checksums offload leaves
"""
import os
import socket
import subprocess
import sys
import time

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1Q, Ether

from reshaper.bridge.netns import Namespace
from reshaper.bridge.offloads import GSO, TSO, set_offloads
from reshaper.lab.frame_tap import ETH_P_ALL

HERE = os.path.dirname(os.path.abspath(__file__))
SRC, DST = "02:00:00:00:00:01", "02:00:00:00:00:02"


def frame(i: int, dport: int = 5000, vlan: int | None = None) -> bytes:
    eth = Ether(src=SRC, dst=DST)
    if vlan:
        eth = eth / Dot1Q(vlan=vlan)
    return bytes(eth / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1000 + i, dport=dport) / (b"frame %d" % i))


FRAMES = [frame(0), frame(1, dport=5001), frame(2), frame(3, vlan=100)]


def capture(ns: Namespace, name: str, argv: list[str], frames: list[bytes]) -> None:
    """dumpcap with argv in ns, while frames go out of x0 (10 ms apart) to x1."""
    out = os.path.join(HERE, name)
    proc = ns.popen(["dumpcap", *argv, "-w", out], stderr=subprocess.PIPE, text=True)
    while "Capturing on" not in (line := proc.stderr.readline()):
        if not line:
            raise SystemExit(f"dumpcap failed: {proc.stderr.read()}")
    time.sleep(0.5)  # dumpcap reports before its capture is open on every interface
    with ns.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as sock:
        sock.bind(("x0", ETH_P_ALL))
        for f in frames:
            sock.send(f)
            time.sleep(0.01)
    if proc.wait(10) != 0:
        raise SystemExit(f"dumpcap failed: {proc.stderr.read()}")
    os.chmod(out, 0o644)


def conversation() -> None:
    """Two namespaces talk over a veth; dumpcap on x1 (host b's end) sees both directions."""
    a, b = Namespace("rs-capture-a").create(), Namespace("rs-capture-b").create()
    out = os.path.join(HERE, "conversation.pcapng")
    try:
        with a.ipr() as ipr:
            ipr.link("add", ifname="x0", kind="veth", peer={"ifname": "x1"})
            ipr.link("set", index=ipr.link_lookup(ifname="x1")[0], net_ns_fd=b.name)
        for ns, name, address in ((a, "x0", "10.0.0.1"), (b, "x1", "10.0.0.2")):
            ns.run(["sysctl", "-q", f"net.ipv6.conf.{name}.disable_ipv6=1"], check=True)
            with ns.entered():
                set_offloads(name, GSO | TSO, False)
            with ns.ipr() as ipr:
                index = ipr.link_lookup(ifname=name)[0]
                ipr.link("set", index=index, state="up")
                ipr.addr("add", index=index, address=address, prefixlen=24)
        proc = b.popen(["dumpcap", "-i", "x1", "-w", out], stderr=subprocess.PIPE, text=True)
        while "Capturing on" not in (line := proc.stderr.readline()):
            if not line:
                raise SystemExit(f"dumpcap failed: {proc.stderr.read()}")
        time.sleep(0.5)
        a.run(["ping", "-c", "2", "-i", "0.2", "10.0.0.2"], check=True, capture_output=True)
        talk = ("import socket,sys\n"
                "u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);u.bind(('10.0.0.2',53))\n"
                "t=socket.socket();t.bind(('10.0.0.2',8080));t.listen(1);print('up',flush=True)\n"
                "d,peer=u.recvfrom(100);u.sendto(b'answer:'+d,peer)\n"
                "c,_=t.accept();n=0\n"
                "while n<20000:\n n+=len(c.recv(65536))\n"
                "c.sendall(b'r'*20000);c.close()\n")
        server = b.popen([sys.executable, "-c", talk], stdout=subprocess.PIPE, text=True)
        server.stdout.readline()
        client = ("import socket\n"
                  "u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);u.sendto(b'query',('10.0.0.2',53));u.recv(100)\n"
                  "t=socket.create_connection(('10.0.0.2',8080));t.sendall(b'q'*20000);n=0\n"
                  "while n<20000:\n n+=len(t.recv(65536))\n"
                  "t.close()\n")
        a.run([sys.executable, "-c", client], check=True)
        server.wait(10)
        time.sleep(0.5)
        proc.send_signal(2)
        proc.wait(10)
        os.chmod(out, 0o644)
    finally:
        a.remove()
        b.remove()


def main() -> None:
    ns = Namespace("rs-capture").create()
    try:
        with ns.ipr() as ipr:
            ipr.link("add", ifname="x0", kind="veth", peer={"ifname": "x1"})
            for name in ("x0", "x1"):
                # no IPv6 on the link: no router or neighbour solicitations among the frames
                ns.run(["sysctl", "-q", f"net.ipv6.conf.{name}.disable_ipv6=1"], check=True)
                ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
        ours = ["-f", f"ether src {SRC}"]
        capture(ns, "dumpcap-ethernet.pcapng", ["-i", "x1", *ours, "-c", "4"], FRAMES)
        # "any" sees only the second frame, so that the file starts with Ethernet records
        capture(ns, "dumpcap-ethernet-and-any.pcapng",
                ["-i", "x1", *ours, "-i", "any", "-f", "udp dst port 5001", "-c", "4"], FRAMES[:2])
    finally:
        ns.remove()
    usec_pcap = os.path.join(HERE, "editcap-usec.pcap")
    subprocess.run(["editcap", "-F", "pcap", os.path.join(HERE, "dumpcap-ethernet.pcapng"), usec_pcap], check=True)
    subprocess.run(["editcap", "-F", "pcapng", usec_pcap, os.path.join(HERE, "editcap-usec.pcapng")], check=True)
    os.unlink(usec_pcap)
    conversation()


if __name__ == "__main__":
    conversation() if sys.argv[1:] == ["conversation"] else main()
