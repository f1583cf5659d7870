"""`reshaper bench`: the data paths side by side on one rule file (issue 7).

    reshaper bench [CONFIG] [--modes ring,nfqueue,kernel,linux-bridge,python] [--sizes 64,512,1500]
                   [--duration S] [--out DIR] [--vm] [--quick]

Topology (bridge/netns.py), all on this machine, in network namespaces:

    generator (ns a, CPU 0) a0 <-veth-> a1 [ns br: device under test, CPU 1] b1 <-veth-> b0 (ns b): sink

Every mode runs the same rule file (default examples/five-rules.yaml, ports
rewritten to plain a: a1, b: b1), on the same round-robin mix of five frames
(frame_mix: each hits another branch of the five-rule program). Modes:

  ring          `reshaper run --mode ring`, pinned to CPU 1
  nfqueue       `reshaper run --mode nfqueue`, pinned to CPU 1
  kernel        `reshaper run --mode kernel` (the module): only where modules load (--vm here)
  linux-bridge  a Linux bridge, no rules, br_netfilter hooks off, static FDB (the baseline)
  python        a naive Python forwarder: AF_PACKET recv()/send() loop (naive_forward below)

Per mode and frame size (sizes outer, modes inner, so modes are close in time):
  * saturation: the generator as fast as it goes (sendmmsg, no pacing); offered and delivered
    frames/s; when nothing is lost there, the generator could not saturate the mode (said so);
  * the loss-free rate, RFC 2544 style: a binary search of the offered rate for loss < 0.1 %;
  * one-way latency at 10, 50 and 90 % of that rate: the paced generator carries the load and
    a probe flow (UDP from ns a to a socket in ns b, default 1000/s, sleep-paced, CLOCK_REALTIME
    ns in the payload just before send(); the sink takes SO_TIMESTAMPNS) gives per-frame delays;
  * CPU per forwarded frame: the forwarder process's user+sys (ring, nfqueue, python), softirq
    time of all CPUs for the kernel paths (linux-bridge, kernel); both, and every CPU's busy
    share, are recorded for every mode;
  * drops by where: reshaper's counters (ring_drops, tx_full, oversize; nfqueue queue drops from
    /proc/PID/net/netfilter/nfnetlink_queue; engine verdicts), the Python forwarder's
    PACKET_STATISTICS, the veths' rx/tx_dropped, the backlog (softnet_stat), the rest.

The generator is bridge/bench_gen.c (an AF_PACKET sendmmsg() loop paced on the monotonic clock,
built with gcc into ~/.cache/reshaper/bench), one tool for every rate and also inside the VM
(where trafgen does not run). Delivered = b0 rx_packets, offered = a0 tx_packets + tx_dropped
(IFLA_STATS64): no user-space sink on the bulk path, b0 drops the bulk frames at once (their
destination MAC is not b0's).

--vm runs the whole bench inside the Debian-kernel VM (tests/vm), all modes together, and
writes the report and plots on the host. Output in --out: results.json, report.md, *.png.
"""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIVE_RULES = REPO / "examples" / "five-rules.yaml"
CACHE = Path(os.environ.get("RESHAPER_CACHE", Path.home() / ".cache" / "reshaper")) / "bench"
GEN_CPU, FWD_CPU = 0, 1
SRC_MAC, DST_MAC = "02:00:00:00:aa:01", "02:00:00:00:bb:01"
BRIDGE_DEV = "rsbench0"
ALL_MODES = ("ring", "nfqueue", "kernel", "linux-bridge", "python", "bridge-netfilter", "nfqueue-accept")
DEFAULT_MODES = ALL_MODES[:5]  # bridge-netfilter and nfqueue-accept: NFQUEUE's yardsticks, on request
USERSPACE = ("ring", "nfqueue", "python")
KERNEL_PATHS = ("kernel", "linux-bridge")
LOSS_FREE = 0.001          # RFC 2544 style: loss below 0.1 %
LOAD_POINTS = (0.1, 0.5, 0.9)
PROBE_PORT = 7077
AF_BRIDGE = 7
NTF_MASTER = 0x04
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
USER_HZ = os.sysconf("SC_CLK_TCK")
SO_TIMESTAMPNS = 35
SO_RCVBUFFORCE = 33
RT_PREFIX: list[str] = []   # --rt: ["chrt", "-f", "50"] for the user-space forwarders
STAMP = struct.Struct("!QQ")   # sequence, send time (CLOCK_REALTIME ns), as tests/bench_timing.py


def unwind_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every finally runs and nothing is left behind. Only in
    this process: pyroute2 forks helpers (netns.create) that get SIGTERM and must just die."""
    main_pid = os.getpid()

    def on_term(*_):
        if os.getpid() != main_pid:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        sys.exit(143)

    signal.signal(signal.SIGTERM, on_term)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- frames (shared with tests/bench_ring.py) ---------------------------------------

def frame_mix(size: int) -> list[tuple[str, bytes]]:
    """Five frames of `size` bytes, named after the rule of five-rules.yaml each one hits."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    from reshaper.bridge.netns import HOST_B

    eth = Ether(src=SRC_MAC, dst=DST_MAC)
    heads = [
        ("dns-rewrite", eth / IP(src="10.77.0.1", dst=HOST_B["v4"], ttl=64) / UDP(sport=40000, dport=53)),
        ("web-to-proxy", eth / IP(src="10.0.0.5", dst=HOST_B["v4"]) / TCP(sport=40001, dport=80, flags="A")),
        ("syn-mark", eth / IP(src="10.77.0.1", dst=HOST_B["v4"]) / TCP(sport=40002, dport=443, flags="S")),
        ("v6-hoplimit", eth / IPv6(src="fd77::1", dst="2001:db8::1", hlim=64) / UDP(sport=40003, dport=9)),
        ("no-rule", eth / IP(src="10.77.0.1", dst=HOST_B["v4"]) / UDP(sport=40004, dport=9)),
    ]
    frames = []
    for name, head in heads:
        pad = size - len(head)
        if pad < 0:
            raise SystemExit(f"size {size} is smaller than the {name} frame's headers ({len(head)} bytes)")
        frames.append((name, bytes(head / (b"\x00" * pad))))
    return frames


def trafgen_config(frames: list[tuple[str, bytes]]) -> str:
    return "".join(f"/* {name} */\n{{ {', '.join(f'0x{b:02x}' for b in data)} }}\n" for name, data in frames)


# ---- counters (shared with tests/bench_ring.py) ---------------------------------------

def link_stats(ipr, ifname: str) -> dict:
    link = ipr.get_links(ipr.link_lookup(ifname=ifname)[0])[0]
    return dict(link.get_attr("IFLA_STATS64"))


def cpu_times() -> dict[int, dict[str, int]]:
    """Per CPU, ticks of /proc/stat."""
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            m = re.match(r"cpu(\d+) (.*)", line)
            if m:
                out[int(m.group(1))] = dict(zip(names, map(int, m.group(2).split())))
    return out


def net_rx_softirqs() -> dict[int, int]:
    with open("/proc/softirqs") as f:
        lines = f.read().splitlines()
    cpus = [int(c[3:]) for c in lines[0].split()]
    for line in lines[1:]:
        fields = line.split()
        if fields[0] == "NET_RX:":
            return dict(zip(cpus, map(int, fields[1:])))
    return {}


def softnet_dropped() -> int:
    """Frames dropped because a CPU's input backlog was full (all CPUs, /proc/net/softnet_stat)."""
    try:
        with open("/proc/net/softnet_stat") as f:
            return sum(int(line.split()[1], 16) for line in f if line.strip())
    except OSError:
        return 0


def proc_cpu(pid: int) -> dict:
    """utime+stime (ticks), on-CPU ns of all threads (schedstat), context switches."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    run_ns = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                run_ns += int(f.read().split()[0])
        except OSError:
            pass
    ctx = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                key, value = line.split(":")
                ctx[key.split("_")[0]] = int(value)
    return {"ticks": utime + stime, "utime": utime, "stime": stime, "run_ns": run_ns, **ctx}


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


# ---- the machine ---------------------------------------------------------------------

def qemu_running() -> bool:
    return "qemu" in subprocess.run(["ps", "-eo", "comm"], capture_output=True, text=True).stdout


def machine(top: bool = True) -> dict:
    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    busy = []
    if top and shutil.which("top"):
        # %CPU over one second (ps shows lifetime averages): the second of top's two samples
        text = subprocess.run(["top", "-b", "-n", "2", "-d", "1", "-w", "200"], capture_output=True,
                              text=True).stdout
        for line in text.split("PID USER")[-1].splitlines()[1:]:
            f = line.split()
            try:
                if len(f) >= 12 and float(f[8].replace(",", ".")) >= 5.0:
                    busy.append(f"{f[11]} {f[8]} %")
            except ValueError:
                pass
    return {"nproc": os.cpu_count(), "kernel": platform.release(), "kernel_version": platform.version(),
            "machine": platform.machine(), "cpu_model": model,
            "loadavg": open("/proc/loadavg").read().split()[:3],
            "busy_processes": busy[:6], "qemu_running": qemu_running(),
            "modules_loadable": os.path.exists("/proc/modules")}


# ---- helpers in namespaces (shared with tests/bench_ring.py) -----------------------------

def ns_write(ns, path: str, value: str) -> None:
    """Writes a /proc/sys/net file as seen from inside a namespace."""
    ns.run(["/bin/sh", "-c", f"test -e {path} && echo {value} > {path} || true"], check=True)


def set_rps(ns, ifname: str, mask: int) -> None:
    """RPS mask of a port's receive queue: /sys of the namespace, mounted in a private mount namespace."""
    ns.run(["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
            f"mount -t sysfs sysfs /sys && echo {mask:x} > /sys/class/net/{ifname}/queues/rx-0/rps_cpus"],
           check=True)


# trafgen has no send-buffer option, and when its frames are freed on the other CPU (RPS) it
# aborts with "Flushing TX_RING failed: Resource temporarily unavailable" once the default
# send buffer is charged full; net.core.wmem_default cannot be set inside a namespace.
# This preload gives each AF_PACKET socket it opens a 4 MB buffer (SO_SNDBUFFORCE).
SNDBUF_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <sys/socket.h>
int socket(int domain, int type, int protocol)
{
	static int (*real)(int, int, int);
	int fd, size = 4 << 20;

	if (!real)
		real = (int (*)(int, int, int))dlsym(RTLD_NEXT, "socket");
	fd = real(domain, type, protocol);
	if (fd >= 0 && domain == AF_PACKET)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size));
	return fd;
}
"""


def build_shim(tmp: Path) -> Path:
    src, lib = tmp / "sndbuf_shim.c", tmp / "sndbuf_shim.so"
    src.write_text(SNDBUF_SHIM)
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(lib), str(src), "-ldl"], check=True)
    return lib


class Trafgen:
    """trafgen (netsniff-ng) on a0 in namespace a, pinned to the generator CPU (tests/bench_ring.py)."""

    def __init__(self, topo, cfg: Path, log: Path, shim: Path, rate_pps: float | None = None):
        self.env = {**os.environ, "LD_PRELOAD": str(shim)}
        self.argv = ["taskset", "-c", str(GEN_CPU), "trafgen", "--dev", "a0", "--conf", str(cfg),
                     "--cpus", "1", "--no-sock-mem", "--notouch-irq", "--no-cpu-stats"]
        if rate_pps:
            self.argv += ["--rate", f"{int(rate_pps)}pps"]
        self.log = log
        self.topo = topo
        self.proc = None

    def start(self) -> None:
        self._log = open(self.log, "w")
        # cwd: trafgen leaves .tmp_mmap.* files in its working directory
        self.proc = self.topo.a.popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT,
                                      start_new_session=True, env=self.env, cwd=self.log.parent)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # trafgen forks one worker per CPU: signal the whole group it leads
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        self.proc = None

    def output(self) -> str:
        return self.log.read_text(errors="replace")


# ---- our generator ------------------------------------------------------------------------

def build_generator(dest: Path | None = None) -> Path:
    """bridge/bench_gen.c compiled once per source (cached by content hash)."""
    import hashlib

    src = Path(__file__).with_name("bench_gen.c")
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
    dest = dest or CACHE
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"bench_gen-{digest}"
    if not out.exists():
        tmp = out.with_suffix(".tmp")
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(tmp), str(src)], check=True)
        tmp.rename(out)
    return out


# ---- the naive Python forwarder (baseline) --------------------------------------------------

def naive_forward(a: str, b: str, stats_path: str) -> None:
    """What a first attempt looks like: two AF_PACKET sockets, recv() from one, send() on the other.
    SIGUSR1 writes the counters (frames, socket drops) to stats_path; SIGTERM ends it."""
    import select

    PACKET_STATISTICS = 6
    socks = {}
    for name in (a, b):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        s.bind((name, 0x0003))
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 4 << 20)
        s.setblocking(False)
        socks[name] = s
    out = {a: socks[b], b: socks[a]}
    counts = {"rx": 0, "tx": 0, "send_errors": 0, "socket_drops": 0}

    def dump(*_):
        for s in socks.values():
            packets, drops = struct.unpack("II", s.getsockopt(263, PACKET_STATISTICS, 8))
            counts["socket_drops"] += drops   # the kernel resets them on every read
        with open(stats_path + ".tmp", "w") as f:
            json.dump(counts, f)
        os.replace(stats_path + ".tmp", stats_path)

    signal.signal(signal.SIGUSR1, dump)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    poller = select.poll()
    by_fd = {}
    for name, s in socks.items():
        poller.register(s, select.POLLIN)
        by_fd[s.fileno()] = name
    dump()
    while True:
        for fd, _ in poller.poll():
            name = by_fd[fd]
            rx, tx = socks[name], out[name]
            while True:
                try:
                    data, addr = rx.recvfrom(65536)
                except BlockingIOError:
                    break
                if addr[2] == socket.PACKET_OUTGOING:
                    continue
                counts["rx"] += 1
                try:
                    tx.send(data)
                    counts["tx"] += 1
                except OSError:
                    counts["send_errors"] += 1


# ---- devices under test ----------------------------------------------------------------------

class LinuxBridge:
    """A Linux bridge device with a1 and b1, no rules, br_netfilter hooks off, static FDB entry."""
    name = "linux-bridge"
    pid = None

    def __init__(self, topo):
        self.topo = topo

    def start(self) -> None:
        ns = self.topo.br
        for proto in ("iptables", "ip6tables", "arptables"):
            ns_write(ns, f"/proc/sys/net/bridge/bridge-nf-call-{proto}", "0")
        with ns.ipr() as ipr:
            found = ipr.link_lookup(ifname=BRIDGE_DEV)
            if found:
                ipr.link("del", index=found[0])
            ipr.link("add", ifname=BRIDGE_DEV, kind="bridge", br_stp_state=0, br_forward_delay=0)
            br = ipr.link_lookup(ifname=BRIDGE_DEV)[0]
            for ifname in ("a1", "b1"):
                ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], master=br)
            ipr.link("set", index=br, state="up")
            b1 = ipr.link_lookup(ifname="b1")[0]
            ipr.neigh("add", family=AF_BRIDGE, ifindex=b1, lladdr=DST_MAC, state=NUD_NOARP, flags=NTF_MASTER)
        time.sleep(0.2)

    def counters(self) -> dict:
        return {}

    def stop(self) -> None:
        with self.topo.br.ipr() as ipr:
            found = ipr.link_lookup(ifname=BRIDGE_DEV)
            if found:
                ipr.link("del", index=found[0])


class BridgeNetfilter(LinuxBridge):
    """The Linux bridge with br_netfilter on and one iptables/ip6tables rule every bridged packet passes."""
    name = "bridge-netfilter"
    target = ["-j", "ACCEPT"]

    def _rule(self, op: str) -> None:
        for tool in ("iptables", "ip6tables"):
            self.topo.br.run([tool, "-w", op, "FORWARD", "-m", "physdev", "--physdev-is-bridged", *self.target],
                             check=op == "-I", capture_output=True)

    def start(self) -> None:
        super().start()
        for proto in ("iptables", "ip6tables"):
            ns_write(self.topo.br, f"/proc/sys/net/bridge/bridge-nf-call-{proto}", "1")
        self._rule("-I")

    def stop(self) -> None:
        self._rule("-D")
        for proto in ("iptables", "ip6tables"):
            ns_write(self.topo.br, f"/proc/sys/net/bridge/bridge-nf-call-{proto}", "0")
        super().stop()


NFQUEUE_ACCEPT_QUEUE = 7190


class NfqueueAccept(BridgeNetfilter):
    """What many would write first: every bridged packet to NFQUEUE, a bare Python accept loop."""
    name = "nfqueue-accept"
    target = ["-j", "NFQUEUE", "--queue-num", str(NFQUEUE_ACCEPT_QUEUE), "--queue-bypass"]
    pid = None

    def start(self) -> None:
        code = ("from netfilterqueue import NetfilterQueue\n"
                "q = NetfilterQueue()\n"
                f"q.bind({NFQUEUE_ACCEPT_QUEUE}, lambda packet: packet.accept(), max_len=4096)\n"
                "q.run()\n")
        self.proc = self.topo.br.popen([*RT_PREFIX, "taskset", "-c", str(FWD_CPU), sys.executable, "-c", code],
                                       stderr=subprocess.DEVNULL)
        self.pid = self.proc.pid
        time.sleep(0.5)  # bound before the rule sends it packets
        super().start()

    def stop(self) -> None:
        super().stop()
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


class Reshaper:
    """`reshaper run CONFIG --mode M` in the bridge namespace, every thread pinned to FWD_CPU."""

    def __init__(self, topo, mode: str, config: Path, tmp: Path):
        self.topo, self.name, self.config, self.tmp = topo, mode, config, tmp
        self.control = str(tmp / f"{mode}.sock")
        self.log_path = tmp / f"{mode}.log"
        self.proc = None
        self.pid = None

    def start(self, timeout: float = 240.0) -> None:   # python under the VM's TCG starts slowly
        from reshaper.bridge.control import read_stats

        env = {**os.environ, "RESHAPER_RUN_DIR": str(self.tmp / "run")}
        argv = [*RT_PREFIX, "taskset", "-c", str(FWD_CPU), sys.executable, "-m", "reshaper", "run", str(self.config),
                "--mode", self.name, "--control", self.control, "--status-interval", "0"]
        self._log = open(self.log_path, "a")
        self.proc = self.topo.br.popen(argv, stderr=self._log, stdout=self._log, env=env)
        self.pid = self.proc.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"reshaper --mode {self.name} exited {self.proc.returncode}: "
                                   f"{self.log_path.read_text()[-800:]}")
            try:
                read_stats(self.control)
                time.sleep(0.3)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"reshaper --mode {self.name} did not come up: {self.log_path.read_text()[-800:]}")

    def counters(self) -> dict:
        from reshaper.bridge.control import read_stats

        out = {}
        for attempt in range(5):   # the control thread shares a saturated CPU: it may answer late
            try:
                out["reshaper"] = read_stats(self.control)
                break
            except OSError:
                time.sleep(0.2)
        if self.name == "nfqueue":
            # the queue's own counters, as seen in the forwarder's namespace
            try:
                with open(f"/proc/{self.pid}/net/netfilter/nfnetlink_queue") as f:
                    queues = {}
                    for line in f:
                        v = line.split()
                        queues[v[0]] = {"queue_total": int(v[2]), "queue_dropped": int(v[5]),
                                        "user_dropped": int(v[6])}
                    out["nfqueue"] = queues
            except OSError:
                pass
        return out

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self.proc = None


class NaivePython:
    """naive_forward() as its own process in the bridge namespace, pinned to FWD_CPU."""
    name = "python"

    def __init__(self, topo, tmp: Path):
        self.topo, self.tmp = topo, tmp
        self.stats_path = str(tmp / "naive.json")
        self.proc = None
        self.pid = None

    def start(self) -> None:
        argv = [*RT_PREFIX, "taskset", "-c", str(FWD_CPU), sys.executable, "-c",
                "import sys; from reshaper.bridge.bench import naive_forward; naive_forward(*sys.argv[1:])",
                "a1", "b1", self.stats_path]
        if os.path.exists(self.stats_path):
            os.unlink(self.stats_path)
        self._err = open(self.tmp / "naive.log", "a")
        self.proc = self.topo.br.popen(argv, cwd=str(REPO), stderr=self._err)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 20
        while not os.path.exists(self.stats_path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the naive Python forwarder did not start: "
                                   + (self.tmp / "naive.log").read_text()[-800:])
            time.sleep(0.05)

    def counters(self) -> dict:
        before = os.stat(self.stats_path).st_mtime_ns
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 2
        while os.stat(self.stats_path).st_mtime_ns == before and time.monotonic() < deadline:
            time.sleep(0.02)
        with open(self.stats_path) as f:
            return {"python": json.load(f)}

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


# ---- one trial: offered rate for a duration, counters before/after ----------------------------

class Probe:
    """Stamped UDP datagrams from ns a to a socket in ns b (SO_TIMESTAMPNS), sleep-paced."""

    def __init__(self, topo, pps: float):
        from reshaper.bridge.netns import HOST_B

        self.pps = pps
        self.dst = (HOST_B["v4"], PROBE_PORT)
        self.rx = topo.b.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        try:
            self.rx.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
        except OSError:
            pass
        self.rx.bind(("0.0.0.0", PROBE_PORT))
        self.tx = topo.a.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # UDP checksum 0 (none): with checksum offload the frame would leave a0 with a partial
        # checksum, which a forwarder that copies raw frames (the naive one) passes on unfixed
        self.tx.setsockopt(socket.SOL_SOCKET, 11, 1)   # SO_NO_CHECK
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _send(self) -> None:
        pad = bytes(48)
        gap = 1e9 / self.pps
        start = time.monotonic_ns()
        i = 0
        while not self._stop.is_set():
            due = start + int(i * gap)
            wait = due - time.monotonic_ns()
            if wait > 0:
                time.sleep(wait / 1e9)
            try:
                self.tx.sendto(STAMP.pack(i, time.clock_gettime_ns(time.CLOCK_REALTIME)) + pad, self.dst)
            except OSError:
                pass
            i += 1
        self.sent = i

    def stop(self) -> list[float]:
        """One-way delays in µs of the probes that arrived."""
        self._stop.set()
        self._thread.join()
        self.tx.close()
        delays = []
        self.rx.settimeout(0.3)
        while True:
            try:
                data, anc, _, _ = self.rx.recvmsg(2048, 64)
            except (socket.timeout, BlockingIOError):
                break
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= STAMP.size:
                    sec, nsec = struct.unpack("qq", payload[:16])
                    _, tx = STAMP.unpack_from(data)
                    delays.append((sec * 1_000_000_000 + nsec - tx) / 1000)
        self.rx.close()
        return delays


class Counters:
    """Snapshots of everything a trial compares: links, CPUs, softirqs, the forwarder."""

    def __init__(self, topo):
        self.ipr = {"a": topo.a.ipr(), "br": topo.br.ipr(), "b": topo.b.ipr()}

    def close(self) -> None:
        for ipr in self.ipr.values():
            ipr.close()

    def snap(self, dut) -> dict:
        s = {"t": time.monotonic(),
             "links": {"a0": link_stats(self.ipr["a"], "a0"), "a1": link_stats(self.ipr["br"], "a1"),
                       "b1": link_stats(self.ipr["br"], "b1"), "b0": link_stats(self.ipr["b"], "b0")},
             "cpu": cpu_times(), "net_rx": net_rx_softirqs(), "backlog_dropped": softnet_dropped(),
             "dut": dut.counters()}
        if dut.pid:
            try:
                s["proc"] = proc_cpu(dut.pid)
            except OSError:
                pass
        return s


def _sub(a, b):
    """a - b over nested dicts of numbers (what is not numeric is left out)."""
    if isinstance(a, dict):
        return {k: _sub(v, b.get(k, 0) if isinstance(b, dict) else 0) for k, v in a.items()
                if isinstance(v, (dict, int, float)) and not isinstance(v, bool)}
    return a - (b if isinstance(b, (int, float)) else 0)


def drops_by_where(mode: str, d: dict) -> dict:
    """Per-place drop counts of one trial (d: the counter deltas)."""
    links = d["links"]
    out = {"generator_a0_tx_dropped": links["a0"]["tx_dropped"],
           "a1_rx_dropped": links["a1"]["rx_dropped"], "b1_tx_dropped": links["b1"]["tx_dropped"],
           "b0_rx_dropped": links["b0"]["rx_dropped"], "backlog_dropped": d["backlog_dropped"]}
    dut = d.get("dut", {})
    rs = dut.get("reshaper")
    if rs:
        ports = rs.get("ports", {})
        if mode == "ring":
            out["ring_rx_ring_drops"] = sum(p.get("ring_drops", 0) for p in ports.values())
            out["ring_tx_full"] = sum(p.get("tx_full", 0) for p in ports.values())
            out["ring_oversize"] = sum(p.get("oversize", 0) for p in ports.values())
            out["ring_tx_errors"] = sum(p.get("tx_errors", 0) for p in ports.values())
        elif mode == "nfqueue":
            out["nfqueue_port_dropped"] = sum(p.get("dropped", 0) for p in ports.values())
            out["nfqueue_queue_errors"] = sum(p.get("queue_errors", 0) for p in ports.values())
        elif mode == "kernel":
            for key in ("dropped", "oversize", "queue_drops", "tx_errors"):
                v = sum(p.get(key, 0) for p in ports.values() if isinstance(p.get(key, 0), (int, float)))
                if v:
                    out[f"kernel_{key}"] = v
        engine = rs.get("engine", {})
        out["engine_dropped"] = engine.get("dropped", 0) if isinstance(engine.get("dropped", 0), (int, float)) else 0
    if "nfqueue" in dut:
        out["nfqueue_queue_dropped"] = sum(q["queue_dropped"] for q in dut["nfqueue"].values())
        out["nfqueue_user_dropped"] = sum(q["user_dropped"] for q in dut["nfqueue"].values())
    if "python" in dut:
        out["python_socket_drops"] = dut["python"].get("socket_drops", 0)
        out["python_send_errors"] = dut["python"].get("send_errors", 0)
    return out


class Bench:
    def __init__(self, args, topo, tmp: Path, gen: Path, frames: dict[int, Path]):
        self.args, self.topo, self.tmp, self.gen, self.frames = args, topo, tmp, gen, frames
        self.counters = Counters(topo)
        self.trials_done = 0
        self.trials_total = 1
        self.t0 = time.monotonic()

    def progress(self, msg: str) -> None:
        el = time.monotonic() - self.t0
        eta = el / self.trials_done * (self.trials_total - self.trials_done) if self.trials_done else 0
        log(f"[{self.trials_done:3d}/{self.trials_total} {el:5.0f} s, ~{eta:4.0f} s left] {msg}")

    def trial(self, dut, size: int, rate: float, duration: float, probe_pps: float = 0) -> dict:
        before = self.counters.snap(dut)
        probe = Probe(self.topo, probe_pps) if probe_pps else None
        if probe:
            probe.start()
        gen = self.topo.a.popen(["taskset", "-c", str(GEN_CPU), str(self.gen), "a0", str(self.frames[size]),
                                 f"{duration:.3f}", f"{rate:.0f}"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        out, err = gen.communicate(timeout=duration + 30)
        delays = probe.stop() if probe else None
        time.sleep(0.2)   # frames in flight (queues, rings) arrive
        after = self.counters.snap(dut)
        self.trials_done += 1
        try:
            genr = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise RuntimeError(f"generator failed: {err.strip()[-400:]}")
        d = _sub(after, before)
        dt = genr["seconds"]
        a0, b0 = d["links"]["a0"], d["links"]["b0"]
        sent = a0["tx_packets"] + a0["tx_dropped"]
        # b0 may count a frame the generator did not send (a stray one from a namespace's own stack,
        # or one in flight across the window's edge): delivered is capped at sent, the excess kept
        delivered_raw = b0["rx_packets"]
        delivered = min(delivered_raw, sent)
        r = {"size": size, "requested_pps": round(rate), "seconds": round(dt, 3), "generator": genr,
             "sent": sent, "delivered": delivered, "delivered_raw": delivered_raw,
             "stray_received": delivered_raw - delivered, "offered_pps": sent / dt, "delivered_pps": delivered / dt,
             "loss": max(0.0, 1 - delivered / sent) if sent else None,
             "drops": drops_by_where(dut.name, d), "loadavg": open("/proc/loadavg").read().split()[:3]}
        r["drops"]["unexplained"] = max(0, sent - delivered - sum(v for v in r["drops"].values()))
        r["generator_short"] = bool(rate and r["offered_pps"] < 0.97 * rate)
        # CPU: ticks per CPU over the counter window, per delivered frame
        window = after["t"] - before["t"]
        cpus = {}
        softirq = busy = 0
        for c, now in d["cpu"].items():
            total = sum(now.values()) or 1
            cpus[c] = {k: round(now[k] / total, 4) for k in ("user", "system", "softirq", "idle")}
            cpus[c]["busy"] = round(1 - (now["idle"] + now["iowait"]) / total, 4)
            softirq += now["softirq"]
            busy += total - now["idle"] - now["iowait"]
        r["cpu"] = {"per_cpu": cpus, "window_s": round(window, 3),
                    "net_rx_per_s": {c: v / window for c, v in d["net_rx"].items()}}
        per = (lambda ticks: ticks / USER_HZ * 1e9 / delivered) if delivered else (lambda ticks: None)
        r["cpu"]["softirq_ns_per_frame"] = per(softirq)
        r["cpu"]["all_busy_ns_per_frame"] = per(busy)
        if "proc" in d:
            p = d["proc"]
            r["cpu"]["fwd_user_ns_per_frame"] = per(p["utime"])
            r["cpu"]["fwd_sys_ns_per_frame"] = per(p["stime"])
            r["cpu"]["fwd_ns_per_frame"] = per(p["ticks"])
            r["cpu"]["fwd_run_ns_per_frame"] = p["run_ns"] / delivered if delivered else None
            r["cpu"]["fwd_cpu_share"] = p["run_ns"] / 1e9 / window
        if dut.name in KERNEL_PATHS:
            r["cpu"]["ns_per_frame"], r["cpu"]["source"] = r["cpu"]["softirq_ns_per_frame"], "softirq, all CPUs"
        else:
            r["cpu"]["ns_per_frame"] = r["cpu"].get("fwd_ns_per_frame")
            r["cpu"]["source"] = "forwarder process user+sys"
        if probe:
            lat = {"probe_pps": probe_pps, "probe_sent": probe.sent, "probe_received": len(delays)}
            if delays:
                lat.update({f"p{k}_us": round(percentile(delays, q), 1)
                            for k, q in (("50", 0.5), ("99", 0.99), ("99.9", 0.999))})
                lat["max_us"] = round(max(delays), 1)
                lat["min_us"] = round(min(delays), 1)
            lat["samples_us"] = [round(x, 1) for x in delays]
            r["latency"] = lat
        return r

    def measure(self, dut, size: int) -> dict:
        a = self.args
        res = {"search": [], "latency": {}}
        sat = self.trial(dut, size, 0, a.duration)
        res["saturation"] = sat
        self.progress(f"{dut.name:12s} {size:5d} B saturation: offered {sat['offered_pps'] / 1e3:7.1f} kpps, "
                      f"delivered {sat['delivered_pps'] / 1e3:7.1f} kpps, loss {sat['loss'] or 0:.2%}")
        notes = []
        if sat["loss"] is not None and sat["loss"] < LOSS_FREE:
            lfr = sat["offered_pps"]
            res["generator_limited"] = True
            notes.append(f"the generator could not saturate {dut.name}: nothing lost at its maximum "
                         f"({sat['offered_pps'] / 1e3:,.1f} kpps offered); the loss-free rate is at least that")
        else:
            res["generator_limited"] = False
            lo, hi = 0.0, sat["offered_pps"]
            rate = min(hi, max(sat["delivered_pps"] * 0.98, hi / 50))
            for i in range(a.search_steps):
                t = self.trial(dut, size, rate, a.search_duration)
                t["step"] = i
                res["search"].append(t)
                ok = t["loss"] is not None and t["loss"] < LOSS_FREE
                if ok:
                    lo = max(lo, min(rate, t["offered_pps"]))
                else:
                    hi = rate
                self.progress(f"{dut.name:12s} {size:5d} B search {i + 1}/{a.search_steps}: "
                              f"{rate / 1e3:7.1f} kpps requested, {t['offered_pps'] / 1e3:7.1f} offered, "
                              f"loss {t['loss'] or 0:.3%} -> {'ok' if ok else 'lossy'}")
                if t["generator_short"]:
                    notes.append(f"search step {i + 1}: offered {t['offered_pps'] / 1e3:,.1f} kpps < requested "
                                 f"{rate / 1e3:,.1f} kpps (generator short)")
                rate = (lo + hi) / 2
            # nothing loss-free yet: keep halving (a loaded machine, or a mode far below its saturation)
            extra = 0
            while lo == 0 and extra < 5 and hi > 100:
                rate = hi / 2
                t = self.trial(dut, size, rate, a.search_duration)
                t["step"] = a.search_steps + extra
                res["search"].append(t)
                ok = t["loss"] is not None and t["loss"] < LOSS_FREE
                if ok:
                    lo = min(rate, t["offered_pps"])
                else:
                    hi = rate
                extra += 1
                self.progress(f"{dut.name:12s} {size:5d} B search (lower): {rate / 1e3:7.1f} kpps requested, "
                              f"loss {t['loss'] or 0:.3%} -> {'ok' if ok else 'lossy'}")
            lfr = lo
            if lfr == 0:
                notes.append(f"no loss-free rate found above {hi / 1e3:,.1f} kpps")
        res["loss_free_pps"] = lfr
        for frac in LOAD_POINTS if lfr > 0 else ():
            probe = min(a.probe_pps, max(50.0, 0.2 * frac * lfr))
            rate = max(1.0, frac * lfr - probe)
            t = self.trial(dut, size, rate, a.duration, probe_pps=probe)
            t["load_fraction"] = frac
            res["latency"][str(frac)] = t
            lat = t["latency"]
            self.progress(f"{dut.name:12s} {size:5d} B latency at {frac:.0%} ({(rate + probe) / 1e3:7.1f} kpps): "
                          f"p50 {lat.get('p50_us', float('nan')):7.1f} µs, p99 {lat.get('p99_us', float('nan')):8.1f} µs"
                          f", loss {t['loss'] or 0:.3%}")
            if t["generator_short"]:
                notes.append(f"latency at {frac:.0%}: offered {t['offered_pps'] / 1e3:,.1f} kpps < requested "
                             f"{rate / 1e3:,.1f} kpps (generator short)")
        res["notes"] = notes
        return res


# ---- configuration -------------------------------------------------------------------------

def bench_config(config_path: Path, tmp: Path) -> tuple[Path, str, str]:
    """The rule file with its ports rewritten to plain a: a1, b: b1; (path, original, rewritten)."""
    import yaml

    text = config_path.read_text()
    doc = yaml.safe_load(text)
    doc["ports"] = {"a": "a1", "b": "b1"}
    out = f"# {config_path} with its ports rewritten for reshaper bench (a: a1, b: b1)\n" + \
        yaml.safe_dump(doc, sort_keys=False)
    path = tmp / "bench-rules.yaml"
    path.write_text(out)
    return path, text, out


def versions() -> dict:
    """Versions from package metadata: nothing is imported (matplotlib under the VM's TCG is slow)."""
    from importlib.metadata import PackageNotFoundError, version

    v = {"python": sys.version.split()[0]}
    for dist in ("reshaper", "pyroute2", "PyYAML", "scapy", "cffi", "netfilterqueue", "matplotlib"):
        try:
            v[dist] = version(dist)
        except PackageNotFoundError:
            pass
    try:
        v["git"] = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                                  capture_output=True, text=True, timeout=5).stdout.strip() or "?"
    except Exception:
        pass
    return v


def write_frames(sizes: list[int], dest: Path) -> dict[int, Path]:
    """The frame mix of each size as hex lines (bench_gen's input)."""
    out = {}
    for size in sizes:
        out[size] = dest / f"frames-{size}.hex"
        out[size].write_text("".join(data.hex() + "\n" for _, data in frame_mix(size)))
    return out


def _static_neighbours(topo) -> None:
    """a and b know each other's MAC: the probe needs no ARP (one-way forwarders work too)."""
    from reshaper.bridge.netns import HOST_A, HOST_B

    macs = {}
    for ns, ifname in ((topo.a, "a0"), (topo.b, "b0")):
        with ns.ipr() as ipr:
            macs[ifname] = ipr.get_links(ipr.link_lookup(ifname=ifname)[0])[0].get_attr("IFLA_ADDRESS")
    for ns, ifname, peer_ip, peer in ((topo.a, "a0", HOST_B["v4"], "b0"), (topo.b, "b0", HOST_A["v4"], "a0")):
        with ns.ipr() as ipr:
            ipr.neigh("replace", dst=peer_ip, lladdr=macs[peer], ifindex=ipr.link_lookup(ifname=ifname)[0],
                      state=NUD_PERMANENT)


def unavailable_reason(mode: str, in_vm: bool) -> str | None:
    if mode == "kernel" and not os.path.exists("/proc/modules"):
        return ("not available here (no loadable modules: this kernel cannot load reshaper.ko): use --vm, "
                "which runs every mode inside the Debian-kernel VM so that the kernel module's figures "
                "compare with the others")
    if mode == "kernel" and in_vm and not os.environ.get("RESHAPER_KMOD") and \
            not (REPO / "kmod" / "reshaper.ko").exists():
        return "kernel module not built (RESHAPER_KMOD unset, no kmod/reshaper.ko)"
    return None


def run_bench(args) -> dict:
    from reshaper.bridge.netns import Topology
    from reshaper.ring import GRO, GSO, TSO, set_offloads

    # this process (the probe and the bookkeeping) stays on the generator's CPU
    os.sched_setaffinity(0, {GEN_CPU})
    config_path = Path(args.config) if args.config else FIVE_RULES
    results = {"schema": 1, "command": args.command_line, "where": "vm" if args.in_vm else "host",
               "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
               "args": {k: v for k, v in vars(args).items() if k not in ("func",)},
               "machine_before": machine(top=not args.quick), "versions": versions(),
               "placement": {"generator_cpu": GEN_CPU, "forwarder_cpu": FWD_CPU, "rps": "none",
                             "forwarder_sched": "SCHED_FIFO 50 (--rt)" if RT_PREFIX else "SCHED_OTHER",
                             "offloads": "GRO/GSO/TSO off on a1, b1; TSO/GSO off on a0, b0"},
               "loss_threshold": LOSS_FREE, "load_points": list(LOAD_POINTS), "modes": {}}
    with tempfile.TemporaryDirectory(prefix="reshaper-bench-") as tmpdir, Topology("rsbn") as topo:
        tmp = Path(tmpdir)
        rules_path, original, rewritten = bench_config(config_path, tmp)
        results["rule_file"] = {"path": str(config_path), "text": original, "as_run": rewritten}
        gen = build_generator(Path(args.gen_dir) if args.gen_dir else None)
        if args.frames_dir:   # made on the host (--vm): scapy is slow to import under TCG
            frames = {size: Path(args.frames_dir) / f"frames-{size}.hex" for size in args.sizes}
        else:
            frames = write_frames(args.sizes, tmp)
        results["frames"] = {"mix": ["dns-rewrite", "web-to-proxy", "syn-mark", "v6-hoplimit", "no-rule"],
                             "src_mac": SRC_MAC, "dst_mac": DST_MAC}
        for ifname in ("a1", "b1"):
            with topo.br.entered():
                set_offloads(ifname, GRO | GSO | TSO, False)
        # hosts that send wire-size frames, as "placement" above says (Topology leaves veth's defaults)
        for ns, ifname in ((topo.a, "a0"), (topo.b, "b0")):
            with ns.entered():
                set_offloads(ifname, GSO | TSO, False)
        _static_neighbours(topo)
        # no stray IPv6 frames (router solicitations, MLD) from the bridge namespace's own devices
        for key in ("all", "default", "a1", "b1"):
            ns_write(topo.br, f"/proc/sys/net/ipv6/conf/{key}/disable_ipv6", "1")
        runnable = []
        for mode in args.modes:
            why = unavailable_reason(mode, args.in_vm)
            if why:
                results["modes"][mode] = {"status": "unavailable", "reason": why}
                log(f"{mode}: {why}")
            else:
                runnable.append(mode)
                results["modes"][mode] = {"status": "ok", "sizes": {}, "notes": []}
        bench = Bench(args, topo, tmp, gen, frames)
        per = 1 + (args.search_steps) + len(LOAD_POINTS)
        bench.trials_total = per * len(runnable) * len(args.sizes)
        try:
            for size in args.sizes:
                for mode in runnable:
                    if mode == "linux-bridge":
                        dut = LinuxBridge(topo)
                    elif mode == "bridge-netfilter":
                        dut = BridgeNetfilter(topo)
                    elif mode == "nfqueue-accept":
                        dut = NfqueueAccept(topo)
                    elif mode == "python":
                        dut = NaivePython(topo, tmp)
                    else:
                        dut = Reshaper(topo, mode, rules_path, tmp)
                    try:
                        dut.start()
                        results["modes"][mode]["sizes"][str(size)] = bench.measure(dut, size)
                    except Exception as exc:   # one mode failing says so and the others go on
                        log(f"{mode} {size} B: FAILED: {exc}")
                        results["modes"][mode]["sizes"][str(size)] = {"error": str(exc)}
                        results["modes"][mode]["status"] = "error"
                    finally:
                        dut.stop()
                        if mode == "nfqueue":
                            results["modes"][mode]["log"] = (tmp / "nfqueue.log").read_text()[-2000:] \
                                if (tmp / "nfqueue.log").exists() else ""
        finally:
            bench.counters.close()
    results["machine_after"] = machine(top=not args.quick)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
    results["summary"] = summarise(results)
    return results


# ---- summary, report, plots ----------------------------------------------------------------

def summarise(results: dict) -> dict:
    rows = []
    for mode, m in results["modes"].items():
        if m.get("status") == "unavailable":
            continue
        for size, s in m.get("sizes", {}).items():
            if "error" in s:
                continue
            sat = s["saturation"]
            lat = {k: {q: v["latency"].get(q) for q in ("p50_us", "p99_us", "p99.9_us", "max_us")}
                   for k, v in s["latency"].items()}
            cpu_at = s["latency"].get("0.9") or sat
            rows.append({"mode": mode, "size": int(size), "loss_free_pps": s["loss_free_pps"],
                         "generator_limited": s["generator_limited"],
                         "sat_offered_pps": sat["offered_pps"], "sat_delivered_pps": sat["delivered_pps"],
                         "sat_loss": sat["loss"], "cpu_ns_per_frame": cpu_at["cpu"].get("ns_per_frame"),
                         "cpu_source": cpu_at["cpu"]["source"],
                         "cpu_at": "90 % of loss-free" if "0.9" in s["latency"] else "saturation",
                         "fwd_ns_per_frame": cpu_at["cpu"].get("fwd_ns_per_frame"),
                         "softirq_ns_per_frame": cpu_at["cpu"].get("softirq_ns_per_frame"),
                         "all_busy_ns_per_frame": cpu_at["cpu"].get("all_busy_ns_per_frame"),
                         "sat_drops": sat["drops"], "latency": lat})
    base = {r["size"]: r for r in rows if r["mode"] == "linux-bridge"}
    for r in rows:
        b = base.get(r["size"])

        def ratio(key, r=r, b=b):
            return r[key] / b[key] if b and r.get(key) is not None and b.get(key) else None
        r["vs_linux_bridge"] = {"loss_free": ratio("loss_free_pps"), "saturation": ratio("sat_delivered_pps"),
                                "cpu_per_frame": ratio("cpu_ns_per_frame")}
        bl = b["latency"].get("0.5", {}) if b else {}
        rl = r["latency"].get("0.5", {})
        r["vs_linux_bridge"]["p50_at_50"] = (rl["p50_us"] / bl["p50_us"]
                                             if rl.get("p50_us") and bl.get("p50_us") else None)
    return {"rows": rows}


def fmt(v, spec=",.0f", none="–"):
    return none if v is None else format(v, spec)


def remote_recipe() -> str:
    return """## `--remote`: the real setup (external generator, BeagleBone in the middle, sink)

`reshaper bench` builds everything in namespaces on one machine. On real hardware the
three roles are three hosts; run the same pieces by hand (replace interface names):

```
 generator host  eth0.100 ---- switch (VLAN 100 and 200, trunk to the board) ---- eth0.200  sink host
                                   |
                         BeagleBone eth0 (trunk): reshaper, ports {eth0, vlan 100} / {eth0, vlan 200}
```

1. **BeagleBone** (device under test), one mode at a time, nothing else running:
   ```
   reshaper check rules.yaml --mode ring              # ports: a: {interface: eth0, vlan: 100}, b: {interface: eth0, vlan: 200}
   chrt -f 50 reshaper run rules.yaml --mode ring --status-interval 0 &   # or --mode nfqueue / --mode kernel
   # baseline: ip link add br0 type bridge; ip link add link eth0 name eth0.100 type vlan id 100;
   #           ip link add link eth0 name eth0.200 type vlan id 200; ip link set eth0.100 master br0; ...
   reshaper stats --json > before.json; sleep 30; reshaper stats --json > after.json   # drops by where
   cat /proc/stat /proc/softirqs                       # before/after each run: CPU per frame
   ```
2. **Sink host** (VLAN 200): counts frames and takes receive timestamps; its clock synchronised
   with the generator's by PTP (`ptp4l -i eth0 -S`, `phc2sys -a -r`) or both roles on one host
   with two NICs (then one clock, as here):
   ```
   ip link add link eth0 name eth0.200 type vlan id 200; ip addr add 10.77.0.2/24 dev eth0.200; ip link set eth0.200 up
   cat /sys/class/net/eth0.200/statistics/rx_packets          # before and after each trial
   .venv/bin/python -c 'from tests.bench_timing import Sink; ...'   # or any SO_TIMESTAMPNS UDP sink on port 7077
   ```
3. **Generator host** (VLAN 100):
   ```
   ip link add link eth0 name eth0.100 type vlan id 100; ip addr add 10.77.0.1/24 dev eth0.100; ip link set eth0.100 up
   ip neigh replace 10.77.0.2 lladdr <sink MAC> dev eth0.100
   gcc -O2 -o bench_gen bridge/bench_gen.c
   python3 -c 'from reshaper.bridge.bench import frame_mix; print("".join(d.hex()+"\\n" for _, d in frame_mix(64)))' > f64.hex
   taskset -c 0 ./bench_gen eth0.100 f64.hex 10 0        # saturation: frames/s the board delivers
   taskset -c 0 ./bench_gen eth0.100 f64.hex 10 RATE     # binary search RATE for loss < 0.1 %
   ```
   (edit the destination MAC in frame_mix to the sink's for a routed/learning switch; on the
   100 Mbit/s cpsw the wire limit is 148,809 frames/s at 64 B, 8,127 at 1518 B: a loss-free
   rate equal to that is the wire's, not the board's.)
"""


def report(results: dict) -> str:
    mb, ma = results["machine_before"], results["machine_after"]
    rows = results["summary"]["rows"]
    where = ("inside the Debian-kernel VM (qemu TCG, tests/vm): absolute figures are the VM's, read the ratios"
             if results["where"] == "vm" else "on this machine, in network namespaces")
    out = ["# reshaper bench", "",
           f"Command: `{results['command']}`  ",
           f"Where: {where}  ",
           f"Started {results['started']}, finished {results['finished']}  ",
           f"Machine: {mb['nproc']} CPUs ({mb['cpu_model']}), {mb['machine']}, kernel {mb['kernel']}; "
           f"load average before {' '.join(mb['loadavg'])}, after {' '.join(ma['loadavg'])}; "
           f"qemu running: before {'yes' if mb['qemu_running'] else 'no'}, after {'yes' if ma['qemu_running'] else 'no'}"
           + (f"; busy before: {', '.join(mb['busy_processes'])}" if mb["busy_processes"] else "") + "  ",
           f"Versions: {', '.join(f'{k} {v}' for k, v in results['versions'].items())}  ",
           f"Rule file: `{results['rule_file']['path']}` (ports rewritten to a: a1, b: b1; full text in results.json)",
           ""]
    host = results.get("vm", {}).get("host_machine")
    if results["where"] == "vm":
        out += ["The VM is qemu with TCG (no hardware virtualisation): every figure is emulated and ~10x below the "
                "host's; what carries over is the ratio between modes measured together in this one boot."
                + (f" Host load average when the VM finished: {' '.join(host['loadavg'])}" if host else "")
                + (f"; kernel log problems: {results['vm']['kernel_log_problems']}"
                   if results.get("vm", {}).get("kernel_log_problems") else
                   "; the guest kernel log shows no BUG/WARNING/Oops" if results.get("vm") else "") + ".", ""]
    elif mb["qemu_running"] or ma["qemu_running"] or float(mb["loadavg"][0]) > 0.5 or mb["busy_processes"]:
        out += ["**This machine was shared during the run**: load average above"
                + (", qemu running (another job's VM)" if mb["qemu_running"] or ma["qemu_running"] else "")
                + (f", busy processes {', '.join(mb['busy_processes'])}" if mb["busy_processes"] else "")
                + f"; per-trial load averages are in results.json. The device under test shares CPU {FWD_CPU} with "
                "that work (SCHED_OTHER unless --rt), so user-space modes lose frames and gain milliseconds of "
                "latency whenever the scheduler runs something else there; the kernel paths run in softirq, "
                "which preempts it. Figures drift 10-40 % between runs here; compare modes within this run "
                "(interleaved size by size), not with other runs.", ""]
    out += ["## Modes", ""]
    for mode, m in results["modes"].items():
        if m["status"] == "unavailable":
            out.append(f"* **{mode}**: {m['reason']}.")
        elif m["status"] == "error":
            errs = {s: v["error"] for s, v in m["sizes"].items() if "error" in v}
            out.append(f"* **{mode}**: FAILED: " + "; ".join(f"{s} B: {e}" for s, e in errs.items()))
        else:
            out.append(f"* **{mode}**: measured.")
    out += ["", "## Throughput and CPU (absolute)", "",
            "Loss-free: highest offered rate with loss < 0.1 % (binary search); saturation: generator unpaced. "
            "CPU/frame at 90 % of the loss-free rate: user-space modes the forwarder process's user+sys, "
            "kernel paths softirq time of all CPUs; `softirq` and `all CPUs busy` columns for every mode.", "",
            "| size B | mode | loss-free kpps | saturation offered kpps | saturation delivered kpps | loss at sat. | "
            "CPU ns/frame (source) | fwd user+sys ns/frame | softirq ns/frame | all CPUs busy ns/frame |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["size"], r["mode"])):
        out.append(f"| {r['size']} | {r['mode']} | {fmt(r['loss_free_pps'] / 1e3, ',.1f')}"
                   f"{' (generator max)' if r['generator_limited'] else ''} | {fmt(r['sat_offered_pps'] / 1e3, ',.1f')} | "
                   f"{fmt(r['sat_delivered_pps'] / 1e3, ',.1f')} | {fmt((r['sat_loss'] or 0) * 100, '.1f')} % | "
                   f"{fmt(r['cpu_ns_per_frame'])} ({r['cpu_source']}) | {fmt(r['fwd_ns_per_frame'])} | "
                   f"{fmt(r['softirq_ns_per_frame'])} | {fmt(r['all_busy_ns_per_frame'])} |")
    out += ["", "## Ratios to the Linux bridge (same run, same size)", "",
            "| size B | mode | loss-free rate | saturation delivered | CPU per frame | p50 latency at 50 % load |",
            "|---|---|---|---|---|---|"]
    gl = [r for r in rows if r["generator_limited"]]
    if gl:
        out[-2:-2] = ["`≤`/`≥`: the Linux bridge's or the mode's loss-free rate is the generator's maximum, a lower "
                      "bound (the generator could not saturate it), so the ratio is a bound; `~`: both were, the ratio "
                      "compares generator maxima, not the paths.", ""]
    for r in sorted(rows, key=lambda r: (r["size"], r["mode"])):
        v = r["vs_linux_bridge"]
        b = next((x for x in rows if x["mode"] == "linux-bridge" and x["size"] == r["size"]), None)
        # a generator-limited loss-free rate is a lower bound: so is a ratio with it on top, an upper
        # bound with it below
        mark = ("≥ " if r["generator_limited"] and not (b and b["generator_limited"]) else
                "≤ " if b and b["generator_limited"] and not r["generator_limited"] else
                "~ " if r["generator_limited"] and b and b["generator_limited"] and r["mode"] != "linux-bridge"
                else "")
        out.append(f"| {r['size']} | {r['mode']} | {mark}{fmt(v['loss_free'], '.2f')} | {fmt(v['saturation'], '.2f')} | "
                   f"{fmt(v['cpu_per_frame'], '.2f')} | {fmt(v['p50_at_50'], '.2f')} |")
    out += ["", "## One-way latency (probe flow, µs)", "",
            "At 10, 50 and 90 % of each mode's own loss-free rate (the generator carries the load minus the probe).", "",
            "| size B | mode | load | p50 | p99 | p99.9 | max | probes recv/sent | bulk loss |",
            "|---|---|---|---|---|---|---|---|---|"]
    for mode, m in results["modes"].items():
        for size, s in m.get("sizes", {}).items():
            for frac, t in s.get("latency", {}).items():
                lat = t["latency"]
                req = t["requested_pps"] + lat["probe_pps"]
                load = (f"{t['offered_pps'] / 1e3:,.1f} kpps" if t["offered_pps"] >= 0.97 * req else
                        f"asked {req / 1e3:,.1f}, offered {t['offered_pps'] / 1e3:,.1f} kpps")
                out.append(f"| {size} | {mode} | {float(frac):.0%} ({load}) | "
                           f"{fmt(lat.get('p50_us'), ',.1f')} | {fmt(lat.get('p99_us'), ',.1f')} | "
                           f"{fmt(lat.get('p99.9_us'), ',.1f')} | {fmt(lat.get('max_us'), ',.1f')} | "
                           f"{lat['probe_received']}/{lat['probe_sent']} | {(t['loss'] or 0) * 100:.2f} %"
                           f"{' (above 0.1 %: not loss-free on this repeat)' if (t['loss'] or 0) >= LOSS_FREE else ''} |")
    out += ["", "## Drops by where, at saturation", "",
            "| size B | mode | sent | delivered | where (counts) |", "|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["size"], r["mode"])):
        m = results["modes"][r["mode"]]["sizes"][str(r["size"])]["saturation"]
        nz = ", ".join(f"{k} {v:,}" for k, v in r["sat_drops"].items() if v) or "none"
        out.append(f"| {r['size']} | {r['mode']} | {m['sent']:,} | {m['delivered']:,} | {nz} |")
    notes = [(mode, size, n) for mode, m in results["modes"].items() for size, s in m.get("sizes", {}).items()
             for n in s.get("notes", [])]
    out += ["", "## Generator limits", "",
            f"For the kernel paths (linux-bridge, kernel) the generator's maximum is not independent of the path: veth "
            f"runs the whole bridge path inside the generator's send() on CPU {GEN_CPU}, so `(generator max)` there is "
            f"what generator + path manage together on one CPU; between two kernel paths its ratio still reflects the "
            f"paths' cost (the generator's share is the same). User-space modes only put a1's receive on CPU {GEN_CPU}. "
            "The latency probe (Python) also runs on that CPU: where a row says `asked X, offered Y`, the paced "
            "generator fell short and the latency was taken at the lower load.", ""]
    if notes:
        out += [f"* {mode} {size} B: {n}" for mode, size, n in notes]
    else:
        out.append("* The generator saturated every mode (loss at its maximum rate) and reached every requested rate.")
    out += ["", "## Where each number came from", "",
            "* Topology: generator namespace `a` (a0) -> veth -> device-under-test namespace `br` (a1, b1) -> veth -> "
            "sink namespace `b` (b0). Offered = a0 tx_packets + tx_dropped, delivered = b0 rx_packets "
            "(IFLA_STATS64 via pyroute2); bulk frames carry a foreign destination MAC and are dropped by b0 at once.",
            f"* Generator: `bridge/bench_gen.c`, AF_PACKET sendmmsg() (qdisc bypass, 4 MB SO_SNDBUFFORCE), paced on "
            f"CLOCK_MONOTONIC (batches of up to 32 when behind), pinned to CPU {GEN_CPU}; 5-frame round-robin mix "
            "(dns-rewrite, web-to-proxy, syn-mark, v6-hoplimit, no rule).",
            f"* Device under test: pinned to CPU {FWD_CPU} (every thread), "
            f"{results['placement'].get('forwarder_sched', 'SCHED_OTHER')}, no RPS. veth delivers on the *sending* CPU: "
            f"a1's receive, and for the kernel paths (linux-bridge, kernel) the whole bridge path a1 -> bridge -> b1 -> b0, "
            f"run in softirq on CPU {GEN_CPU} beside the generator; a user-space forwarder's send() runs b0's receive on "
            f"CPU {FWD_CPU}. So the kernel paths compete with the generator for CPU {GEN_CPU}, the user-space ones get a "
            "CPU of their own: on real NICs interrupts decide this instead.",
            "* Latency: a probe flow (UDP, 64-byte payload, ≤ 1000/s, sleep-paced) from ns a to a socket in ns b; the "
            "payload carries CLOCK_REALTIME ns taken just before sendto(), the sink reads the kernel's SO_TIMESTAMPNS "
            "(tests/bench_timing.py's method). Same machine, same clock. Probes take the no-rule path of the program.",
            "* CPU: /proc/stat per CPU (ticks of 1/%d s), /proc/PID/stat utime+stime of the forwarder, per delivered frame "
            "over the trial. A forwarder's stime includes the receive softirq its send() runs for b0." % USER_HZ,
            "* Drops: reshaper stats (ring: ring_drops, tx_full, oversize; engine verdicts `engine_dropped`), "
            "nfqueue: /proc/PID/net/netfilter/nfnetlink_queue (queue_dropped: queue full; user_dropped: netlink "
            "buffer), python: PACKET_STATISTICS tp_drops, interfaces: rx/tx_dropped, backlog: /proc/net/softnet_stat; "
            "`unexplained` = sent - delivered - the rest (e.g. veth drops not counted anywhere).",
            f"* Settings: trial {results['args']['duration']:g} s (search trials {results['args']['search_duration']:g} s, "
            f"{results['args']['search_steps']} steps), loss threshold {LOSS_FREE:.1%}.", ""]
    out.append(remote_recipe())
    return "\n".join(out)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plots(results: dict, out_dir: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["summary"]["rows"]
    modes = [m for m in results["modes"] if any(r["mode"] == m for r in rows)]
    colors = {m: c for m, c in zip(ALL_MODES, ("tab:blue", "tab:orange", "tab:red", "tab:green", "tab:purple",
                                               "tab:olive", "tab:brown"))}
    sub = " (VM)" if results["where"] == "vm" else ""
    written = []

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for mode in modes:
        rs = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["size"])
        ax.plot([r["size"] for r in rs], [r["loss_free_pps"] / 1e3 for r in rs], "o-", color=colors[mode],
                label=f"{mode} loss-free")
        ax.plot([r["size"] for r in rs], [r["sat_delivered_pps"] / 1e3 for r in rs], "x--", color=colors[mode],
                alpha=0.6, label=f"{mode} at saturation")
    ax.set_xlabel("frame size (bytes, without FCS)")
    ax.set_ylabel("frames/s (thousands)")
    ax.set_title(f"Throughput vs frame size{sub}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    written.append(_save(fig, out_dir / "throughput.png"))

    sizes = sorted({r["size"] for r in rows})
    fig, axes = plt.subplots(1, max(1, len(sizes)), figsize=(5.5 * max(1, len(sizes)), 4.5), squeeze=False)
    styles = {"0.1": ":", "0.5": "-", "0.9": "--"}
    for ax, size in zip(axes[0], sizes):
        for mode in modes:
            s = results["modes"][mode]["sizes"].get(str(size), {})
            for frac, t in s.get("latency", {}).items():
                xs = sorted(t["latency"]["samples_us"])
                if not xs:
                    continue
                ys = [(i + 1) / len(xs) for i in range(len(xs))]
                ax.plot(xs, ys, styles.get(frac, "-"), color=colors[mode],
                        label=f"{mode} {float(frac):.0%}", linewidth=1.2)
        ax.set_xscale("log")
        ax.set_xlabel("one-way latency (µs, log)")
        ax.set_ylabel("fraction of probes")
        ax.set_title(f"Latency CDF, {size} B{sub}")
        ax.grid(True, alpha=0.3, which="both")
        ax.legend(fontsize=6, ncol=2)
    written.append(_save(fig, out_dir / "latency_cdf.png"))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    width = 0.8 / max(1, len(modes))
    for i, mode in enumerate(modes):
        xs, ys = [], []
        for j, size in enumerate(sizes):
            r = next((r for r in rows if r["mode"] == mode and r["size"] == size), None)
            if r and r["cpu_ns_per_frame"] is not None:
                xs.append(j + i * width)
                ys.append(r["cpu_ns_per_frame"])
        ax.bar(xs, ys, width, color=colors[mode],
               label=f"{mode} ({'softirq' if mode in KERNEL_PATHS else 'process user+sys'})")
    ax.set_xticks([j + width * (len(modes) - 1) / 2 for j in range(len(sizes))])
    ax.set_xticklabels([f"{s} B" for s in sizes])
    ax.set_ylabel("CPU ns per forwarded frame")
    ax.set_title(f"CPU per frame at 90 % of the loss-free rate{sub}")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    written.append(_save(fig, out_dir / "cpu_per_frame.png"))
    return written


def write_outputs(results: dict, out_dir: Path, with_plots: bool = True) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "results.json", "w") as f:
        json.dump(results, f, indent=1, default=str)
    if with_plots:
        results["plots"] = [p.name for p in plots(results, out_dir)]
        with open(out_dir / "results.json", "w") as f:
            json.dump(results, f, indent=1, default=str)
    (out_dir / "report.md").write_text(report(results) + "\n" + "".join(
        f"\n![{p}]({p})\n" for p in results.get("plots", [])))


# ---- --vm -----------------------------------------------------------------------------------

def run_in_vm(args) -> dict:
    """The whole bench inside the Debian-kernel VM; results.json comes back through a 9p share."""
    if (REPO / "tests" / "vm").is_dir() and str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))   # the console script does not have the source tree on its path
    try:
        from tests.kmod.common import GUEST_SETUP, build_module, python_bundle, shares
        from tests.vm import VM, kernel_problems, prepare
    except ImportError as exc:
        raise SystemExit(f"--vm needs the source tree (tests/vm, tests/kmod): {exc}")
    prepare(install=False)
    build = build_module()
    python_bundle(build)
    build_generator(build)
    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    write_frames(args.sizes, out_dir)
    guest_out = "/benchout"
    share = {**shares(build), str(out_dir): guest_out}
    inner = ["$PY", "-m", "reshaper", "bench"] + ([args.config] if args.config else []) + [
        "--modes", ",".join(args.modes), "--sizes", ",".join(map(str, args.sizes)),
        "--duration", str(args.duration), "--search-steps", str(args.search_steps),
        "--search-duration", str(args.search_duration), "--probe-pps", str(args.probe_pps),
        "--out", guest_out, "--in-vm", "--frames-dir", guest_out, *(["--rt"] if args.rt else []), "--no-plots", "--gen-dir", "/kmod"]
    script = (". /tmp/env.sh\nexport RESHAPER_CACHE=/tmp/cache\n"
              "for m in veth br_netfilter xt_physdev xt_NFQUEUE nfnetlink_queue nf_tables nft_compat "
              "iptable_filter ip6table_filter; do modprobe $m 2>/dev/null; done\n"
              f"{' '.join(inner)} >{guest_out}/progress.log 2>&1; rc=$?\n"
              f"tail -40 {guest_out}/progress.log; exit $rc\n")
    host_before = machine(top=False)
    log(f"booting the VM (qemu TCG; minutes): {' '.join(inner)}")
    progress = out_dir / "progress.log"
    progress.unlink(missing_ok=True)
    done = threading.Event()

    def follow():   # the guest's progress lines, as they come through the share
        pos = 0
        while not done.wait(2.0):
            try:
                with open(progress) as f:
                    f.seek(pos)
                    text = f.read()
                    pos = f.tell()
            except OSError:
                continue
            for line in text.splitlines():
                log(f"vm: {line}")

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    try:
        with VM(shares=share, cpus=2, memory_mb=1536) as vm:
            status, out = vm.run(GUEST_SETUP, 120)
            if status != 0:
                raise SystemExit(f"VM set-up failed:\n{out}")
            status, out = vm.run(script, args.vm_timeout)
    finally:
        done.set()
        follower.join()
    (out_dir / "vm.log").write_text(out)
    if status != 0:
        raise SystemExit(f"the bench inside the VM failed ({status}); see {out_dir / 'vm.log'}:\n{out[-3000:]}")
    with open(out_dir / "results.json") as f:
        results = json.load(f)
    results["command"] = args.command_line
    results["vm"] = {"kernel_log_problems": kernel_problems(vm.kernel_log), "host_before": host_before,
                     "host_machine": machine(top=False), "boot_seconds": round(vm.boot_seconds, 1)}
    return results


# ---- command line ------------------------------------------------------------------------------

def add_arguments(p) -> None:
    p.add_argument("config", metavar="CONFIG", nargs="?",
                   help="rule file (default examples/five-rules.yaml); its ports are rewritten to the bench's")
    p.add_argument("--modes", default=None,
                   help=f"comma-separated subset of {','.join(ALL_MODES)} (default all; --quick: ring,nfqueue,"
                        "linux-bridge,python)")
    p.add_argument("--sizes", default=None, help="frame sizes in bytes without FCS (default 64,512,1500; --quick: 64)")
    p.add_argument("--duration", type=float, default=None, help="seconds per saturation and latency trial "
                   "(default 3; --quick 0.6)")
    p.add_argument("--search-duration", type=float, default=None, help="seconds per search trial (default 2)")
    p.add_argument("--search-steps", type=int, default=None, help="binary-search steps (default 6; --quick 2)")
    p.add_argument("--probe-pps", type=float, default=None,
                   help="latency probe rate (default 1000/s; 250/s with --vm, where the Python probe is costly)")
    p.add_argument("--out", default="bench-out", metavar="DIR", help="output folder (default ./bench-out)")
    p.add_argument("--vm", action="store_true", help="run every mode inside the Debian-kernel VM (kernel mode too)")
    p.add_argument("--vm-timeout", type=float, default=3600, help=argparse_suppress())
    p.add_argument("--rt", action="store_true", help="run the user-space forwarders SCHED_FIFO 50 (chrt): "
                   "on a shared machine they then are not queued behind other work")
    p.add_argument("--quick", action="store_true", help="a short run: about a second per trial, one size")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNGs")
    p.add_argument("--in-vm", action="store_true", help=argparse_suppress())
    p.add_argument("--gen-dir", help=argparse_suppress())
    p.add_argument("--frames-dir", help=argparse_suppress())


def argparse_suppress():
    import argparse
    return argparse.SUPPRESS


def main(args) -> int:
    args.command_line = "reshaper bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 1 and \
        sys.argv[1] == "bench" else "reshaper " + " ".join(sys.argv[1:])
    q = args.quick
    args.modes = [m for m in (args.modes or ("ring,nfqueue,linux-bridge,python" if q else ",".join(DEFAULT_MODES)))
                  .split(",") if m]
    if bad := [m for m in args.modes if m not in ALL_MODES]:
        log(f"reshaper bench: unknown modes {','.join(bad)} (known: {','.join(ALL_MODES)})")
        return 2
    try:
        args.sizes = [int(s) for s in (args.sizes or ("64" if q else "64,512,1500")).split(",") if s]
    except ValueError:
        log("reshaper bench: --sizes wants integers, e.g. 64,512,1500")
        return 2
    if any(s < 60 or s > 1514 for s in args.sizes):
        log("reshaper bench: sizes must be 60..1514 bytes (Ethernet frame without FCS, MTU 1500)")
        return 2
    args.duration = args.duration or (0.6 if q else 3.0)
    args.probe_pps = args.probe_pps or (250.0 if args.vm else 1000.0)
    args.search_duration = args.search_duration or (args.duration if q else 2.0)
    args.search_steps = args.search_steps if args.search_steps is not None else (2 if q else 6)
    if args.config and not os.path.exists(args.config):
        log(f"reshaper bench: {args.config}: no such file")
        return 2
    if args.config:
        from reshaper.rules.config import ConfigError, load_config
        try:
            load_config(args.config)
        except ConfigError as exc:
            for d in exc.diagnostics:
                log(str(d))
            return 1
    if os.geteuid() != 0:
        log("reshaper bench: needs root (network namespaces, AF_PACKET)")
        return 2
    if (os.cpu_count() or 1) < 2:
        log("reshaper bench: needs two CPUs (generator and device under test each get one)")
        return 2
    unwind_on_sigterm()
    out_dir = Path(args.out)
    if args.rt:
        RT_PREFIX[:] = ["chrt", "-f", "50"]
    if args.vm:
        results = run_in_vm(args)
    else:
        results = run_bench(args)
    write_outputs(results, out_dir, with_plots=args.plots)
    log(f"wrote {out_dir}/results.json, report.md" + (", throughput.png, latency_cdf.png, cpu_per_frame.png"
                                                      if args.plots else ""))
    return 0
