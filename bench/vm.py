"""`reshaper bench --vm`: the whole bench inside the Debian-kernel VM (lab/vm), every mode
together, the kernel module's too. The host builds the module, the generator and the frame
files into the VM's shares; the guest runs `reshaper bench --in-vm` and writes results.json
through a 9p share; the host adds what it saw (kernel log, its own load) and writes the report."""
from __future__ import annotations

import json
import threading
from pathlib import Path

from reshaper.bench.frames import write_frames
from reshaper.bench.generator import build_generator
from reshaper.bench.machine import machine
from reshaper.bench.settings import log


def run_in_vm(args) -> dict:
    """The whole bench inside the Debian-kernel VM; results.json comes back through a 9p share."""
    from reshaper.lab import REPO
    from reshaper.lab.vm import VM, kernel_problems, prepare
    from reshaper.lab.vm.kmod import GUEST_DIR, GUEST_SETUP, build_module, python_bundle, shares

    if not (REPO / "kmod").is_dir():
        raise SystemExit(f"--vm needs the source tree (it builds kmod/ for the VM's kernel); {REPO} is not one")
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
        "--placement", args.placement,
        "--out", guest_out, "--in-vm", "--frames-dir", guest_out, *(["--realtime"] if args.realtime else []), "--no-plots",
        "--gen-dir", GUEST_DIR]   # the generator, built above into the module's folder
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
