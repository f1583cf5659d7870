"""`reshaper run --mode nfqueue`: a Linux bridge, br_netfilter, iptables NFQUEUE, Python verdicts.

The yardstick mode: what many people would try first. Frames cross a Linux
bridge; the bridge's own nf_call_iptables/ip6tables switches hand their IP
packets to iptables, where a chain of ours (RESHAPER) queues those entering
from each port to a queue of its own (one per port, so the queue says the
port). Each packet runs through the same C engine (reshaper._native, L3 mode)
in one C call (nfqueue_packet.c); a changed packet goes back with the verdict.
Delays hold the packet and give the verdict later, from a timer queue in this
process.

--queue-bypass makes the kernel accept packets while no process is bound to
the queue (fail-open: traffic keeps flowing if reshaper dies);
`--fail-closed` (RESHAPER_NFQUEUE_FAIL_CLOSED=1) leaves it out. Held packets
count against the queue's length (queue_maxlen); when it is full the kernel
drops new packets.

What it cannot carry (limits): what lies below the IP header (L2 matches and
sets, frame lengths) and copies (a verdict passes one packet).

Set-up and what it leaves: if the two ports are already ports of one bridge it
is reused, else a bridge rsbr<N> is made (bridge/linux_bridge.py: a wire, put
back or removed at exit). The iptables chain and the FORWARD jump are removed
at exit, and by the next start after a crash (state file).
"""
from __future__ import annotations

import heapq
import os
import re
import select
import subprocess
import time
import zlib
from collections import deque

from reshaper._native import ffi, lib
from reshaper.bridge.appliance import Appliance, SetupError, log
from reshaper.rules.binding import PORTS, Engine
from reshaper.rules.model import Config, Diagnostic

CHAIN = "RESHAPER"
QUEUE_BASE = int(os.environ.get("RESHAPER_NFQUEUE_BASE", "7100"))
QUEUE_MAXLEN = 4096
FAMILIES = ("iptables", "ip6tables")
PORT_COUNTERS = ("rx", "tx", "dropped", "held", "queue_errors", "hook_unsent")
# what NFQUEUE never shows: it hands over packets from the IP header on
L2_FIELDS = ("eth_src", "eth_dst", "vlan", "vlan_pcp")   # as match fields and as set fields


def _iptables(tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([tool, "-w", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise SetupError(f"{tool} {' '.join(args)}: {result.stderr.strip()}")
    return result


def remove_chain() -> None:
    """Removes exactly what install_chain made: the FORWARD jump and the chain."""
    for tool in FAMILIES:
        while _iptables(tool, "-D", "FORWARD", "-m", "physdev", "--physdev-is-bridged", "-j", CHAIN,
                        check=False).returncode == 0:
            pass
        _iptables(tool, "-F", CHAIN, check=False)
        _iptables(tool, "-X", CHAIN, check=False)


def install_chain(ifaces: dict[str, str], fail_open: bool) -> None:
    bypass = ["--queue-bypass"] if fail_open else []
    for tool in FAMILIES:
        _iptables(tool, "-N", CHAIN)
        for i, port in enumerate("ab"):
            _iptables(tool, "-A", CHAIN, "-m", "physdev", "--physdev-in", ifaces[port],
                      "-j", "NFQUEUE", "--queue-num", str(QUEUE_BASE + i), *bypass)
        _iptables(tool, "-I", "FORWARD", "1", "-m", "physdev", "--physdev-is-bridged", "-j", CHAIN)


# IP in one 802.1Q tag goes to iptables too (rules see the packet inside, as in ring mode);
# per network namespace
FILTER_VLAN_TAGGED = "/proc/sys/net/bridge/bridge-nf-filter-vlan-tagged"


def _ebtables(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["ebtables", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise SetupError(f"ebtables {' '.join(args)}: {result.stderr.strip()}")
    return result


def remove_bridge_filter(ifaces: list[str]) -> None:
    """Removes exactly what install_bridge_filter made: the FORWARD jumps and the chain."""
    for iface in ifaces:
        while _ebtables("-D", "FORWARD", "-i", iface, "-j", CHAIN, check=False).returncode == 0:
            pass
    _ebtables("-F", CHAIN, check=False)
    _ebtables("-X", CHAIN, check=False)


def install_bridge_filter(drop_from: list[str]) -> None:
    """Frames that never reach the queue (not IP, nor IP in one 802.1Q tag: ARP, other
    ethertypes, two tags) get at the bridge what the engine gives an unmatched frame: dropped
    when they enter by a port in drop_from (`default: drop`, or the direction `forward` leaves
    out). Rules cannot match them in this mode (NfqueueAppliance.limits)."""
    _ebtables("-N", CHAIN, "-P", "RETURN")
    for proto in ("IPv4", "IPv6"):
        _ebtables("-A", CHAIN, "-p", proto, "-j", "RETURN")
        _ebtables("-A", CHAIN, "-p", "802_1Q", "--vlan-encap", proto, "-j", "RETURN")
    for iface in drop_from:
        _ebtables("-A", CHAIN, "-i", iface, "-j", "DROP")
        _ebtables("-I", "FORWARD", "1", "-i", iface, "-j", CHAIN)


def bridge_dropped(iface: str) -> int:
    """Frames of iface the bridge filter dropped (its DROP rule's packet counter)."""
    listing = _ebtables("-L", CHAIN, "--Lc", check=False).stdout
    found = re.search(rf"^-i {re.escape(iface)} -j DROP\s*, pcnt = (\d+)", listing, re.M)
    return int(found.group(1)) if found else 0


class NfqueueAppliance(Appliance):
    mode = "nfqueue"
    namespace_wide = True   # one iptables chain and fixed queue numbers (QUEUE_BASE) per namespace
    drop_counters = ("dropped", "queue_errors", "bridge_dropped")

    @staticmethod
    def limits(config: Config) -> list[Diagnostic]:
        """What lies below the IP header, and copies."""
        problems = []

        def refuse(node, message: str) -> None:
            problems.append(Diagnostic.at(config.path, node.start_mark, message))

        why = "needs L2 access, and NFQUEUE sees packets from the IP header on (use --mode ring or kernel)"
        for rule in config.rules:
            ctx = f"rule {rule.name!r}: "
            for m in rule.matches:
                l2 = m.field in L2_FIELDS
                l2 |= m.field == "eth_type" and m.value not in ("ipv4", "ipv6")
                l2 |= m.field == "bytes" and m.value["base"] == "l2"
                if l2:
                    refuse(m.node, f"{ctx}match.{m.field} {why}")
                elif m.field == "length":
                    refuse(m.node, f"{ctx}match.length counts frame bytes, and NFQUEUE sees packets from the "
                                   "IP header on (use --mode ring or kernel)")
            for a in (a for actions in rule.action_lists() for a in actions):
                l2 = a.kind in ("push_vlan", "pop_vlan")
                l2 |= a.kind == "set" and any(k in L2_FIELDS for k in a.params)
                l2 |= a.kind == "payload" and a.params["base"] == "l2"
                if l2:
                    refuse(a.node, f"{ctx}{a.kind} {why}")
                elif a.kind == "duplicate":
                    refuse(a.node, f"{ctx}duplicate: a queue verdict passes one packet, NFQUEUE cannot send "
                                   "copies (use --mode ring or kernel)")
        return problems

    @staticmethod
    def restore(saved: dict) -> None:
        """Removes the chains, puts the VLAN switch back, undoes the bridge's set-up."""
        from reshaper.bridge import linux_bridge

        if saved.get("chain"):
            remove_chain()
        if saved.get("bridge_filter") is not None:
            remove_bridge_filter(saved["bridge_filter"])
        if saved.get("filter_vlan_tagged") is not None:
            with open(FILTER_VLAN_TAGGED, "w") as f:
                f.write(str(saved["filter_vlan_tagged"]))
        linux_bridge.restore(linux_bridge.saved_state(saved))

    def set_up(self, program: bytes) -> None:
        from netfilterqueue import NetfilterQueue

        from reshaper.bridge import linux_bridge

        ifaces = {n: p.interface for n, p in self.config.ports.items()}
        if any(p.vlan for p in self.config.ports.values()):
            raise SetupError("nfqueue mode bridges interfaces: give ports as VLAN interfaces "
                             "(a: eth0.100), not trunk form")
        self.changed.update(chain=False, linux_bridge={}, bridge_filter=None, filter_vlan_tagged=None)
        # the bridge that holds both ports already, else one of our own named after them
        self.bridge_name = (linux_bridge.common_master(ifaces)
                            or f"rsbr{zlib.crc32(''.join(sorted(ifaces.values())).encode()) % 10000}")
        linux_bridge.set_up(self.changed["linux_bridge"], self.record, self.bridge_name, ifaces,
                            settings={"br_nf_call_iptables": 1, "br_nf_call_ip6tables": 1})
        self._filter_vlan_tagged()
        self.changed["chain"] = True
        self.record()
        remove_chain()  # a chain of ours without a state file (e.g. removed by hand): start clean
        install_chain(ifaces, fail_open=os.environ.get("RESHAPER_NFQUEUE_FAIL_CLOSED") != "1")

        self.counters = {p: dict.fromkeys(PORT_COUNTERS, 0) for p in "ab"}
        self.held: list = []  # (departure ns, sequence, packet, port)
        self.seq = 0
        # what a packet's C call runs (load() points it at the engine) and leaves: the verdict, the frame
        self.packet = ffi.new("struct rs_nfq_packet *")
        self.frame = ffi.new("uint8_t[]", lib.RS_MAX_FRAME + lib.RS_FRAME_ROOM)
        self.packet.frame = self.frame
        self.frame_bytes = ffi.cast("char *", self.frame)   # ffi.unpack of a char * gives bytes
        self.hooked_rules: set[int] = set()   # the rules with a hook, kept by load()
        # `reshaper trace` (bridge/trace.py): the rule traced while a client traces ([-1]: every packet),
        # and the records this loop leaves for the control thread, at most RS_TRACE_SLOTS
        self.tracing: list[int] = []
        self.traced: deque = deque()
        self.trace_not_shown = 0
        self.queues = []
        for i, port in enumerate("ab"):
            q = NetfilterQueue()
            q.bind(QUEUE_BASE + i, self._callback(port), max_len=QUEUE_MAXLEN)
            self.queues.append(q)
        self.poller = select.poll()
        self.by_fd = {q.get_fd(): (q, port) for q, port in zip(self.queues, "ab")}
        for fd in self.by_fd:
            self.poller.register(fd, select.POLLIN)
        # hooks run on threads of their own (bridge/hooks.py): what they settle comes back to this loop,
        # which alone gives verdicts, through a deque and a pipe that wakes its poll
        self.awaiting: dict[int, tuple] = {}  # sequence -> (packet, port): packets waiting for their hook
        self.hook_done: deque = deque()       # (sequence, frames) settled, in each rule's order
        self.hook_wake_r, self.hook_wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.poller.register(self.hook_wake_r, select.POLLIN)

    def _filter_vlan_tagged(self) -> None:
        """IP in one 802.1Q tag to iptables too: set here, or by the system where this process
        may not see /proc/sys (the BeagleBone unit's ProcSubset=pid; install.sh sets it at boot)."""
        try:
            with open(FILTER_VLAN_TAGGED) as f:
                if int(f.read()):
                    return
        except OSError:
            log(f"cannot read {FILTER_VLAN_TAGGED}: IP in an 802.1Q tag reaches the rules only where the system "
                "sets net.bridge.bridge-nf-filter-vlan-tagged=1")
            return
        self.changed["filter_vlan_tagged"] = 0
        self.record()
        try:
            with open(FILTER_VLAN_TAGGED, "w") as f:
                f.write("1")
        except OSError as exc:
            raise SetupError(f"{FILTER_VLAN_TAGGED}: {exc.strerror}: set net.bridge.bridge-nf-filter-vlan-tagged=1 "
                             "(sysctl.d) so that IP in an 802.1Q tag reaches the rules") from None

    def load(self, program: bytes, config):
        from reshaper.bridge.hooks import Hooks

        # hooks load with the program, so a reload that cannot load one keeps the old pair
        hooks = Hooks(config, self.mode)
        engine = Engine(program, self.seed)
        engine.start(*self.time_zero())
        self._filter_at_bridge(config)
        if getattr(self, "hooks", None) is not None:
            self.hooks.close()  # its threads end once the packets it holds are settled
        self.hooks = hooks
        self.hooked_rules.clear()
        self.hooked_rules.update(hooks.by_rule)
        # the next packet runs the new program (self.engine, which load's caller sets, keeps it alive)
        self.packet.state = engine.state
        return engine

    def _filter_at_bridge(self, config) -> None:
        """The bridge filter for config's default and forward (made anew at each load)."""
        allowed = {"both": "ab", "a-to-b": "a", "b-to-a": "b"}[config.forward]
        ifaces = {n: p.interface for n, p in config.ports.items()}
        drop_from = [ifaces[n] for n in "ab" if config.default == "drop" or n not in allowed]
        if self.changed.get("bridge_filter") is not None:
            remove_bridge_filter(self.changed["bridge_filter"])
        self.changed["bridge_filter"] = drop_from or None
        self.record()
        remove_bridge_filter(drop_from)   # one of ours without a state file: start clean
        if drop_from:
            install_bridge_filter(drop_from)

    def _callback(self, port: str):
        """The queue's callback for port's packets. It runs per packet, so what it uses is bound
        here once, and it does only what the common verdicts need: one C call (nfqueue_packet.c)
        copies the payload in, runs the engine and says the verdict; a packet forwarded now or
        dropped is settled here, the rest (over the engine's size, delayed, a rule's hook) in _unusual."""
        run, unpack, packet, frame = lib.rs_nfq_run, ffi.unpack, self.packet, self.frame_bytes
        port_id, counters, hooked_rules = PORTS[port], self.counters[port], self.hooked_rules
        accept, drop, delayed, code_bits = lib.RS_NFQ_ACCEPT, lib.RS_NFQ_DROP, lib.RS_NFQ_DELAYED, lib.RS_NFQ_CODE_BITS
        unusual, tracing, trace = self._unusual, self.tracing, self._trace

        def on_packet(pkt) -> None:
            counters["rx"] += 1
            payload = pkt.get_payload()
            result = run(packet, payload, len(payload), port_id)
            if tracing and result >= 0:
                trace(payload, port)
            if result == drop:
                pkt.drop()
                counters["dropped"] += 1
                return
            if result == delayed or result < 0 or hooked_rules:
                unusual(pkt, port, result)
                return
            if result != accept:   # changed: its new length is above the code
                pkt.set_payload(unpack(frame, result >> code_bits))
            pkt.accept()
            counters["tx"] += 1
        return on_packet

    def _trace(self, payload: bytes, port: str) -> None:
        from reshaper.bridge.trace import TraceRecord

        v = self.packet.v
        try:
            rule = self.tracing[0]
        except IndexError:
            return   # the control thread stopped the trace meanwhile
        if rule >= 0 and v.rule != rule:
            return
        if len(self.traced) >= lib.RS_TRACE_SLOTS:
            self.trace_not_shown += 1
            return
        self.traced.append(TraceRecord(self.packet.now_ns, "ab".index(port), len(payload), v.rule, v.verdict,
                                       v.reason, v.copies, v.delay_ns, payload[:lib.RS_TRACE_HEAD]))

    # records hold the IP packet: NFQUEUE hands over nothing below it
    trace_l3 = True

    def trace_start(self, rule: int) -> None:
        self.tracing[:] = [rule]

    def trace_stop(self) -> None:
        self.tracing.clear()

    def trace_take(self) -> list:
        out = []
        while self.traced:
            out.append(self.traced.popleft())
        return out

    def trace_lost(self) -> int:
        return self.trace_not_shown

    def _unusual(self, pkt, port: str, result: int) -> None:
        """A forwarded packet the callback leaves: over the engine's size, a rule's hook, a delay."""
        counters = self.counters[port]
        if result == lib.RS_NFQ_TOO_LONG:   # larger than the engine takes: pass it as it is
            pkt.accept()
            counters["tx"] += 1
            return
        verdict, now = self.packet.v, self.packet.now_ns
        if verdict.rule in self.hooks.by_rule:
            # the verdict waits for the hook, off this loop: other packets go on meanwhile
            seq = self.seq
            self.seq += 1
            self.awaiting[seq] = (pkt, port)
            self.hooks.submit(verdict.rule, ffi.unpack(self.frame_bytes, verdict.len), port, now,
                              lambda made: self._hook_settled(seq, made), l3=True)
            return
        if verdict.flags & lib.RS_VF_MODIFIED:
            pkt.set_payload(ffi.unpack(self.frame_bytes, verdict.len))
        if verdict.delay_ns:
            heapq.heappush(self.held, (now + verdict.delay_ns, self.seq, pkt, port))
            self.seq += 1
            counters["held"] += 1
            return
        pkt.accept()
        counters["tx"] += 1

    def _hook_settled(self, seq: int, made) -> None:
        """From a hook's thread (or the deadline's): the loop gives the verdict."""
        self.hook_done.append((seq, made))
        try:
            os.write(self.hook_wake_w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already

    def _hook_verdicts(self) -> None:
        while self.hook_done:
            seq, made = self.hook_done.popleft()
            if seq not in self.awaiting:
                continue  # settled after tear_down let it go
            pkt, port = self.awaiting.pop(seq)
            counters = self.counters[port]
            if len(made) > 1 or (made and made[0][0]):
                # a verdict passes one packet: the first that goes on; the rest cannot be sent
                counters["hook_unsent"] += sum(1 for back, _ in made if back) + \
                    max(0, sum(1 for back, _ in made if not back) - 1)
            ahead = [frame for back, frame in made if not back]
            try:
                if ahead:
                    pkt.set_payload(ahead[0])
                    pkt.accept()
                    counters["tx"] += 1
                else:
                    pkt.drop()
                    counters["dropped"] += 1
            except OSError:
                counters["queue_errors"] += 1

    def _release(self) -> None:
        now = time.monotonic_ns()
        while self.held and self.held[0][0] <= now:
            _, _, pkt, port = heapq.heappop(self.held)
            try:
                pkt.accept()
                self.counters[port]["tx"] += 1
            except OSError:
                self.counters[port]["queue_errors"] += 1
            self.counters[port]["held"] -= 1

    def forward(self) -> None:
        deadline = time.monotonic_ns() + self.slice_ms * 1_000_000
        while True:
            now = time.monotonic_ns()
            if now >= deadline:
                return
            wait = deadline - now
            if self.held:
                wait = max(0, min(wait, self.held[0][0] - now))
            for fd, _ in self.poller.poll(wait / 1e6):
                if fd == self.hook_wake_r:
                    while True:
                        try:
                            if not os.read(fd, 4096):
                                break
                        except BlockingIOError:
                            break
                    continue
                q, port = self.by_fd[fd]
                try:
                    q.run(block=False)  # every packet waiting, one recv() each, no blocking
                except OSError as exc:
                    self.counters[port]["queue_errors"] += 1
                    log(f"queue read failed: {exc}")
            self._hook_verdicts()
            self._release()

    def data_stats(self) -> dict:
        ports = {p: dict(c) for p, c in self.counters.items()}
        filtered = self.changed.get("bridge_filter") or []
        for name, port in self.config.ports.items():
            # dropped at the bridge, never queued (install_bridge_filter)
            ports[name]["bridge_dropped"] = bridge_dropped(port.interface) if port.interface in filtered else 0
        return {"ports": ports, "queued": len(self.held), "bridge": self.bridge_name}

    def tear_down(self) -> None:
        # held packets leave now rather than never; then the queues go
        for _, _, pkt, _ in getattr(self, "held", []):
            try:
                pkt.accept()
            except OSError:
                pass
        self.held = []
        if getattr(self, "hooks", None) is not None:
            self.hooks.close()
        if hasattr(self, "awaiting"):
            self._hook_verdicts()
            for pkt, _ in self.awaiting.values():
                try:
                    pkt.accept()  # a packet still waiting for its hook leaves as it came
                except OSError:
                    pass
            self.awaiting = {}  # the wake pipe stays open: a hung hook's thread may still write to it
        for q in getattr(self, "queues", []):
            q.unbind()
