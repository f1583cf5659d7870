"""The bench's frame mix: five frames of one size, each hitting another branch of
examples/five-rules.yaml, and the hex file the generator (bench/generator.c) reads."""
from __future__ import annotations

from pathlib import Path

# the bulk frames' MACs: b0 is not the destination, so it drops them at once (no sink on the bulk path)
SRC_MAC, DST_MAC = "02:00:00:00:aa:01", "02:00:00:00:bb:01"
# the rule of five-rules.yaml each frame of the mix hits, in the mix's order
MIX = ("dns-rewrite", "web-to-proxy", "syn-mark", "v6-hoplimit", "no-rule")


def frame_mix(size: int) -> list[tuple[str, bytes]]:
    """Five frames of `size` bytes, named after the rule of five-rules.yaml each one hits."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    from reshaper.bridge.netns import HOST_B

    eth = Ether(src=SRC_MAC, dst=DST_MAC)
    heads = [   # in MIX's order
        eth / IP(src="10.77.0.1", dst=HOST_B["v4"], ttl=64) / UDP(sport=40000, dport=53),
        eth / IP(src="10.0.0.5", dst=HOST_B["v4"]) / TCP(sport=40001, dport=80, flags="A"),
        eth / IP(src="10.77.0.1", dst=HOST_B["v4"]) / TCP(sport=40002, dport=443, flags="S"),
        eth / IPv6(src="fd77::1", dst="2001:db8::1", hlim=64) / UDP(sport=40003, dport=9),
        eth / IP(src="10.77.0.1", dst=HOST_B["v4"]) / UDP(sport=40004, dport=9),
    ]
    frames = []
    for name, head in zip(MIX, heads):
        pad = size - len(head)
        if pad < 0:
            raise SystemExit(f"size {size} is smaller than the {name} frame's headers ({len(head)} bytes)")
        frames.append((name, bytes(head / (b"\x00" * pad))))
    return frames


def frames_file(path: Path, frames: list[bytes]) -> Path:
    """frames as the generator reads them: one frame per line, hex."""
    path.write_text("".join(data.hex() + "\n" for data in frames))
    return path


def write_frames(sizes: list[int], dest: Path) -> dict[int, Path]:
    """The frame mix of each size as a generator input file in dest."""
    return {size: frames_file(dest / f"frames-{size}.hex", [data for _, data in frame_mix(size)])
            for size in sizes}
