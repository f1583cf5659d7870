"""Captures for `reshaper apply` (bridge/apply.py): the input a test writes from
(arrival ns, frame) pairs, and the frames apply wrote with their departure times."""
from __future__ import annotations

from pathlib import Path

from scapy.utils import RawPcapReader, RawPcapWriter

NS = 10**9
# time zero of the golden cases and the cross-carrier inputs: a date in a capture's usual range
BASE_NS = 1_700_000_000 * NS
LINKTYPE_ETHERNET = 1


def write_capture(path: Path, inputs, base_ns: int = BASE_NS) -> None:
    """A nanosecond pcap of Ethernet frames: each (t, frame) of inputs, in the order given,
    stamped base_ns + t ns. apply takes every frame as arriving on the one port its
    `--from` names."""
    writer = RawPcapWriter(str(path), linktype=LINKTYPE_ETHERNET, nano=True, sync=True)
    writer.write_header(None)
    for t, frame in inputs:
        t += base_ns
        writer.write_packet(frame, sec=t // NS, usec=t % NS)
    writer.close()


def read_outputs(path: Path) -> list[tuple[int, bytes]]:
    """(departure ns after BASE_NS, frame) of every frame in apply's output, in its order."""
    with RawPcapReader(str(path)) as reader:
        scale = 1 if reader.nano else 1000
        return [(meta.sec * NS + meta.usec * scale - BASE_NS, data) for data, meta in reader]
