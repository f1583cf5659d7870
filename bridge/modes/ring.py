"""`reshaper run --mode ring`: the appliance on PACKET_MMAP rings.

Set-up (pyroute2): the port interfaces must exist; a port that is down is
brought up; GRO is turned off, so that the rules see (and time) the frames of
the wire, not what the kernel merged. Super-frames still come from a veth or
tap peer with TSO/GSO on (a container's, a VM's: their default); the rings take
them whole with their GSO metadata, and TSO/GSO on the ports stay as they are,
so a super-frame the rules leave whole is cut by the egress NIC, or the kernel,
or not at all on the way to a local peer (ring/super_frames.c). The C loop
(ring/forwarder.c) then runs in slices with the GIL released; between slices
Python reloads, answers `stats` and prints status.

It carries every rule the language has: no limits.
"""
from __future__ import annotations

import math
import os
import threading

from reshaper.bridge.appliance import Appliance, SetupError
from reshaper.rules.fields import jitter_reach

# ---- the delay buffer pool, sized from the rules ----------------------------------
POOL_MAX_BYTES = 64 << 20   # the most the pool may take
POOL_MIN_FRAMES = 4096      # what it takes anyway (8 MiB at a 2 KiB slot)
ASSUMED_MBIT = 100          # the arrival line rate when the interface has no physical speed (veth, ...)
WIRE_MIN_FRAME = 84         # bytes on the wire of the smallest frame: 64 + preamble 8 + gap 12


def line_rate_mbit(interface: str) -> int:
    """A physical interface's speed (Mbit/s); ASSUMED_MBIT for virtual ones or an unknown speed."""
    base = f"/sys/class/net/{interface}"
    try:
        if not os.path.exists(f"{base}/device"):
            return ASSUMED_MBIT
        with open(f"{base}/speed") as f:
            speed = int(f.read().strip())
    except (OSError, ValueError):
        return ASSUMED_MBIT
    return speed if speed > 0 else ASSUMED_MBIT


def pool_plan(config, rates_mbit: dict[str, int] | None = None) -> tuple[int, list[str]]:
    """Buffers the delay pool needs for config, and one line per timed rule saying why.

    A rule with `rate` holds at most its `limit` frames (the engine drops the
    next one). A rule with only `delay` holds what arrives during its longest
    delay, time + jitter x the distribution's largest point, at the ingress
    line rate in minimum-size frames. The pool is the sum, at least
    POOL_MIN_FRAMES.
    """
    rates_mbit = rates_mbit or {}
    total, why = 0, []
    for rule in config.rules:
        # a scheduled rule holds what its most holding phase holds (frames of a phase before stay counted
        # in its rate queue, and leave by their departures)
        needs = [n for n in (_list_need(rule, actions, rates_mbit) for actions in rule.action_lists()) if n]
        if needs:
            need, said = max(needs)
            total += need
            why.append(f"rule {rule.name}: {said}")
    return max(total, POOL_MIN_FRAMES), why


def _list_need(rule, actions, rates_mbit: dict[str, int]) -> tuple[int, str] | None:
    """The frames one list of a rule's actions may hold, and why; None if it holds none."""
    delay = next((a for a in actions if a.kind == "delay"), None)
    rate = next((a for a in actions if a.kind == "rate"), None)
    if rate is not None:
        return rate.params["limit"], f"rate limit {rate.params['limit']} frames"
    if delay is None:
        return None
    p = delay.params
    longest_ns = p["time"] + p["jitter"] * jitter_reach(p["distribution"])
    ports = ["a", "b"] if rule.from_port == "any" else [rule.from_port]
    mbit = sum(rates_mbit.get(port, ASSUMED_MBIT) for port in ports)
    pps = mbit * 1e6 / (WIRE_MIN_FRAME * 8)
    need = math.ceil(pps * longest_ns / 1e9)
    return need, (f"{longest_ns / 1e6:g} ms x {pps:,.0f} frames/s "
                  f"({mbit} Mbit/s of {WIRE_MIN_FRAME}-byte frames) = {need} frames")


def check_pool(config, slot_size: int, rates_mbit: dict[str, int] | None = None) -> int:
    """The pool size for config; SetupError when it does not fit POOL_MAX_BYTES."""
    frames, why = pool_plan(config, rates_mbit)
    if frames * slot_size > POOL_MAX_BYTES:
        raise SetupError(
            f"the delay buffers these rules need do not fit: {frames} frames x {slot_size} bytes = "
            f"{frames * slot_size / 2**20:.0f} MiB, more than {POOL_MAX_BYTES >> 20} MiB ("
            + "; ".join(why) + "); bound a rule's queue with `rate: {bitrate, limit}`, "
            "or shorten its delay")
    return frames


def interface_mtus(config) -> tuple[dict[str, int], list[str]]:
    """The MTU of each port's interface and the interfaces that are down; a missing one is an error."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP

    mtus, down = {}, []
    with IPRoute() as ipr:
        for name, port in sorted(config.ports.items()):
            found = ipr.link_lookup(ifname=port.interface)
            if not found:
                hint = ""
                if "." in port.interface:
                    parent, _, vid = port.interface.rpartition(".")
                    hint = f" (create it: ip link add link {parent} name {port.interface} type vlan id {vid})"
                raise SetupError(f"port {name}: no interface {port.interface}{hint}")
            link = ipr.get_links(found[0])[0]
            mtus[name] = link.get_attr("IFLA_MTU")
            if not link["flags"] & IFF_UP and port.interface not in down:
                down.append(port.interface)
    return mtus, down


class HookWorker(threading.Thread):
    """The slow path: frames of hook rules, from the C loop to Python and back.

    This thread only carries frames: it sleeps on the loop's eventfd, hands each
    frame to its rule's hook (bridge/hooks.py: a thread per hook, each frame
    bounded by the hook's timeout) and puts what comes back, or the frame as
    on_error says at the deadline, on the queue back to the loop, in the rule's
    order. No hook code runs here, so nothing a hook does (raise SystemExit,
    hang) ends or stalls it; frames of other rules never come here.
    """

    def __init__(self, forwarder):
        super().__init__(name="hooks", daemon=True)
        from reshaper.ring import ffi

        self.forwarder = forwarder
        self.hooks_by_generation: dict[int, object] = {}
        self._current: int | None = None  # the generation of the running program
        self._stopping = False
        self._meta = ffi.new("struct rs_hook_meta *")
        self._out = ffi.new("struct rs_hook_meta *")
        self._put_lock = threading.Lock()  # the queue back has one producer at a time (ring/hook_queue.c)
        self._cap = forwarder.slot_size
        self._buf = ffi.new("uint8_t[]", self._cap)
        self._ffi = ffi

    def add_generation(self, generation: int, hooks) -> None:
        """The hooks of a newly loaded program. The previous program's stay for the frames it queued before
        the reload, older ones go; hooks no longer current finish what they hold, then their threads end."""
        for gen, old in list(self.hooks_by_generation.items()):
            old.close()
            if gen != self._current:
                del self.hooks_by_generation[gen]
        self.hooks_by_generation[generation] = hooks
        self._current = generation

    def stop(self) -> None:
        with self._put_lock:
            self._stopping = True  # answers still to come must not reach a forwarder about to close
        for hooks in self.hooks_by_generation.values():
            hooks.close()
        self.forwarder.hook_wake()
        self.join(5)

    def run(self) -> None:
        from reshaper.bridge.appliance import log

        fd = self.forwarder.hook_fd()
        while not self._stopping:
            os.read(fd, 8)  # blocks, without the GIL, until the loop has frames for us
            while not self._stopping and (n := self.forwarder.hook_take(self._meta, self._buf, self._cap)) > 0:
                try:
                    self._one(self._ffi.buffer(self._buf, n)[:])
                except Exception as exc:  # ours, not a hook's: logged, and the slow path goes on
                    log(f"hook slow path: {exc.__class__.__name__}: {exc}")

    def _one(self, frame: bytes) -> None:
        m = self._meta
        port, pcp, rule, gen, stamp = m.port, m.pcp, m.rule, m.gen, m.timestamp_ns
        # a frame queued under the program before a reload runs through that program's hook
        hooks = self.hooks_by_generation.get(gen)
        if not hooks or rule not in hooks.by_rule:
            self._put(port, pcp, rule, gen, stamp, [(False, frame)], None)
            return
        hook = hooks.by_rule[rule]
        hooks.submit(rule, frame, "ab"[port], stamp,
                     lambda made: self._put(port, pcp, rule, gen, stamp, made, hook))

    def _put(self, port: int, pcp: int, rule: int, gen: int, stamp: int, made, hook) -> None:
        """What a hook made of a frame, out of the ports it names (called from the hook's threads)."""
        with self._put_lock:
            if self._stopping:
                return
            out = self._out
            for back, data in made:
                out.port = port if back else port ^ 1
                out.pcp, out.rule, out.gen, out.timestamp_ns = pcp, rule, gen, stamp
                if not self.forwarder.hook_put(out, data) and hook is not None:
                    hook.counters["dropped"] += 1  # the queue back is full


class RingAppliance(Appliance):
    mode = "ring"
    drop_counters = ("ring_drops", "tx_full", "oversize")
    worker: HookWorker | None = None

    @staticmethod
    def restore(saved: dict) -> None:
        """Puts interfaces back as the state file recorded them (offloads, link state)."""
        from pyroute2 import IPRoute

        from reshaper.bridge.offloads import set_offloads

        for iface, bits in saved.get("offloads", {}).items():
            try:
                if bits:
                    set_offloads(iface, bits, True)
            except OSError:
                pass  # gone since: nothing to restore
        with IPRoute() as ipr:
            for iface in saved.get("brought_up", []):
                found = ipr.link_lookup(ifname=iface)
                if found:
                    ipr.link("set", index=found[0], state="down")

    def set_up(self, program: bytes) -> None:
        from pyroute2 import IPRoute

        from reshaper.bridge.offloads import GRO, set_offloads
        from reshaper.ring import RingForwarder, RingPort, frame_size_for

        mtus, down = interface_mtus(self.config)
        # before anything changes: a pool that cannot fit is an error at start
        self.rates_mbit = {n: line_rate_mbit(p.interface) for n, p in self.config.ports.items()}
        pool = check_pool(self.config, frame_size_for(max(mtus.values())), self.rates_mbit)
        self.changed.update(offloads={}, brought_up=[])
        for iface in sorted({p.interface for p in self.config.ports.values()}):
            try:
                self.changed["offloads"][iface] = set_offloads(iface, GRO, False)
            except OSError as exc:
                raise SetupError(f"cannot turn off GRO on {iface}: {exc}") from None
            self.record()
        self.changed["brought_up"] = down
        self.record()
        with IPRoute() as ipr:
            for iface in down:
                ipr.link("set", index=ipr.link_lookup(ifname=iface)[0], state="up")
        a, b = (RingPort(p.interface, p.vlan, mtus[n]) for n, p in sorted(self.config.ports.items()))
        self.forwarder = RingForwarder(a, b, pool_frames=pool, busy_poll_us=self.busy_poll_us, carrier=self.carrier())

    def carrier(self) -> int:
        """How frames reach the C loop (ring.h, RS_CARRIER_*): PACKET_MMAP rings."""
        from reshaper.ring import lib

        return lib.RS_CARRIER_PACKET

    def load(self, program: bytes, config):
        from reshaper.bridge.hooks import Hooks

        hooks = Hooks(config, self.mode)  # a hook that does not load refuses the program
        # on reload: the new rules' delay buffers must fit (else the old rules stay); the pool only grows
        self.forwarder.set_pool(check_pool(config, self.forwarder.slot_size, getattr(self, "rates_mbit", None)))
        engine = self.forwarder.load(program, self.seed, self.time_zero())
        generation = self.forwarder.set_hooks(set(hooks.by_rule))
        self.hooks = hooks
        if hooks and self.worker is None:
            self.worker = HookWorker(self.forwarder)
        if self.worker:
            self.worker.add_generation(generation, hooks)
        return engine

    def forward(self) -> None:
        if self.worker is not None and not self.worker.is_alive():
            # started here, after set-up dropped privileges: threads keep the capabilities they start with
            self.worker.start()
        self.forwarder.run(self.slice_ms)

    def data_stats(self) -> dict:
        return self.forwarder.stats()

    def trace_start(self, rule: int) -> None:
        self.forwarder.set_trace(True, rule)

    def trace_stop(self) -> None:
        self.forwarder.set_trace(False)

    def trace_take(self) -> list:
        return self.forwarder.trace_take()

    def trace_lost(self) -> int:
        return self.forwarder.trace_lost()

    def snapshot(self) -> dict:
        snap = super().snapshot()
        for rule, held in zip(snap["rules"], self.forwarder.rule_held(len(snap["rules"]))):
            rule["held"] = held   # frames of the rule waiting in the delay queue now
        return snap

    def tear_down(self) -> None:
        if self.worker is not None and self.worker.is_alive():
            self.worker.stop()
        if getattr(self, "forwarder", None):
            self.forwarder.close()
