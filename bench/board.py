"""`reshaper bench --board HOST`: the board itself in the middle, every mode in turn.

    reshaper bench --board debian@bbb --trunk eth1 --vlans 100,200 --modes ring,kernel,nfqueue,linux-bridge

    this machine                                             the board (deployed by deploy.sh)
    generator, probe: frames tagged 100 --> trunk ---- eth0: eth0.100 [reshaper / bridge] eth0.200
    sink, probe:      frames tagged 200 <--                            (back out of eth0, tagged 200)

This machine's end is frames on the trunk (BoardHost): the generator sends frames tagged with
VLAN A, a packet socket filtered on tag B counts what comes back, the probe does both. The
trials are `reshaper bench`'s own
(bench/trial.py: saturation, the loss-free search, latency from the probe flow, overload), with
the board's counters in place of a namespace's (BoardCounters): its /proc/stat, softirqs and
ports read by the board's agent (bridge/bench_agent.py, one SSH session for the whole run).
CPU per frame is the board's whole CPU (one core: all it does is the device under test's),
split by kind. For each mode the agent switches the deployed service (install.sh
--switch-mode, which waits until it answers) or, for linux-bridge, stops it and makes a plain
bridge; after the trials of a mode, one more trial at 90 % of its loss-free rate runs under
`perf record -a` on the board where perf is installed. The board is put back as it was at the
end, also when the bench is interrupted (the agent does it when its SSH session ends).

SSH as deploy.sh: keys only (BatchMode), the host key checked (StrictHostKeyChecking=yes),
--port and --identity, RESHAPER_SSH_OPTS for more options; a user other than root needs
passwordless sudo.
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import shlex
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from reshaper.bench.counters import Counters
from reshaper.bench.frames import DST_MAC, MIX, SRC_MAC, frame_mix, frames_file
from reshaper.bench.generator import build_generator
from reshaper.bench.machine import machine, versions
from reshaper.bench.report import summarise
from reshaper.bench.settings import LOAD_POINTS, LOSS_FREE, OVERLOAD_FACTORS, USER_HZ, log
from reshaper.bench.probe import PROBE_PORT, Probe
from reshaper.bench.trial import Trials
from reshaper.bridge.netns import HOST_A, HOST_B, Namespace
from reshaper.lab.frame_tap import ETH_P_ALL, SOL_PACKET
from reshaper.lab.stamped import SO_RCVBUFFORCE, SO_TIMESTAMPNS, STAMP

PLACEMENT = "board"   # results' one placement: the board's one core does everything
# deploy/beaglebone/install.sh's PREFIX: the venv the service runs from
BOARD_PYTHON = "/opt/reshaper/venv/bin/python"
AGENT = "reshaper.bridge.bench_agent"
SWITCH_TIMEOUT_S = 600    # a service start on an emulated Cortex takes a minute or more
ASK_TIMEOUT_S = 120
PERF_LOAD = 0.9           # the profiled trial's load, a fraction of the loss-free rate
PERF_LEAST_S = 3.0        # and its least duration: enough samples at perf's 999 Hz
# after the generator, the board's last frames have arrived when the sink saw none for QUIET_S
QUIET_S, SETTLE_MOST_S = 0.5, 10.0


class BoardBenchError(RuntimeError):
    pass


class BoardLink:
    """SSH to the board as deploy.sh does it, and the agent's session over it."""

    def __init__(self, host: str, port: int | None, identity: str | None, tmp: Path):
        self.host = host
        self.opts = ["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "PasswordAuthentication=no",
                     "-o", "ConnectTimeout=20", "-o", "ServerAliveInterval=15",
                     "-o", "ControlMaster=auto", "-o", f"ControlPath={tmp}/cm", "-o", "ControlPersist=60"]
        if port:
            self.opts += ["-p", str(port)]
        if identity:
            self.opts += ["-i", identity, "-o", "IdentitiesOnly=yes"]
        self.opts += shlex.split(os.environ.get("RESHAPER_SSH_OPTS", ""))
        self.sudo = [] if host.startswith("root@") else ["sudo", "-n"]
        self.agent: subprocess.Popen | None = None
        self.answers: queue.Queue = queue.Queue()

    def start_agent(self) -> None:
        argv = ["ssh", *self.opts, "--", self.host, shlex.join([*self.sudo, BOARD_PYTHON, "-m", AGENT])]
        self.agent = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, start_new_session=True)   # Ctrl-C reaches us, not ssh
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.agent.stdout:
            self.answers.put(line)
        self.answers.put(None)

    def ask(self, cmd: str, timeout: float = ASK_TIMEOUT_S, **args) -> dict:
        try:
            self.agent.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
            self.agent.stdin.flush()
            line = self.answers.get(timeout=timeout)
        except (BrokenPipeError, queue.Empty):
            line = None
        if line is None:
            try:   # stdout closed: ssh is exiting, and its status can lag behind under load
                self.agent.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            err = self.agent.stderr.read() if self.agent.returncode is not None else "no answer"
            if "No module named" in err:
                err = (f"the board's reshaper has no bench agent ({AGENT}): deploy this version to it first "
                       "(deploy/beaglebone/deploy.sh HOST RULES)")
            raise BoardBenchError(f"board agent, {cmd}: {err.strip()[-1500:]}")
        answer = json.loads(line)
        if not answer.pop("ok"):
            raise BoardBenchError(f"board agent, {cmd}: {answer['error']}")
        return answer

    def close(self) -> None:
        """Ends the agent's session: it puts back what it has not put back yet."""
        if self.agent is None:
            return
        try:
            self.agent.stdin.close()
        except OSError:
            pass
        try:
            self.agent.wait(SWITCH_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.agent.kill()
            self.agent.wait()
        subprocess.run(["ssh", *self.opts, "-O", "exit", self.host], capture_output=True, timeout=30)
        self.agent = None


# linux/filter.h, linux/if_packet.h, asm-generic/socket.h: a classic BPF filter on a packet
# socket, and its counts. The kernel takes a frame's VLAN tag off into its metadata before a packet
# socket sees it, where the filter reads it with the ancillary loads.
SO_ATTACH_FILTER, PACKET_STATISTICS = 26, 6
SKF_AD_OFF, SKF_AD_VLAN_TAG, SKF_AD_VLAN_TAG_PRESENT = -0x1000, 44, 48
BPF_LD_W_ABS, BPF_LD_H_ABS, BPF_LD_B_ABS, BPF_AND_K, BPF_JEQ_K, BPF_RET_K = 0x20, 0x28, 0x30, 0x54, 0x15, 0x06
VLAN_VID_MASK = 0x0FFF
ETH_P_IP, IPPROTO_UDP = 0x0800, 17
COUNT_SNAP = 64   # the sink keeps no more of a frame than this (it counts, it does not read)


def vlan_filter(vid: int, src_mac: str, udp_dport: int | None = None,
                snaplen: int = 0xFFFF) -> list[tuple[int, int, int, int]]:
    """Accepts frames tagged vid from src_mac (the bench's own: not the board's IPv6 or IGMP on the
    VLAN) and, given udp_dport, IPv4/UDP to that port with a 20-byte IP header."""
    tag = SKF_AD_OFF + SKF_AD_VLAN_TAG
    mac = bytes.fromhex(src_mac.replace(":", ""))
    tests = [(BPF_LD_W_ABS, SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT, 1), (BPF_LD_W_ABS, tag, vid),
             (BPF_LD_W_ABS, 6, int.from_bytes(mac[:4], "big")), (BPF_LD_H_ABS, 10, int.from_bytes(mac[4:], "big"))]
    if udp_dport is not None:
        tests += [(BPF_LD_H_ABS, 12, ETH_P_IP), (BPF_LD_B_ABS, 23, IPPROTO_UDP), (BPF_LD_H_ABS, 36, udp_dport)]
    body = []
    for load, k, want in tests:
        body.append((load, 0, 0, k & 0xFFFFFFFF))
        if k == tag:
            body.append((BPF_AND_K, 0, 0, VLAN_VID_MASK))
        body.append((BPF_JEQ_K, 0, None, want))
    accept = len(body)   # then the drop, after it; a jump counts from the next instruction
    prog = [(code, jt, accept - i if jf is None else jf, k) for i, (code, jt, jf, k) in enumerate(body)]
    return prog + [(BPF_RET_K, 0, 0, snaplen), (BPF_RET_K, 0, 0, 0)]


def attach_filter(sock: socket.socket, prog: list[tuple[int, int, int, int]]) -> None:
    code = (ctypes.c_ubyte * (8 * len(prog)))(*b"".join(struct.pack("HBBI", *ins) for ins in prog))
    fprog = struct.pack("HL", len(prog), ctypes.addressof(code))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def tagged(frame: bytes, vid: int) -> bytes:
    return frame[:12] + struct.pack("!HH", 0x8100, vid) + frame[12:]


class Here:
    """This network namespace, as bridge/netns.py's Namespace for one that has a name."""
    name = None

    def ipr(self):
        from pyroute2 import IPRoute

        return IPRoute()

    @contextlib.contextmanager
    def entered(self):
        yield

    def socket(self, *args) -> socket.socket:
        return socket.socket(*args)

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(argv, **kwargs)


class BoardHost:
    """This machine's end of the board's trunk: the generator sends frames tagged with VLAN A on
    it, the sink counts those that come back tagged B (a packet socket, BPF on the tag and the
    frames' source MAC), the probe does both with stamped frames. Frames, not VLAN interfaces: a
    host kernel without 8021q (this project's own test machines) can do it, and nothing of this
    machine's stack talks on the board's VLANs. Trials run the generator in `a` (the trunk's
    namespace)."""

    def __init__(self, trunk: str, vlans: tuple[int, int], trunk_netns: str | None = None):
        self.trunk, self.vlans = trunk, vlans
        self.a = Namespace(trunk_netns) if trunk_netns else Here()
        with self.a.ipr() as ipr:
            found = ipr.link_lookup(ifname=trunk)
            if not found:
                raise BoardBenchError(f"--trunk: no interface {trunk}" + (f" in namespace {trunk_netns}"
                                                                           if trunk_netns else ""))
            ipr.link("set", index=found[0], state="up")
        self.sink = self.a.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        attach_filter(self.sink, vlan_filter(vlans[1], SRC_MAC, snaplen=COUNT_SNAP))
        self.sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 0)   # it counts; what it keeps is dropped
        self.sink.bind((trunk, ETH_P_ALL))
        self.sink_count = 0

    def delivered(self) -> int:
        """Frames tagged B received on the trunk since the start (PACKET_STATISTICS, which counts
        the socket's own drops among them and starts again at each read)."""
        packets, _ = struct.unpack("II", self.sink.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        self.sink_count += packets
        return self.sink_count

    def close(self) -> None:
        self.sink.close()


class BoardProbe(Probe):
    """bench/probe.py's probe as frames on the trunk: stamped IPv4/UDP tagged A, read back tagged B."""
    stamp_offset = 14 + 20 + 8   # Ethernet (its tag taken off), IPv4 without options, UDP

    def open(self, host: BoardHost) -> None:
        from scapy.layers.inet import IP, UDP
        from scapy.layers.l2 import Ether

        self.rx = host.a.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        attach_filter(self.rx, vlan_filter(host.vlans[1], SRC_MAC, udp_dport=PROBE_PORT))
        self.rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.rx.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
        self.rx.bind((host.trunk, ETH_P_ALL))
        self.tx = host.a.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.tx.bind((host.trunk, ETH_P_ALL))
        # UDP checksum 0 (none), as bench/probe.py's: the stamp changes, the header does not
        self.head = tagged(bytes(Ether(src=SRC_MAC, dst=DST_MAC) / IP(src=HOST_A["v4"], dst=HOST_B["v4"])
                                 / UDP(sport=PROBE_PORT, dport=PROBE_PORT, chksum=0) / bytes(STAMP.size + 48)),
                           host.vlans[0])[:-(STAMP.size + 48)]

    def send(self, payload: bytes) -> None:
        self.tx.send(self.head + payload)


class BoardCounters(Counters):
    """A trial's counters with the board in the middle: this machine's trunk as a0 (what it
    sent) and b0 (frames tagged B it received), the board's ports (as a1 and b1), CPUs, softirqs
    and service counters, from the agent."""
    whole_cpu = True   # CPU per frame: the whole board's (bench/trial.py)

    def __init__(self, host: BoardHost, link: BoardLink, ports: list[str], board_hz: int):
        self.host, self.link, self.ports = host, link, ports
        self.ipr = {"a": host.a.ipr()}
        self.scale = USER_HZ / board_hz   # the board's ticks in this machine's (bench/trial.py's USER_HZ)

    def settle(self) -> None:
        """A board, emulated above all, may hold frames for longer than a namespace's queues:
        until the sink has counted none for QUIET_S (SETTLE_MOST_S at most)."""
        deadline = time.monotonic() + SETTLE_MOST_S
        last = self.host.delivered()
        while time.monotonic() < deadline:
            time.sleep(QUIET_S)
            now = self.host.delivered()
            if now == last:
                return
            last = now

    def snap(self, dut) -> dict:
        from reshaper.bridge.proc_counters import link_stats

        board = self.link.ask("snap", ports=self.ports)
        trunk = link_stats(self.ipr["a"], self.host.trunk)
        cpu = {int(c): {k: v * self.scale for k, v in t.items()} for c, t in board["cpu"].items()}
        # the agent's own time answering (its Python is slow on the board's core) is the bench's,
        # not the device under test's: taken out of user and system, into idle
        agent = {k: v * self.scale for k, v in board["agent"].items()}
        for kind in ("user", "system"):
            left = agent[kind]
            for c in sorted(cpu):
                take = min(left, cpu[c][kind])
                cpu[c][kind] -= take
                cpu[c]["idle"] += take
                left -= take
        return {"t": time.monotonic(),
                "links": {"a0": trunk, "a1": board["links"][self.ports[0]], "b1": board["links"][self.ports[1]],
                          "b0": {"rx_packets": self.host.delivered(), "rx_dropped": trunk["rx_dropped"]}},
                "cpu": cpu, "net_rx": {int(c): v for c, v in board["net_rx"].items()},
                "rx_frames": {int(c): v for c, v in board["rx_frames"].items()},
                "backlog_dropped": board["backlog_dropped"], "napi": {}, "board_agent": agent,
                "dut": {"reshaper": board["dut"]} if board["dut"] else {}}


class BoardMode:
    """A mode of the board, as bench/trial.py measures a device under test: the agent switched
    the board to it before the trials; nothing of it runs on this machine."""
    pid = None

    def __init__(self, name: str):
        self.name = name


def board_ports(facts: dict, vlans: tuple[int, int], interface: str | None) -> list[str]:
    """The board's VLAN interfaces the bench's frames cross (install.sh names them IFACE.VLAN)."""
    iface = interface or facts["interface"]
    if not iface:
        raise BoardBenchError("the board records no trunk interface (/etc/reshaper/install.conf): "
                              "deploy with deploy.sh --vlans first, or give --board-interface")
    return [f"{iface}.{v}" for v in vlans]


def profiled_trial(trials: Trials, link: BoardLink, dut: BoardMode, size: int, measured: dict) -> dict:
    """One more trial at PERF_LOAD of the loss-free rate (saturation's offered rate when none was
    found) under `perf record -a` on the board: its top symbols, kernel and user space."""
    rate = PERF_LOAD * measured["loss_free_pps"] if measured["loss_free_pps"] else 0
    seconds = max(trials.args.duration, PERF_LEAST_S)
    # the agent answers once perf samples; the profile ends with the trial's settling
    started = link.ask("perf_start", seconds=seconds + QUIET_S)
    if not started.get("perf"):
        return {"perf": None, "reason": started.get("error") or "perf is not installed on the board "
                "(Debian: apt install linux-perf)"}
    try:
        t = trials.trial(dut, size, rate, seconds)
    finally:
        prof = link.ask("perf_stop", timeout=SWITCH_TIMEOUT_S)
    return {"perf": prof["event"], "samples": prof["samples"], "symbols": prof["symbols"], "error": prof["error"],
            "requested_pps": round(rate), "delivered_pps": t["delivered_pps"],
            "cpu": t["cpu"]["by_kind_ns_per_frame"]}


def run_board_bench(args) -> dict:
    vlans = tuple(args.vlans)
    results = {"schema": 2, "command": args.command_line, "where": "board",
               "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
               "args": {k: v for k, v in vars(args).items() if k not in ("func",)},
               "machine_before": machine(top=not args.quick), "versions": versions(),
               "placements": [PLACEMENT], "placement": {"headline": PLACEMENT},
               "loss_threshold": LOSS_FREE, "load_points": list(LOAD_POINTS),
               "overload_factors": list(OVERLOAD_FACTORS), "modes": {}}
    with tempfile.TemporaryDirectory(prefix="reshaper-bench-board-") as tmpdir:
        tmp = Path(tmpdir)
        link = BoardLink(args.board, args.port, args.identity, tmp)
        try:
            link.start_agent()
            facts = link.ask("facts")
            ports = board_ports(facts, vlans, args.board_interface)
            results["board"] = {**{k: v for k, v in facts.items() if k != "rules"}, "host": args.board,
                                "ports": ports, "vlans": list(vlans), "trunk": args.trunk}
            results["rule_file"] = {"path": "/etc/reshaper/rules.yaml (the board's)", "text": facts["rules"]}
            log(f"board {args.board}: {facts['board_model']}, kernel {facts['kernel']}, {facts['nproc']} CPU, "
                f"reshaper {facts['reshaper']} in {facts['mode']} mode; ports {', '.join(ports)}")
            results["frames"] = {"mix": list(MIX), "src_mac": SRC_MAC, "dst_mac": DST_MAC}
            gen = build_generator()
            frames = {size: frames_file(tmp / f"frames-{size}.hex", [tagged(f, vlans[0]) for _, f in frame_mix(size)])
                      for size in args.sizes}
            host = BoardHost(args.trunk, vlans, args.trunk_netns)
            counters = BoardCounters(host, link, ports, facts["user_hz"])
            try:
                trials = Trials(args, host, gen, frames, counters=counters, probe=BoardProbe, gen_ifname=args.trunk)
                trials.placement = PLACEMENT
                per = 2 + args.search_steps + len(LOAD_POINTS) + len(OVERLOAD_FACTORS)
                trials.trials_total = per * len(args.modes) * len(args.sizes)
                for mode in args.modes:   # modes outer: a switch costs the board a service start
                    measure_mode(results, mode, link, trials, ports)
            finally:
                counters.close()
                host.close()
            results["board"]["restored"] = link.ask("restore", timeout=SWITCH_TIMEOUT_S)
            log(f"board put back: {results['board']['restored']}")
        finally:
            link.close()
    results["machine_after"] = machine(top=not args.quick)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
    results["summary"] = summarise(results)
    return results


def measure_mode(results: dict, mode: str, link: BoardLink, trials: Trials, ports: list[str]) -> None:
    """Every size of one mode into results["modes"][mode]; a failure is written down and the
    other modes go on."""
    m = results["modes"][mode] = {"status": "ok", "notes": [], "placements": {PLACEMENT: {"sizes": {}}},
                                  "perf": {}}
    t0 = time.monotonic()
    try:
        m["switch"] = link.ask("mode", timeout=SWITCH_TIMEOUT_S, mode=mode, ports=ports)
    except BoardBenchError as exc:
        log(f"{mode}: {exc}")
        m.update(status="unavailable", reason=str(exc))
        return
    m["switch_seconds"] = round(time.monotonic() - t0, 1)
    log(f"{mode}: the board switched in {m['switch_seconds']:.0f} s")
    dut = BoardMode(mode)
    for size in trials.args.sizes:
        try:
            measured = trials.measure(dut, size)
            m["placements"][PLACEMENT]["sizes"][str(size)] = measured
            m["perf"][str(size)] = profiled_trial(trials, link, dut, size, measured)
        except Exception as exc:   # one size failing says so and the others go on
            log(f"{mode} {size} B: FAILED: {exc}")
            m["placements"][PLACEMENT]["sizes"][str(size)] = {"placement": PLACEMENT, "error": str(exc)}
            m["status"] = "error"
