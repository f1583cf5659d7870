"""Engine cost per frame on armhf, counted (not timed: times under emulation
mean nothing): bench/engine_harness.c cross-compiled with the wheel's
flags, run under callgrind (valgrind:armhf) inside the armhf rootfs under
qemu-user. Same program (five-rule example) and frame mix as the x86 figure
of `python -m reshaper.bench.engine`.

    python -m reshaper.bench.engine_armhf      (make bench-armhf)
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time

from reshaper.lab.vm import armhf

from reshaper.bench.engine import ENGINE, HARNESS, bench_input

LINE_RATE_64B = 148_809  # frames/s at 100 Mbit/s, 64-byte frames
# the wheel's flags: Debian's armhf sysconfig (-O2; armv7-a, thumb-2, vfpv3-d16 hard-float by default)
FLAGS = ["-O2", "-std=gnu11", "-g"]


def main() -> int:
    t0 = time.monotonic()
    root = armhf.rootfs(armhf.CACHE / "rootfs-bench")
    try:
        work = root / "bench"
        work.mkdir()
        subprocess.run([f"{armhf.CROSS}gcc", *FLAGS, f"-I{ENGINE}", str(HARNESS),
                        str(ENGINE / "engine.c"), "-o", str(work / "bench_engine")], check=True)
        n = bench_input(work / "input.bin")
        r = armhf.chroot_run(root, """
            cd /bench
            valgrind --tool=callgrind --callgrind-out-file=/bench/cg.out --toggle-collect=rs_run \
                ./bench_engine input.bin 1000 2>cg.err
            cat cg.err >&2
        """, timeout=1800)
        if r.returncode:
            print(r.stdout, r.stderr, file=sys.stderr)
            return 1
        frames = int(re.search(r"frames=(\d+)", r.stdout).group(1))
        instructions = int(re.search(r"Collected : (\d+)", r.stderr).group(1))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    per = instructions / frames
    print(f"armhf engine, five-rule program, {n}-frame mix: {per:.0f} instructions/frame "
          f"(callgrind under qemu-user, {' '.join(FLAGS)}, {time.monotonic() - t0:.0f} s)")
    print(f"at 1 instruction/cycle on a 1 GHz Cortex-A8 the engine alone allows ~{1e9 / per:,.0f} frames/s; "
          f"100 Mbit/s line rate at 64 bytes is {LINE_RATE_64B:,} frames/s "
          f"= {per * LINE_RATE_64B / 1e6:.0f} M engine instructions/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
