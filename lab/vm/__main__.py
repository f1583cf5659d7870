"""python -m reshaper.lab.vm prepare | run 'CMD' [--share HOST:GUEST ...] | kdir"""
import argparse
import os
import sys
import time

from . import runner


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m reshaper.lab.vm")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("prepare", help="install host tools (apt) and build the cache")
    sub.add_parser("kdir", help="print the kernel headers tree (make -C KDIR M=...)")
    run = sub.add_parser("run", help="boot, run a command as root, power off")
    run.add_argument("command")
    run.add_argument("--share", action="append", default=[], metavar="HOST[:GUEST]",
                     help="read-write share (default: the current folder at the same path)")
    run.add_argument("--timeout", type=float, default=300)
    run.add_argument("--memory", type=int, default=1024)
    run.add_argument("--kernel-log", action="store_true", help="print the kernel log too")
    a = ap.parse_args()
    if a.cmd == "prepare":
        t0 = time.monotonic()
        for k, v in runner.prepare().items():
            print(f"{k}: {v}")
        print(f"prepared in {time.monotonic() - t0:.1f}s (cache {runner.CACHE})")
        return 0
    if a.cmd == "kdir":
        print(runner.kdir())
        return 0
    shares = {}
    for s in a.share or [os.getcwd()]:
        host, _, guest = s.partition(":")
        shares[host] = guest or os.path.abspath(host)
    cwd = os.getcwd()
    command = f"cd {cwd!r} 2>/dev/null\n{a.command}" if cwd in shares.values() else a.command
    t0 = time.monotonic()
    with runner.VM(shares, memory_mb=a.memory) as vm:
        boot = vm.boot_seconds
        status, output = vm.run(command, a.timeout)
    sys.stdout.write(output)
    if a.kernel_log:
        sys.stdout.write("--- kernel log ---\n" + vm.kernel_log)
    for line in runner.kernel_problems(vm.kernel_log):
        print(f"KERNEL: {line}", file=sys.stderr)
    print(f"[vm] status {status}, boot {boot:.1f}s, total {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
