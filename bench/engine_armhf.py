"""Engine cost per frame on armhf, counted (not timed: times under emulation
mean nothing): bench/engine_harness.c cross-compiled with the wheel's
flags, run under callgrind (valgrind:armhf) inside the armhf rootfs under
qemu-user. The same cases and both entries (the loaded form, the reference
walk) as the x86 figures of `python -m reshaper.bench.engine`.

    python -m reshaper.bench.engine_armhf [--json PATH]      (make bench-armhf)
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time

from reshaper.lab.vm import armhf

from reshaper.bench.engine import COUNTED_RUNS, ENTRIES, bench_input, callgrind_command, cases, cost_table, \
    harness_command, instructions_per_frame, iterations

# frames per callgrind run: counts are exact at any number, and valgrind under qemu-user is slow
ARMHF_FRAMES = 200
LINE_RATE_64B = 148_809  # frames/s at 100 Mbit/s, 64-byte frames
# the wheel's flags: Debian's armhf sysconfig (-O2; armv7-a, thumb-2, vfpv3-d16 hard-float by default)
FLAGS = ["-O2", "-std=gnu11", "-g"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    t0 = time.monotonic()
    root = armhf.rootfs(armhf.CACHE / "rootfs-bench")
    todo = cases()
    try:
        work = root / "bench"
        work.mkdir()
        subprocess.run(harness_command(f"{armhf.CROSS}gcc", FLAGS, work / "bench_engine"), check=True)
        runs = []
        for k, case in enumerate(todo):
            bench_input(work / f"input-{k}.bin", case)
            for entry, argument in COUNTED_RUNS.items():
                command = callgrind_command("./bench_engine", f"input-{k}.bin", iterations(case, ARMHF_FRAMES),
                                            argument, "/bench/cg.out")
                runs.append(f"{shlex.join(command)} >out-{k}-{entry} 2>err-{k}-{entry} || exit 1")
        r = armhf.chroot_run(root, "cd /bench\n" + "\n".join(runs), timeout=3600)
        if r.returncode:
            print(r.stdout, r.stderr, file=sys.stderr)
            return 1
        rows = []
        for k, case in enumerate(todo):
            row = {"case": case.name, "rules": case.rules}
            counted = {entry: ((work / f"out-{k}-{entry}").read_text(), (work / f"err-{k}-{entry}").read_text())
                       for entry in COUNTED_RUNS}
            for entry in ENTRIES:
                per = instructions_per_frame(counted[entry], counted["none"])
                row[entry] = {"instructions_per_frame": round(per, 1)}
            rows.append(row)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(cost_table(rows, "armhf", timed=False))
    print(f"(callgrind under qemu-user, {' '.join(FLAGS)}, {time.monotonic() - t0:.0f} s)")
    mix = rows[0]["loaded"]["instructions_per_frame"]
    print(f"at 1 instruction/cycle on a 1 GHz Cortex-A8 the engine alone allows ~{1e9 / mix:,.0f} frames/s on the "
          f"five-rule mix; 100 Mbit/s line rate at 64 bytes is {LINE_RATE_64B:,} frames/s "
          f"= {mix * LINE_RATE_64B / 1e6:.0f} M engine instructions/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"arch": "armhf", "rows": rows}, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
