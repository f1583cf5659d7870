"""The `reshaper` command line: check, apply, explain, run, stats, trace, demo and bench, one function each."""
from __future__ import annotations

import argparse
import json
import sys

from reshaper.bridge import modes
from reshaper.bridge.realtime import PRIORITY as REALTIME_PRIORITY, describe
from reshaper.rules.config import load_config
from reshaper.rules.loader import read_text
from reshaper.rules.model import Config, ConfigError

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
# the intervals `stats --watch` takes: below ~10 ms reading the stats is most of an interval
WATCH_LEAST_S, WATCH_MOST_S = 0.01, 3600


def _load(path: str, mode: str | None = None, hooks_path: list[str] | None = None, text: str | None = None) -> Config:
    """Loads and validates a configuration; with mode, also what that mode can run; with text, that
    text as if it were the file at path."""
    config = load_config(path, text, hooks_path)
    if mode is not None:
        problems = modes.get(mode).limits(config)
        if problems:
            raise ConfigError(problems)
    return config


def _report_errors(exc: ConfigError) -> int:
    for diagnostic in exc.diagnostics:
        print(diagnostic, file=sys.stderr)
    n = len(exc.diagnostics)
    print(f"{n} error{'s' if n != 1 else ''}; nothing applied", file=sys.stderr)
    return EXIT_INVALID


def cmd_check(args) -> int:
    from reshaper._native import lib
    from reshaper.rules.binding import program_verify

    try:
        # --as: the text of CONFIG, named and resolved as the file it is about to become
        text = None if args.as_path is None else read_text(args.config)
        config = _load(args.as_path or args.config, args.mode, args.hooks_path, text)
    except ConfigError as exc:
        return _report_errors(exc)
    if args.files:
        for name in config.files():
            print(name)
        return EXIT_OK
    program = config.program
    state_size = program_verify(program)
    print(f"{config.path}: ok")
    for name in ("a", "b"):
        print(f"  port {name}: {config.ports[name].describe()}")
    print(f"  forward {config.forward}, default {config.default}, malformed frames {config.malformed}")
    print(f"  program: {len(config.rules)} rule{'s' if len(config.rules) != 1 else ''}, "
          f"{len(program)} bytes, format v{lib.RS_VERSION}, state {state_size} bytes")
    for i, rule in enumerate(config.rules, 1):
        matches = ", ".join(m.field for m in rule.matches) or "everything"
        actions = ", ".join(a.kind for a in rule.actions) or "forward unchanged"
        if rule.schedule:
            s = rule.schedule
            actions += (f"; a schedule of {len(s.phases)} phase{'s' if len(s.phases) != 1 else ''} "
                        f"({s.cycle_ns / 1e9:g} s{', repeating' if s.repeat else ''}"
                        f"{', keeping its time over reloads' if s.keep_time else ''})")
        print(f"  {i:>3} {rule.name}: from {rule.from_port}; match {matches}; {actions}")
    carried = []
    for name, mode in modes.MODES.items():
        problems = mode.limits(config)
        carried.append(f"{name} " + (f"no ({len(problems)} problem{'s' if len(problems) != 1 else ''}; "
                                     f"see --mode {name})" if problems else "yes"))
    print(f"  modes: {', '.join(carried)}")
    return EXIT_OK


def cmd_apply(args) -> int:
    import signal

    from reshaper.bridge.apply import apply_capture
    from reshaper.bridge.captures import CaptureError
    from reshaper.bridge.hook_loader import HookLoadError

    try:
        config = _load(args.config, hooks_path=args.hooks_path)
    except ConfigError as exc:
        return _report_errors(exc)
    try:
        result = apply_capture(config, args.input, args.output, args.from_port, args.seed,
                               replies_path=args.replies)
    except ConfigError as exc:  # rules the compiler cannot build (rules/compiler.py)
        return _report_errors(exc)
    except HookLoadError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    except CaptureError as exc:
        print(f"reshaper apply: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:  # the user's Ctrl-C (a hook's own KeyboardInterrupt is its error, bridge/hooks.py)
        print(f"reshaper apply: interrupted; {args.output} not written", file=sys.stderr)
        return 128 + signal.SIGINT  # what a shell reports for a command that SIGINT ended
    print(result.report())
    return EXIT_OK


def cmd_explain(args) -> int:
    from reshaper.bridge.captures import CaptureError, CaptureReader
    from reshaper.bridge.explain import explain, ip_packet

    try:
        config = _load(args.config, args.mode, args.hooks_path)
    except ConfigError as exc:
        return _report_errors(exc)
    l3 = args.mode == "nfqueue"
    if args.hex is not None:
        try:
            frame = bytes.fromhex(args.hex.replace(":", " "))
        except ValueError:
            print(f"reshaper explain: --hex expected the frame's bytes in hex, got {args.hex!r}", file=sys.stderr)
            return EXIT_USAGE
        before, now, what = [], 0, "the frame"
    else:
        if args.frame < 1:
            print("reshaper explain: --frame counts from 1, as Wireshark does", file=sys.stderr)
            return EXIT_USAGE
        try:
            reader = CaptureReader(args.pcap)
            try:
                frames = []
                for record in reader.frames():
                    frames.append(record)
                    if len(frames) == args.frame:
                        break
            finally:
                reader.close()
        except CaptureError as exc:
            print(f"reshaper explain: {exc}", file=sys.stderr)
            return EXIT_INVALID
        if len(frames) < args.frame:
            print(f"reshaper explain: {args.pcap} has {len(frames)} frames, no frame {args.frame}", file=sys.stderr)
            return EXIT_INVALID
        (now, frame), before, what = frames[-1], frames[:-1], f"frame {args.frame} of {args.pcap}"
    if l3:
        packet = ip_packet(frame)
        if packet is None:
            print(f"{what} is no IP packet: in nfqueue mode it crosses the Linux bridge without the rules")
            return EXIT_OK
        frame, before = packet, [(t, p) for t, p in ((t, ip_packet(f)) for t, f in before) if p is not None]
    try:
        result = explain(config, frame, args.from_port, l3=l3, seed=args.seed, before=before, now_ns=now,
                         what=what)
    except ConfigError as exc:  # rules the compiler cannot build (rules/compiler.py)
        return _report_errors(exc)
    print("\n".join(result.lines))
    return EXIT_OK


def cmd_run(args) -> int:
    from reshaper.bridge.run import run

    metrics = None
    if args.metrics is not None:
        from reshaper.bridge.metrics import ListenError, parse_listen

        try:
            metrics = parse_listen(args.metrics)
        except ListenError as exc:
            print(f"reshaper run: {exc}", file=sys.stderr)
            return EXIT_USAGE
    return run(args.config, args.mode, args.control, args.status_interval, args.seed, args.hooks_path,
               args.busy_poll, args.realtime, args.cpu, metrics)


def cmd_stats(args) -> int:
    from reshaper.bridge.control import read_stats
    from reshaper.bridge.watch import watch
    from reshaper.rules.model import Invalid
    from reshaper.rules.values import TIME_UNITS, time_ns

    every_s = None
    if args.count is not None and (args.watch is None or args.count < 1):
        print("reshaper stats: --count takes a number of intervals of --watch, at least 1", file=sys.stderr)
        return EXIT_USAGE
    if args.watch is not None:
        try:
            every_s = time_ns(args.watch, WATCH_MOST_S * TIME_UNITS["s"]) / TIME_UNITS["s"]
        except Invalid as exc:
            print(f"reshaper stats: --watch {exc}", file=sys.stderr)
            return EXIT_USAGE
        if every_s < WATCH_LEAST_S:
            print(f"reshaper stats: --watch expected a time of at least {WATCH_LEAST_S * 1000:g}ms, "
                  f"got {args.watch!r}", file=sys.stderr)
            return EXIT_USAGE
    path = control_path(args.control, "stats")
    if path is None:
        return EXIT_INVALID

    def read() -> dict:
        try:
            stats = read_stats(path)
        except (OSError, ValueError) as exc:
            raise StatsError(f"no running instance answers on {path}: {exc}") from exc
        if "error" in stats:
            raise StatsError(f"the instance on {path} answered: {stats['error']}")
        return stats

    try:
        if every_s is not None:
            watch(read, every_s, args.json, args.count, sys.stdout)
        elif args.json:
            print(json.dumps(read(), indent=2))
        else:
            print(format_stats(read()))
    except StatsError as exc:
        print(f"reshaper stats: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:   # how a watch ends when no --count was given
        pass
    return EXIT_OK


def control_path(given: str | None, command: str) -> str | None:
    """The control socket to ask: the one given, else this namespace's one instance (None: said why)."""
    from reshaper.bridge.control import RUN_DIR, instances_here

    if given is not None:
        return given
    found = instances_here()
    if len(found) != 1:
        print(f"reshaper {command}: no instance runs in this network namespace ({RUN_DIR})" if not found else
              f"reshaper {command}: {len(found)} instances run in this network namespace; name one with "
              f"--control: {', '.join(found)}", file=sys.stderr)
        return None
    return found[0]


def cmd_trace(args) -> int:
    from reshaper.bridge.trace import TraceError, line, records

    if args.count is not None and args.count < 1:
        print("reshaper trace: --count takes a number of frames, at least 1", file=sys.stderr)
        return EXIT_USAGE
    path = control_path(args.control, "trace")
    if path is None:
        return EXIT_INVALID
    not_shown, shown = [0], 0
    try:
        for rec in records(path, args.rule, args.count, not_shown):
            print(json.dumps(rec) if args.json else line(rec), flush=True)
            shown += 1
    except TraceError as exc:
        print(f"reshaper trace: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except OSError as exc:
        print(f"reshaper trace: no running instance answers on {path}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:   # how a trace ends when no --count was given
        pass
    if not_shown[0]:
        print(f"reshaper trace: {shown} frames shown; {not_shown[0]} more crossed while the trace buffer was "
              f"full (the data path does not wait for a reader)", file=sys.stderr)
    return EXIT_OK


class StatsError(Exception):
    """The instance did not answer, or answered with an error."""


def format_stats(stats: dict) -> str:
    lines = [f"{stats['mode']} mode, pid {stats['pid']}, up {stats['uptime_s']:.0f} s, {stats['config']}, "
             f"reloads {stats['reloads']}" + (f" (last refused: {stats['last_reload_error'].splitlines()[0]})"
                                              if stats.get("last_reload_error") else "")]
    if stats.get("forwarder"):
        lines.append(f"forwarder: {describe(stats['forwarder'])}")
    port_keys = [k for k in next(iter(stats["ports"].values())) if k not in ("interface", "vlan", "rx_bytes",
                                                                           "tx_bytes")]
    lines.append(f"{'port':<6}{'interface':<14}" + "".join(f"{k:>15}" for k in port_keys))
    for name, port in stats["ports"].items():
        where = port["interface"] + (f".{port['vlan']}" if port.get("vlan") else "")
        lines.append(f"{name:<6}{where:<14}" + "".join(f"{port[k]:>15}" for k in port_keys))
    engine = stats["engine"]
    lines.append("engine: " + ", ".join(f"{k} {v}" for k, v in engine.items())
                 + f"; queued {stats.get('queued', 0)}, not ours {stats.get('not_ours', 0)}")
    rule_keys = ("matched", "bytes", "dropped", "lost", "queue_drops", "duplicated", "corrupted", "reordered",
                 "delayed", "queue_depth", "held")
    width = max([4] + [len(r["name"]) for r in stats["rules"]])
    lines.append(f"{'rule':<{width}}" + "".join(f"{k:>12}" for k in rule_keys))
    for rule in stats["rules"]:
        lines.append(f"{rule['name']:<{width}}" + "".join(f"{rule.get(k, '-'):>12}" for k in rule_keys))
    return "\n".join(lines)


def cmd_demo(args) -> int:
    from reshaper.bridge.demo import run_demo

    return run_demo()


def _bench_cli():
    """reshaper.bench's command line (bench/cli.py: argparse only), or None where the benchmark
    is not installed (the board's wheel leaves it out: setup.py)."""
    try:
        from reshaper.bench import cli
    except ModuleNotFoundError as exc:
        if exc.name not in ("reshaper.bench", "reshaper.bench.cli"):
            raise
        return None
    return cli


def cmd_bench(args) -> int:
    bench = _bench_cli()
    if bench is None:
        print("reshaper bench: the benchmark is not installed here (the board's package leaves it out); "
              "install reshaper[bench] from a source tree (make setup)", file=sys.stderr)
        return EXIT_USAGE
    return bench.main(args)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("reshaper")
    except PackageNotFoundError:   # run from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reshaper",
        description="Packet-reshaping bridge: rewrite, drop, duplicate, delay and shape frames between two VLANs.")
    parser.add_argument("--version", action="version", version=f"reshaper {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("check", help="validate a configuration and summarise its program")
    p.add_argument("config", metavar="CONFIG")
    p.add_argument("--mode", choices=list(modes.MODES), help="also check that this mode can run every rule")
    p.add_argument("--hooks-path", action="append", metavar="DIR", help="a directory python hooks may come from")
    p.add_argument("--files", action="store_true",
                   help="print only the files the rule file names (schedule files, delivery traces), one a line, "
                        "as it names them: what must go with it (deploy.sh)")
    p.add_argument("--as", dest="as_path", metavar="PATH",
                   help="check CONFIG as if it were the file PATH: errors name PATH and the files it names are "
                        "looked for beside PATH (a file checked before it is put in place: deploy/ansible)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("apply", help="run the frames of a capture through the rules offline")
    p.add_argument("config", metavar="CONFIG")
    p.add_argument("input", metavar="IN.pcap", help="the frames that arrive: a pcap or pcapng capture of Ethernet")
    p.add_argument("output", metavar="OUT.pcap",
                   help="the frames that leave, with their departure times: pcapng if the name ends in .pcapng, "
                        "else pcap (nanoseconds); written only if the whole capture went through")
    p.add_argument("--from", dest="from_port", choices=("a", "b"), default="a",
                   help="the port the captured frames arrive on (default a)")
    p.add_argument("--seed", type=int, default=0, help="seed of the engine's PRNG (default 0)")
    p.add_argument("--hooks-path", action="append", metavar="DIR", help="a directory python hooks may come from")
    p.add_argument("--replies", metavar="REPLIES.pcap", help="where frames hooks send back by the ingress port go "
                                                             "(pcapng or pcap by the name, as OUT)")
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("explain", help="one frame's way through the rules, told by the engine")
    p.add_argument("config", metavar="CONFIG")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--pcap", metavar="FILE", help="a capture (pcap or pcapng, Ethernet); with --frame")
    source.add_argument("--hex", metavar="BYTES", help="the frame's bytes in hex (an Ethernet frame)")
    p.add_argument("--frame", type=int, default=1, metavar="N",
                   help="with --pcap: the frame to explain, from 1 as Wireshark counts; the frames before it run "
                        "first, as `apply` runs them (default 1)")
    p.add_argument("--from", dest="from_port", choices=("a", "b"), default="a",
                   help="the port the frame arrives on (default a)")
    p.add_argument("--mode", choices=list(modes.MODES),
                   help="refuse a rule file the mode cannot run, as check --mode does; nfqueue: the rules see the "
                        "IP packet, as NFQUEUE hands it over")
    p.add_argument("--seed", type=int, default=0, help="seed of the engine's PRNG, as apply's (default 0)")
    p.add_argument("--hooks-path", action="append", metavar="DIR", help="a directory python hooks may come from")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("run", help="the appliance: forward between the ports through the rules")
    p.add_argument("config", metavar="CONFIG")
    p.add_argument("--mode", choices=list(modes.MODES), default=modes.DEFAULT,
                   help=f"data path (default {modes.DEFAULT})")
    p.add_argument("--control", metavar="PATH", help="control socket for `reshaper stats` "
                   "(default: one per instance under /run/reshaper, named after the namespace and the ports)")
    p.add_argument("--status-interval", type=float, default=5.0, metavar="S",
                   help="seconds between status lines, 0 for none (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the engine's PRNG (default 0)")
    p.add_argument("--hooks-path", action="append", metavar="DIR", help="a directory python hooks may come from")
    p.add_argument("--busy-poll", type=int, default=0, metavar="US",
                   help="ring mode: keep polling the rings US microseconds after the last frame before sleeping "
                        "(lower latency, a core's worth of CPU while traffic flows; default 0)")
    p.add_argument("--realtime", action="store_true",
                   help="user-space modes: forward on a SCHED_FIFO thread (priority %d, under the kernel's "
                        "interrupt threads) with the process's memory locked (mlockall); needs CAP_SYS_NICE or "
                        "RLIMIT_RTPRIO, an unlimited RLIMIT_MEMLOCK or CAP_IPC_LOCK, and the kernel's real-time "
                        "throttling on; not with --busy-poll" % REALTIME_PRIORITY)
    p.add_argument("--cpu", type=int, metavar="N",
                   help="user-space modes: run the forwarder on CPU N only (threads it starts later too)")
    p.add_argument("--metrics", metavar="[ADDR:]PORT",
                   help="serve the counters in Prometheus' text format on http://ADDR:PORT/metrics (ADDR "
                        "127.0.0.1 unless given; docs/metrics.md)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("stats", help="counters of the running instance")
    p.add_argument("--control", metavar="PATH",
                   help="control socket of the instance (default: the one instance of this network namespace)")
    p.add_argument("--json", action="store_true", help="print JSON (with --watch, one object a line)")
    p.add_argument("--watch", metavar="INTERVAL",
                   help="every INTERVAL (e.g. 1s, 250ms), one line of what happened in it: the engine's frames, "
                        "each rule's matched, dropped and delayed frames, stamped with the time of day")
    p.add_argument("--count", type=int, metavar="N", help="with --watch: stop after N intervals")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("trace", help="the frames the running instance sees, a line each, with their rule and verdict")
    p.add_argument("--control", metavar="PATH",
                   help="control socket of the instance (default: the one instance of this network namespace)")
    p.add_argument("--rule", metavar="NAME", help="only the frames this rule matched")
    p.add_argument("--count", type=int, metavar="N", help="stop after N frames (default: until interrupted)")
    p.add_argument("--json", action="store_true", help="one JSON object a frame, its first bytes in hex")
    p.set_defaults(func=cmd_trace)

    p = sub.add_parser("demo", help="the appliance in network namespaces, with real traffic")
    p.set_defaults(func=cmd_demo)

    bench_help = "the modes side by side: loss-free rate, latency, CPU per frame"
    bench = _bench_cli()
    if bench is not None:
        p = sub.add_parser("bench", help=bench_help)
        bench.add_arguments(p)
    else:   # cmd_bench says why it cannot run, whatever the arguments: none of them is an option here
        p = sub.add_parser("bench", help=bench_help + " (not installed)", prefix_chars="\0", add_help=False)
        p.add_argument("args", nargs="*")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on usage errors
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
