"""reshaper.lab: what the tests and the benchmarks (reshaper.bench) share.

    vm/            the Debian-kernel VM (qemu TCG), the armhf kernel and rootfs, the emulated
                   board, and the kernel module's build and guest set-up (`python -m reshaper.lab.vm`)
    frame_tap.py   crafted frames in, frames out as the wire carried them (VLAN tag put back)
    stamped.py     one-way delays of stamped UDP datagrams (kernel receive timestamps)
    timing_model.py  what a timing action should do: the engine on simulated time, the configured
                   distributions, a Kolmogorov-Smirnov test

It works on a source tree (the VM shares it at its own path, the module is built from kmod/):
it is installed with the tests and the benchmark, never on the board (deploy/beaglebone/build.sh).
The appliance (reshaper.bridge, reshaper.rules, reshaper.ring) never imports it.
"""
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent   # the source tree: lab/ is one of its folders
