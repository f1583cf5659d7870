"""Runs inside the test VM: sends and captures frames, drives `reshaper run`.

Standard library only: under TCG a Python start that imports pyroute2 costs
about 10 s, this one about 2 s. The kernel-mode appliance runs in namespace
`br`; this agent runs in namespace `h`, on the far end of the one veth pair
(h0 <-> eth0): it sends the port's tagged frames on h0 and captures on h0
what comes back with the other port's tag (the outer tag, taken off by the
receive path, is put back from PACKET_AUXDATA). It talks to the appliance
through its control socket (a file: reachable from any namespace) and
signals (SIGHUP reloads).

    python agent.py golden CASES.json RESULTS.json CONTROL CONFIG
    python agent.py reload CONTROL CONFIG NEWFILE   install NEWFILE as CONFIG, SIGHUP, print stats
    python agent.py stats CONTROL
    python agent.py flood SECONDS PPS          frames through the bridge (h0)
    python agent.py probe COUNT [STEP_S]       frames to UDP port 9 one at a time: their times through
                                               (STEP_S: the wall clock stepped while the first is held)
    python agent.py tcp SRC_NS DST_NS ADDR PORT MBYTES   one TCP transfer, prints {seconds, exact} as JSON

The TCP helpers (TcpFlow and what goes with it) are also imported by scripts that
drive several transfers from one process: a socket lives in the namespace of the
thread that made it, so one process reaches hosts in other namespaces (in_netns).
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

IFACE = "h0"
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_OUTGOING = 4
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
PACKET_STATISTICS = 6
SO_RCVBUFFORCE = 33
CLONE_NEWNET = 0x40000000
ETH_P_IP = 0x0800


def read_stats(path: str) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(b"stats\n")   # the request bridge/control.py reads
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data)


def wait_stats(path: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return read_stats(path)
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def reload(path: str, config_path: str, text: str, timeout: float = 20) -> dict:
    """Writes the rule file, SIGHUP, waits until the appliance took it (or refused it)."""
    before = wait_stats(path)
    with open(config_path, "w") as f:
        f.write(text)
    os.kill(before["pid"], signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = read_stats(path)
        if st["reloads"] > before["reloads"] or st["last_reload_error"] not in (None, before["last_reload_error"]):
            return st
        time.sleep(0.05)
    raise TimeoutError("the appliance did not reload")


def capture_socket() -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    s.bind((IFACE, 0))
    s.setblocking(False)
    return s


def receive(s: socket.socket) -> bytes | None:
    """One frame arriving on IFACE (not our own), with its outer tag put back; None when none waits."""
    while True:
        try:
            data, anc, _, addr = s.recvmsg(65600, socket.CMSG_SPACE(32))
        except BlockingIOError:
            return None
        if addr[2] == PACKET_OUTGOING:
            continue
        for level, kind, aux in anc:
            if level == SOL_PACKET and kind == PACKET_AUXDATA:
                status, _, _, _, _, tci, tpid = struct.unpack("IIIHHHH", aux[:20])
                if status & TP_STATUS_VLAN_VALID:
                    tpid = tpid if status & TP_STATUS_VLAN_TPID_VALID else 0x8100
                    data = data[:12] + struct.pack("!HH", tpid, tci) + data[12:]
        return data


SETTLE_QUIET_S = 0.1


def settle(control: str, cap: socket.socket, timeout: float = 10) -> None:
    """Waits until the frames of the case before have all left and arrived: none held by the
    appliance (its delay queue, kernel mode's `queued`), then none arriving for SETTLE_QUIET_S.
    A frame held past that case's end would otherwise be taken for this case's."""
    deadline = time.monotonic() + timeout
    while read_stats(control).get("queued") and time.monotonic() < deadline:
        time.sleep(0.01)
    quiet = time.monotonic() + SETTLE_QUIET_S
    while time.monotonic() < quiet:
        if receive(cap) is None:
            time.sleep(0.001)
        else:
            quiet = time.monotonic() + SETTLE_QUIET_S


# A case whose frames went out later than this after their times is sent again (up to
# CASE_ATTEMPTS times): under TCG the sender can stall for milliseconds, and a frame sent 5 ms
# late no longer overtakes one delayed by 10 ms (tests/golden/delay-fixed.yaml).
SEND_LATE_LIMIT_NS = 2_000_000
CASE_ATTEMPTS = 5


def run_case(case: dict, tx: socket.socket, control: str) -> tuple[list, int]:
    """The frames out, with their times from the case's start, and how late the latest input
    went out (ns)."""
    cap = capture_socket()
    settle(control, cap)
    got = []
    late = 0
    t0 = time.monotonic()
    for at_ns, frame in case["in"]:
        while (delay := t0 + at_ns / 1e9 - time.monotonic()) > 0:
            time.sleep(min(delay, 0.001))
        tx.send(bytes.fromhex(frame))
        late = max(late, round((time.monotonic() - t0) * 1e9) - at_ns)
    last = t0 + case["in"][-1][0] / 1e9 if case["in"] else t0
    deadline = last + case.get("wait", 2.0)
    quiet_until = None
    while time.monotonic() < deadline:
        frame = receive(cap)
        if frame is None:
            if len(got) >= case["expect"]:
                quiet_until = quiet_until or time.monotonic() + case.get("grace", 0.15)
                if time.monotonic() > quiet_until:
                    break
            time.sleep(0.001)
            continue
        got.append([round((time.monotonic() - t0) * 1e9), frame.hex()])
    cap.close()
    return got, late


def golden(cases_path: str, results_path: str, control: str, config_path: str) -> None:
    with open(cases_path) as f:
        cases = json.load(f)
    tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    tx.bind((IFACE, 0))
    results = {}
    for case in cases:
        st = reload(control, config_path, case["config"])
        if st["last_reload_error"]:
            results[case["name"]] = {"error": st["last_reload_error"]}
            continue
        lateness = []
        while len(lateness) < CASE_ATTEMPTS:
            if lateness:   # afresh: the counters count one attempt
                reload(control, config_path, case["config"])
            frames, late = run_case(case, tx, control)
            lateness.append(late)
            if late <= SEND_LATE_LIMIT_NS:
                break
        results[case["name"]] = {"frames": frames, "stats": read_stats(control), "send_late_ns": lateness}
    with open(results_path, "w") as f:
        json.dump(results, f)


def udp_frame(port: int, payload: bytes = b"0123456789") -> bytes:
    """A UDP frame tagged 100 (port a); port 9 is what the tests' delay rules match."""
    assert len(payload) == 10   # the lengths below
    ip = bytes.fromhex("450000260000000040110000" "0a000001" "0a000002")
    return bytes.fromhex("020000000002" "020000000001" "8100" "0064" "0800") + ip \
        + struct.pack("!HHHH", 1000, port, 18, 0) + payload


def flood(seconds: float, pps: float) -> None:
    """UDP frames, every other one to port 9."""
    tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    tx.bind((IFACE, 0))
    frames = [udp_frame(port) for port in (9, 10)]
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        tx.send(frames[n & 1])
        n += 1
        if pps and n % 10 == 0:
            time.sleep(10 / pps)
    print(n)


def probe(count: int, step_s: int = 0) -> None:
    """COUNT frames to UDP port 9, one at a time: prints each one's time through the
    bridge (ms, monotonic clock), null for one not back within 5 s, as JSON. With step_s,
    the wall clock is stepped by that many seconds while the first frame is held."""
    tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    tx.bind((IFACE, 0))
    cap = capture_socket()
    times = []
    for i in range(count):
        payload = b"probe%05d" % i
        t0 = time.monotonic()
        tx.send(udp_frame(9, payload))
        if i == 0 and step_s:
            subprocess.run(["/usr/bin/date", "-s", f"@{int(time.time()) + step_s}"], check=True,
                           stdout=subprocess.DEVNULL)
        took = None
        while took is None and time.monotonic() - t0 < 5:
            frame = receive(cap)
            if frame is None:
                time.sleep(0.0005)
            elif frame.endswith(payload) and frame[12:16] == bytes.fromhex("810000c8"):  # tagged 200
                took = round((time.monotonic() - t0) * 1000, 1)
        times.append(took)
    print(json.dumps(times))


# ---- TCP through the bridge (hosts at their default offloads: TSO/GSO on) ----------------

def in_netns(ns: str, fn, *args):
    """fn(*args) in a thread that entered network namespace ns (ip netns add's name): the
    sockets it makes stay there, whichever thread uses them later."""
    box = {}

    def run():
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET):
                    raise OSError(ctypes.get_errno(), f"setns {ns}")
            finally:
                os.close(fd)
            box["out"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            box["err"] = e

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "err" in box:
        raise box["err"]
    return box["out"]


def link_packets(ifname: str) -> tuple[int, int]:
    """(rx_packets, tx_packets) of ifname in the calling thread's namespace: skbs, so a GSO
    super-frame counts once."""
    with open("/proc/thread-self/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == ifname:
                fields = rest.split()
                return int(fields[1]), int(fields[9])
    raise KeyError(ifname)


def _listener(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(1)
    return s


class TcpFlow:
    """One TCP connection from namespace src to a listener on port in namespace dst; a
    thread reads and hashes what arrives (received: bytes so far; eof set at the end)."""

    def __init__(self, src: str, dst: str, addr: str, port: int):
        listener = in_netns(dst, _listener, port)
        self.received, self.sent = 0, 0
        self._got, self._put = hashlib.sha256(), hashlib.sha256()
        self.eof = threading.Event()
        self._reader = threading.Thread(target=self._read, args=(listener,), daemon=True)
        self._reader.start()
        self.sock = in_netns(src, socket.socket)
        self.sock.connect((addr, port))

    def _read(self, listener: socket.socket) -> None:
        conn, _ = listener.accept()
        listener.close()
        conn.settimeout(20)   # a flow left stalled (a drop rule) ends here
        with conn:
            try:
                while chunk := conn.recv(1 << 16):
                    self._got.update(chunk)
                    self.received += len(chunk)
                self.eof.set()
            except OSError:
                pass

    def send(self, data: bytes) -> None:
        self._put.update(data)
        self.sent += len(data)
        self.sock.sendall(data)

    def finish(self, timeout: float = 60) -> bool:
        """Closes the sending side; True when everything sent arrived, byte for byte."""
        self.sock.shutdown(socket.SHUT_WR)
        done = self.eof.wait(timeout)
        self.sock.close()
        return done and self.received == self.sent and self._got.digest() == self._put.digest()

    def wait_received(self, n: int, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while self.received < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.received >= n

    def abort(self) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def tcp_transfer(src: str, dst: str, addr: str, port: int, data: bytes) -> dict:
    """data over a new connection: seconds from the first byte sent to the last received."""
    flow = TcpFlow(src, dst, addr, port)
    t0 = time.monotonic()
    flow.send(data)
    exact = flow.finish()
    return {"seconds": round(time.monotonic() - t0, 3), "exact": exact}


def tcp_capture(ifname: str) -> socket.socket:
    """Call in the receiver's namespace: IPv4 frames arriving on ifname, a buffer large
    enough for a transfer's worth of them."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
    s.bind((ifname, 0))
    s.setblocking(False)
    return s


def tcp_data_frames(s: socket.socket, dst_port: int) -> tuple[list, int]:
    """What the capture holds: [IP total length, DSCP] of each TCP frame carrying data to
    dst_port, and how many frames the socket dropped."""
    frames = []
    while True:
        try:
            f = s.recv(65600)
        except BlockingIOError:
            break
        ip = f[14:]
        ihl, total = (ip[0] & 0xf) * 4, struct.unpack("!H", ip[2:4])[0]
        if ip[9] != 6 or struct.unpack("!H", ip[ihl + 2:ihl + 4])[0] != dst_port:
            continue
        if total - ihl - (ip[ihl + 12] >> 4) * 4 > 0:
            frames.append([total, ip[1] >> 2])
    _, drops = struct.unpack("II", s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    s.close()
    return frames, drops


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "golden":
        golden(*args)
    elif cmd == "reload":  # CONTROL CONFIG NEWFILE: prints the stats after
        with open(args[2]) as f:
            print(json.dumps(reload(args[0], args[1], f.read())))
    elif cmd == "stats":
        print(json.dumps(wait_stats(args[0])))
    elif cmd == "flood":
        flood(float(args[0]), float(args[1]))
    elif cmd == "probe":
        probe(*map(int, args))
    elif cmd == "tcp":
        print(json.dumps(tcp_transfer(args[0], args[1], args[2], int(args[3]),
                                      os.urandom(int(float(args[4]) * (1 << 20))))))
    else:
        sys.exit(f"unknown command {cmd}")
