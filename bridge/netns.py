"""Network namespaces and veth links for the demo, the tests and the benchmarks.

Everything goes through pyroute2 (no `ip` commands). A Topology is three
namespaces, host a, the bridge, host b, joined by two veth pairs:

    host a: a0 10.77.0.1/24 fd77::1/64  <->  a1 [bridge] b1  <->  b0 10.77.0.2/24 fd77::2/64 :host b

Removing a namespace removes the veth ends inside it, so cleaning up is
removing the namespaces, also those a killed run left behind (same names).

The hosts' offloads stay at veth's defaults, as in a container: TSO, GSO and
checksum offload on, so host a hands a1 whole 64 KB TCP segments with partial
checksums (super-frames), as users' hosts do.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import subprocess
import threading
import time

from pyroute2 import IPRoute, netns

HOST_A = {"v4": "10.77.0.1", "v6": "fd77::1"}
HOST_B = {"v4": "10.77.0.2", "v6": "fd77::2"}
IFA_F_NODAD = 0x02  # no duplicate address detection: the address is usable at once


class Namespace:
    """One named network namespace (as `ip netns` names them)."""

    def __init__(self, name: str):
        self.name = name

    def create(self) -> "Namespace":
        self.remove()
        netns.create(self.name)
        with self.ipr() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        return self

    def remove(self) -> None:
        if self.name in netns.listnetns():
            netns.remove(self.name)

    def ipr(self) -> IPRoute:
        return IPRoute(netns=self.name)

    def index(self, ifname: str) -> int:
        with self.ipr() as ipr:
            found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise LookupError(f"no interface {ifname} in namespace {self.name}")
        return found[0]

    @contextlib.contextmanager
    def entered(self):
        """Runs the body in this namespace (this thread); sockets made there stay there."""
        netns.pushns(self.name)
        try:
            yield
        finally:
            netns.popns()

    def socket(self, *args) -> socket.socket:
        with self.entered():
            return socket.socket(*args)

    def _preexec(self):
        netns.setns(self.name)

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(argv, preexec_fn=self._preexec, **kwargs)

    def run(self, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(argv, preexec_fn=self._preexec, **kwargs)

    def set_link(self, ifname: str, **attrs) -> None:
        with self.ipr() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], **attrs)


class Topology:
    """host a <-> bridge <-> host b, each in its own namespace."""

    def __init__(self, prefix: str = "rs"):
        self.a = Namespace(f"{prefix}-a")
        self.br = Namespace(f"{prefix}-br")
        self.b = Namespace(f"{prefix}-b")

    def __enter__(self) -> "Topology":
        try:
            self.create()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def create(self) -> None:
        for ns in (self.a, self.br, self.b):
            ns.create()
        for host, near, far, addrs in ((self.a, "a0", "a1", HOST_A), (self.b, "b0", "b1", HOST_B)):
            with host.ipr() as ipr:
                ipr.link("add", ifname=near, kind="veth", peer={"ifname": far, "net_ns_fd": self.br.name})
                idx = ipr.link_lookup(ifname=near)[0]
                ipr.addr("add", index=idx, address=addrs["v4"], prefixlen=24)
                ipr.addr("add", index=idx, address=addrs["v6"], prefixlen=64, flags=IFA_F_NODAD)
                ipr.link("set", index=idx, state="up")
            self.br.set_link(far, state="up")

    def remove(self) -> None:
        for ns in (self.a, self.br, self.b):
            ns.remove()

    def tcp_transfer(self, size: int, port: int = 8000, timeout: float = 60) -> tuple[int, bool, float]:
        """size random bytes over TCP from host a to host b: (bytes received, intact, seconds)."""
        server = self.b.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((HOST_B["v4"], port))
        server.listen(1)
        received = {"n": 0, "digest": None}

        def serve():
            conn, _ = server.accept()
            h = hashlib.sha256()
            with conn:
                while chunk := conn.recv(1 << 16):
                    h.update(chunk)
                    received["n"] += len(chunk)
            received["digest"] = h.digest()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        payload = os.urandom(size)
        start = time.monotonic()
        with self.a.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
            client.settimeout(timeout)
            client.connect((HOST_B["v4"], port))
            client.sendall(payload)
        thread.join(timeout)
        elapsed = time.monotonic() - start
        server.close()
        return received["n"], received["digest"] == hashlib.sha256(payload).digest(), elapsed
