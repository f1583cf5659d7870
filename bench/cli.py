"""`reshaper bench`: the data paths side by side on one rule file.

    reshaper bench [CONFIG] [--modes ring,nfqueue,kernel,linux-bridge,python] [--sizes 64,512,1500]
                   [--duration S] [--placement single-core|split|both] [--out DIR] [--vm] [--quick]

Topology (bridge/netns.py), all on this machine, in network namespaces:

    generator (ns a, CPU 0) a0 <-veth-> a1 [ns br: device under test, CPU 1] b1 <-veth-> b0 (ns b): sink

Placement (--placement, topology.placed()): veth runs a frame's receive on the *sender's* CPU.
  single-core (default)  RPS on a1 and b1 steers the device under test's receive to CPU 1, so
                         all of its work (receive softirq, forwarder, transmit) shares one CPU,
                         as on the one-core BeagleBone; every trial checks that it held (frames
                         CPU 0 received per forwarded frame, /proc/net/softnet_stat; its NET_RX
                         softirqs too), the report says so per mode, with a WARNING if it did not
  split                  no RPS: a1's receive (for the kernel paths the whole bridge path) runs
                         on the generator's CPU 0, beside the generator, for free; the figures
                         in docs/benchmarks/ were taken this way
  both                   each mode in both, one after the other at the same size

Every mode runs the same rule file (default examples/five-rules.yaml, ports
rewritten to plain a: a1, b: b1), on the same round-robin mix of five frames
(bench/frames.py: each hits another branch of the five-rule program). The modes
are bench/devices.py's: ring, nfqueue, kernel (the module: only where modules
load, --vm here), linux-bridge (the baseline), python (a naive forwarder), and
on request bridge-netfilter and nfqueue-accept (NFQUEUE's yardsticks: with nfqueue-accept
in the run, the report gives nfqueue's ratios to it, same size and placement).

Per mode, frame size and placement (sizes outer, modes inner, placements innermost, so what is
compared is close in time):
  * saturation: the generator as fast as it goes (sendmmsg, no pacing); offered and delivered
    frames/s; when nothing is lost there, the generator could not saturate the mode (said so);
  * the loss-free rate, RFC 2544 style: a binary search of the offered rate for loss < 0.1 %;
  * one-way latency at 10, 50 and 90 % of that rate: the paced generator carries the load and
    a probe flow (bench/probe.py, default 1000/s) gives per-frame delays;
  * CPU per forwarded frame: the forwarder process's user+sys (ring, nfqueue, python), softirq
    time of all CPUs for the kernel paths (linux-bridge, kernel); both, and every CPU's busy
    share, are recorded for every mode;
  * drops by where: reshaper's counters (ring_drops, tx_full, oversize; nfqueue queue drops from
    /proc/PID/net/netfilter/nfnetlink_queue; engine verdicts), the Python forwarder's
    PACKET_STATISTICS, the veths' rx/tx_dropped, the backlog (softnet_stat), the rest;
  * where the receive ran: frames received, NET_RX softirqs and softirq time per CPU (the
    placement check above), and the device under test's CPU per frame by softirq, system, user.

The generator is bench/generator.c (an AF_PACKET sendmmsg() loop paced on the monotonic clock,
built with gcc into ~/.cache/reshaper/bench), one tool for every rate and also inside the VM
(where trafgen does not run). Delivered = b0 rx_packets, offered = a0 tx_packets + tx_dropped
(IFLA_STATS64): no user-space sink on the bulk path, b0 drops the bulk frames at once (their
destination MAC is not b0's).

--vm runs the whole bench inside the Debian-kernel VM (bench/vm.py, lab/vm), all modes together,
and writes the report and plots on the host. Output in --out: results.json, report.md, *.png.

--board HOST measures a board that deploy.sh deployed, with this machine as generator and sink on
its VLANs through --trunk (bench/board.py): every mode in turn on the board's own rule file, the
board's CPU split per frame and a perf profile; the board is put back as it was.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from reshaper.bench.settings import (ALL_MODES, BOARD_MODES, DEFAULT_BOARD_MODES, DEFAULT_MODES, DEFAULT_PLACEMENT,
                                     PLACEMENT_CHOICES, QUICK_MODES, REALTIME, RT_PREFIX, log, placements_asked)


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


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `reshaper bench` (bridge/cli.py builds the subcommand with them)."""
    p.add_argument("config", metavar="CONFIG", nargs="?",
                   help="rule file (default examples/five-rules.yaml); its ports are rewritten to the bench's")
    p.add_argument("--modes", default=None,
                   help=f"comma-separated subset of {','.join(ALL_MODES)} (default {','.join(DEFAULT_MODES)}; "
                        f"--quick: {','.join(QUICK_MODES)})")
    p.add_argument("--sizes", default=None, help="frame sizes in bytes without FCS (default 64,512,1500; --quick: 64)")
    p.add_argument("--duration", type=float, default=None, help="seconds per saturation and latency trial "
                   "(default 3; --quick 0.6)")
    p.add_argument("--search-duration", type=float, default=None, help="seconds per search trial (default 2)")
    p.add_argument("--search-steps", type=int, default=None, help="binary-search steps (default 6; --quick 2)")
    p.add_argument("--probe-pps", type=float, default=None,
                   help="latency probe rate (default 1000/s; 250/s with --vm, where the Python probe is costly)")
    p.add_argument("--placement", default=DEFAULT_PLACEMENT, choices=PLACEMENT_CHOICES,
                   help="where the device under test's receive runs: single-core (default: RPS steers it to "
                        "the forwarder's CPU, all its work on one CPU as on the one-core board), split (on the "
                        "generator's CPU, as veth does it), single-core+hog (single-core with a busy loop on "
                        "the forwarder's CPU besides, a board that runs other work), both (single-core and "
                        "split) or hog (single-core and single-core+hog), each mode in turn (the first is the "
                        "headline)")
    p.add_argument("--out", default="bench-out", metavar="DIR", help="output folder (default ./bench-out)")
    p.add_argument("--vm", action="store_true", help="run every mode inside the Debian-kernel VM (kernel mode too)")
    p.add_argument("--vm-timeout", type=float, default=3600, help=argparse.SUPPRESS)
    p.add_argument("--board", metavar="[USER@]HOST",
                   help="measure this board (deployed by deploy.sh) instead: this machine generates into one "
                        "of its VLANs on --trunk and counts what leaves the other (bench/board.py); modes "
                        f"{','.join(BOARD_MODES)} (default {','.join(DEFAULT_BOARD_MODES)})")
    p.add_argument("--trunk", metavar="IF", help="--board: this machine's interface on the board's VLAN trunk")
    p.add_argument("--trunk-netns", metavar="NS", help="--board: the network namespace --trunk is in")
    p.add_argument("--vlans", metavar="A,B", help="--board: the VLANs of the board's ports a and b, e.g. 100,200")
    p.add_argument("--board-interface", metavar="IF",
                   help="--board: the board's trunk interface (default: what its last deploy recorded)")
    p.add_argument("--port", type=int, help="--board: SSH port")
    p.add_argument("--identity", metavar="KEYFILE", help="--board: SSH key")
    p.add_argument("--realtime", action="store_true",
                   help="run reshaper's user-space modes with `run --realtime` (the forwarding thread SCHED_FIFO, "
                        "memory locked) and the Python baselines under chrt at the same priority: on a shared CPU "
                        "they then are not queued behind other work")
    p.add_argument("--quick", action="store_true", help="a short run: about a second per trial, one size")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNGs")
    p.add_argument("--in-vm", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--gen-dir", help=argparse.SUPPRESS)
    p.add_argument("--frames-dir", help=argparse.SUPPRESS)


def main(args: argparse.Namespace) -> int:
    """`reshaper bench`: checks the options, runs the bench here or in the VM, writes the outputs."""
    args.command_line = "reshaper bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 1 and \
        sys.argv[1] == "bench" else "reshaper " + " ".join(sys.argv[1:])
    q = args.quick
    board = bool(args.board)
    default_modes = DEFAULT_BOARD_MODES if board else QUICK_MODES if q else DEFAULT_MODES
    args.modes = [m for m in (args.modes or ",".join(default_modes)).split(",") if m]
    known = BOARD_MODES if board else ALL_MODES
    if bad := [m for m in args.modes if m not in known]:
        log(f"reshaper bench: unknown modes {','.join(bad)} (known{' with --board' if board else ''}: "
            f"{','.join(known)})")
        return 2
    if board:
        if not args.trunk or not args.vlans:
            log("reshaper bench: --board needs --trunk IF and --vlans A,B")
            return 2
        try:
            args.vlans = [int(v) for v in args.vlans.split(",")]
        except ValueError:
            args.vlans = []
        if len(args.vlans) != 2 or not all(1 <= v <= 4094 for v in args.vlans) or args.vlans[0] == args.vlans[1]:
            log("reshaper bench: --vlans wants two different VLAN ids 1..4094, e.g. 100,200")
            return 2
        if args.vm or args.config or args.placement != DEFAULT_PLACEMENT:
            log("reshaper bench: --board measures the board's own rule file on its one core: "
                "no CONFIG, --vm or --placement with it")
            return 2
    elif args.trunk or args.vlans or args.trunk_netns:
        log("reshaper bench: --trunk, --trunk-netns and --vlans go with --board")
        return 2
    try:
        args.sizes = [int(s) for s in (args.sizes or ("64" if q else "64,512,1500")).split(",") if s]
    except ValueError:
        log("reshaper bench: --sizes wants integers, e.g. 64,512,1500")
        return 2
    if any(s < 60 or s > 1514 for s in args.sizes):
        log("reshaper bench: sizes must be 60..1514 bytes (Ethernet frame without FCS, MTU 1500)")
        return 2
    args.placements = placements_asked(args.placement)
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
    if (os.cpu_count() or 1) < 2 and not board:
        log("reshaper bench: needs two CPUs (generator and device under test each get one)")
        return 2
    unwind_on_sigterm()
    out_dir = Path(args.out)
    if args.realtime:
        from reshaper.bridge.realtime import PRIORITY

        REALTIME[0] = True
        RT_PREFIX[:] = ["chrt", "-f", str(PRIORITY)]
    if board:
        from reshaper.bench.board import BoardBenchError, run_board_bench

        try:
            results = run_board_bench(args)
        except BoardBenchError as exc:
            log(f"reshaper bench: {exc}")
            return 1
    elif args.vm:
        from reshaper.bench.vm import run_in_vm

        results = run_in_vm(args)
    else:
        from reshaper.bench.run import run_bench

        results = run_bench(args)
    from reshaper.bench.report import write_outputs

    write_outputs(results, out_dir, with_plots=args.plots)
    log(f"wrote {out_dir}/results.json, report.md" + (", throughput.png, latency_cdf.png, cpu_per_frame.png"
                                                      if args.plots else ""))
    return 0
