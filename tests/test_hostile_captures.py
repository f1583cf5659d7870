"""`reshaper apply` on captures as Wireshark saves them (pcapng, tests/data) and on hostile ones.

A malformed capture is one line naming the record (packets counted from 1, as Wireshark numbers
frames) and its byte offset, exit 1, and no output file: never a silently different capture.
"""
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.utils import RawPcapNgReader, RawPcapReader

from reshaper.bridge.apply import apply_capture
from reshaper.bridge.captures import CaptureError
from reshaper.rules.config import load_config
from tests.data.make_captures import FRAMES

DATA = Path(__file__).parent / "data"
PLAIN = "version: 1\nports: {a: eth0, b: eth1}\n"
LATE = PLAIN + "rules:\n  - {name: late, match: {dst_port: 5001}, actions: [{delay: {time: 2500us}}]}\n"
# the arrival times of dumpcap-ethernet.pcapng's four frames, as `tshark -T fields -e frame.time_epoch` shows them
DUMPCAP_NS = [1796133629914555694, 1796133629924653813, 1796133629934739914, 1796133629944828910]
T0 = 1_700_000_000


def apply(tmp_path, data: bytes | Path, config=PLAIN, out="out.pcap"):
    """apply_capture on a capture (bytes or a file): the result and the output's path."""
    if isinstance(data, Path):
        inp = data
    else:
        inp = tmp_path / "in.capture"
        inp.write_bytes(data)
    (tmp_path / "rules.yaml").write_text(config)
    result = apply_capture(load_config(str(tmp_path / "rules.yaml")), str(inp), str(tmp_path / out))
    return result, tmp_path / out


def refused(tmp_path, data: bytes | Path) -> str:
    """The error apply gives for a capture, with the path taken out; no output file is left."""
    with pytest.raises(CaptureError) as info:
        apply(tmp_path, data)
    assert not (tmp_path / "out.pcap").exists()
    assert list(tmp_path.glob(".out.pcap.*")) == []  # nor the file it was writing
    path = str(data if isinstance(data, Path) else tmp_path / "in.capture")
    message = str(info.value)
    assert message.startswith(path + ": ")
    return message[len(path) + 2:]


def read_pcap(path) -> list[tuple[int, bytes]]:
    """(ns, frame) of a nanosecond pcap, read by scapy: an independent reader."""
    return [(m.sec * 10**9 + m.usec, d) for d, m in RawPcapReader(str(path))]


def read_pcapng(path) -> list[tuple[int, bytes]]:
    return [((((m.tshigh << 32) | m.tslow) * 10**9) // m.tsresol, d) for d, m in RawPcapNgReader(str(path))]


# ---- pcap and pcapng made here, block by block (the pcapng spec's layouts) ----

def pad4(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def pcap(*records: bytes, snaplen=65535, linktype=1, magic=0xA1B2C3D4, major=2, e="<") -> bytes:
    return struct.pack(e + "IHHiIII", magic, major, 4, 0, 0, snaplen, linktype) + b"".join(records)


def record(frame: bytes, sec=T0, frac=0, caplen=None, wirelen=None, e="<") -> bytes:
    return struct.pack(e + "IIII", sec, frac, len(frame) if caplen is None else caplen,
                       len(frame) if wirelen is None else wirelen) + frame


def block(btype: int, body: bytes, e="<", length=None, trailer=None) -> bytes:
    length = 12 + len(body) if length is None else length
    return struct.pack(e + "II", btype, length) + body + struct.pack(e + "I", length if trailer is None else trailer)


def option(code: int, value: bytes, e="<") -> bytes:
    return struct.pack(e + "HH", code, len(value)) + pad4(value)


def shb(e="<", bom=0x1A2B3C4D, major=1) -> bytes:
    return block(0x0A0D0D0A, struct.pack(e + "IHHq", bom, major, 0, -1), e)


def idb(linktype=1, snaplen=0, tsresol: int | None = 9, tsoffset: int | None = None, e="<", **kw) -> bytes:
    options = (option(9, bytes([tsresol]), e) if tsresol is not None else b"") + \
        (option(14, struct.pack(e + "q", tsoffset), e) if tsoffset is not None else b"")
    return block(1, struct.pack(e + "HHI", linktype, 0, snaplen) + options + (option(0, b"", e) if options else b""),
                 e, **kw)


def epb(frame: bytes, ts: int, iface=0, caplen=None, wirelen=None, e="<", **kw) -> bytes:
    header = struct.pack(e + "IIIII", iface, ts >> 32, ts & 0xFFFFFFFF, len(frame) if caplen is None else caplen,
                         len(frame) if wirelen is None else wirelen)
    return block(6, header + pad4(frame), e, **kw)


def spb(frame: bytes, e="<") -> bytes:
    return block(3, struct.pack(e + "I", len(frame)) + pad4(frame), e)


def obsolete_pb(frame: bytes, ts: int, iface=0, e="<") -> bytes:
    return block(2, struct.pack(e + "HHIIII", iface, 0, ts >> 32, ts & 0xFFFFFFFF, len(frame), len(frame))
                 + pad4(frame), e)


# ---- pcapng as Wireshark saves it ----

@pytest.mark.parametrize("out", ["out.pcap", "out.pcapng"])
def test_dumpcap_pcapng_in_gives_departures_to_the_nanosecond_in_pcap_or_pcapng(tmp_path, out):
    result, path = apply(tmp_path, DATA / "dumpcap-ethernet.pcapng", LATE, out=out)
    assert result.frames_in == 4 and result.frames_out == 4
    expected = [(DUMPCAP_NS[0], FRAMES[0]), (DUMPCAP_NS[1] + 2_500_000, FRAMES[1]), (DUMPCAP_NS[2], FRAMES[2]),
                (DUMPCAP_NS[3], FRAMES[3])]
    if out.endswith(".pcapng"):
        assert read_pcapng(path) == expected
        data = path.read_bytes()
        # one section (shb_userappl says who wrote it), one Ethernet interface with no snaplen and
        # if_tsresol 9 (nanoseconds), then the packets
        section = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + option(4, b"reshaper apply")
                        + option(0, b""))
        interface = block(1, struct.pack("<HHI", 1, 0, 0) + option(9, b"\x09") + option(0, b""))
        assert data.startswith(section + interface + struct.pack("<I", 6))
    else:
        assert path.read_bytes()[:4] == struct.pack("<I", 0xA1B23C4D)  # nanosecond pcap
        assert read_pcap(path) == expected


def test_editcap_microsecond_pcapng_keeps_its_microseconds(tmp_path):
    # editcap's IDB has no if_tsresol: microseconds; the output counts nanoseconds, so nothing is lost
    _, path = apply(tmp_path, DATA / "editcap-usec.pcapng", LATE, out="out.pcapng")
    usec = [t // 1000 * 1000 for t in DUMPCAP_NS]
    assert read_pcapng(path) == [(usec[0], FRAMES[0]), (usec[1] + 2_500_000, FRAMES[1]), (usec[2], FRAMES[2]),
                                 (usec[3], FRAMES[3])]


def test_pcapng_output_reads_in_tshark_as_written(tmp_path):
    tshark = shutil.which("tshark")
    assert tshark, "tshark is missing: make test-setup installs it (Debian package tshark)"
    _, path = apply(tmp_path, DATA / "dumpcap-ethernet.pcapng", LATE, out="out.pcapng")
    shown = subprocess.run([tshark, "-r", str(path), "-T", "fields", "-e", "frame.time_epoch", "-e", "frame.len",
                            "-e", "frame.interface_id", "-e", "udp.dstport"],
                           capture_output=True, text=True, check=True).stdout
    times = [DUMPCAP_NS[0], DUMPCAP_NS[1] + 2_500_000, DUMPCAP_NS[2], DUMPCAP_NS[3]]
    ports = [5000, 5001, 5000, 5000]
    assert shown.splitlines() == [f"{t // 10**9}.{t % 10**9:09d}\t{len(f)}\t0\t{p}"
                                  for t, f, p in zip(times, [FRAMES[0], FRAMES[1], FRAMES[2], FRAMES[3]], ports)]


def test_a_frame_from_a_non_ethernet_interface_is_refused_with_its_record(tmp_path):
    # records 1 and 2 are from the Ethernet interface and go through; record 3 is from dumpcap's "any"
    assert refused(tmp_path, DATA / "dumpcap-ethernet-and-any.pcapng") == (
        "record 3 at byte 524: from interface 1 (any), link type 113, not Ethernet (1): "
        "apply takes Ethernet frames only")


def test_every_block_kind_sections_resolutions_and_offsets(tmp_path):
    f = FRAMES
    data = (shb(">") + idb(tsresol=9, e=">") + idb(tsresol=0x80 | 10, e=">")     # 2^-10 s
            + epb(f[0], T0 * 10**9 + 1, iface=0, e=">")
            + block(0xBAD, pad4(b"a custom block, skipped"), e=">")
            + epb(f[1], T0 * 1024 + 512, iface=1, e=">")                       # T0 + 0.5 s
            + spb(f[2], e=">")                                                  # no timestamp: with the one before
            + obsolete_pb(f[3], (T0 + 1) * 10**9, iface=0, e=">")
            + shb("<") + idb(tsresol=None, tsoffset=T0)                         # a new section: microseconds
            + epb(f[0], 2_250_000))                                             # T0 + 2.25 s
    result, path = apply(tmp_path, data)
    assert read_pcap(path) == [(T0 * 10**9 + 1, f[0]), (T0 * 10**9 + 500_000_000, f[1]),
                               (T0 * 10**9 + 500_000_000, f[2]), ((T0 + 1) * 10**9, f[3]),
                               ((T0 + 2) * 10**9 + 250_000_000, f[0])]
    assert result.timestamps_cut == 0


def test_timestamps_finer_than_a_nanosecond_are_cut_and_said(tmp_path):
    # picoseconds (64 bits of them reach 213 days: if_tsoffset gives the epoch's seconds): 1.5 ns past T0
    data = shb() + idb(tsresol=12, tsoffset=T0) + epb(FRAMES[0], 1_500)
    result, path = apply(tmp_path, data)
    assert read_pcap(path) == [(T0 * 10**9 + 1, FRAMES[0])]
    assert result.report().splitlines()[1] == "1 timestamp finer than a nanosecond was cut to whole nanoseconds"


# ---- hostile captures ----
F0, F1 = FRAMES[0], FRAMES[1]          # 49 bytes: a pcap record of them is 65, an EPB 84
JUMBO = F0 + bytes(70_000 - len(F0))   # a 70 KB frame: over the engine's RS_MAX_FRAME
IDB_END = 28 + 32                      # where the first packet starts after shb() + idb()
EPB2 = IDB_END + 84                    # where the second starts

HOSTILE = {
    # pcap: a 24-byte header, records from byte 24 (the second at 89)
    "empty": (b"", "an empty file, not a capture"),
    "bad magic": (b"this is not a capture at all",
                  "not a pcap or pcapng capture: it starts with 74686973, not a pcap magic (a1b2c3d4 or a1b23c4d, "
                  "either byte order) or a pcapng section header (0a0d0d0a)"),
    "gzip": (b"\x1f\x8b\x08\x00" + bytes(20),
             "not a pcap or pcapng capture: it starts with 1f8b0800 (gzip-compressed: decompress it first), not a "
             "pcap magic (a1b2c3d4 or a1b23c4d, either byte order) or a pcapng section header (0a0d0d0a)"),
    "truncated file header": (pcap()[:10], "file header: truncated: 10 of its 24 bytes"),
    "pcap version": (pcap(major=3), "file header: pcap version 3.4, expected 2.4"),
    "raw IP link type": (pcap(record(F0[14:]), linktype=101),
                         "file header: link type 101, not Ethernet (1): apply takes Ethernet frames only"),
    "caplen 0xffffffff": (pcap(record(F0), record(F1, caplen=0xFFFFFFFF), record(F0)),
                          "record 2 at byte 89: caplen 4294967295 is over the snaplen 65535"),
    "caplen 0xffffffff, no snaplen": (pcap(record(F0), record(F1, caplen=0xFFFFFFFF, wirelen=0xFFFFFFFF), snaplen=0),
                                      "record 2 at byte 89: a frame of 4294967295 bytes, over the largest the "
                                      "engine takes (65535 bytes)"),
    "70 KB frame": (pcap(record(F0), record(JUMBO), snaplen=262144),
                    "record 2 at byte 89: a frame of 70000 bytes, over the largest the engine takes (65535 bytes)"),
    "caplen over len": (pcap(record(F0), record(F1, wirelen=40)),
                        "record 2 at byte 89: caplen 49 is over the frame's length 40"),
    "cut at a snaplen": (pcap(record(F0), record(F1, wirelen=1514)),
                         "record 2 at byte 89: only 49 of the frame's 1514 bytes were captured; "
                         "apply needs whole frames"),
    "truncated record header": (pcap(record(F0), record(F1)[:5]),
                                "record 2 at byte 89: truncated: the file ends 5 bytes into its 16-byte header"),
    "truncated record": (pcap(record(F0), record(F1)[:-9]),
                         "record 2 at byte 89: truncated: the record takes 65 bytes, the file ends 56 bytes into it"),
    "a second or more": (pcap(record(F0), record(F1, frac=1_000_000)),
                         "record 2 at byte 89: timestamp fraction 1000000 is not below a second (1000000)"),
    "big-endian pcap, caplen over snaplen": (pcap(record(F0, e=">"), snaplen=40, e=">"),
                                             "record 1 at byte 24: caplen 49 is over the snaplen 40"),
    # pcapng: shb() is 28 bytes, idb() 32, each epb() of a 49-byte frame 84
    "bad byte-order magic": (shb(bom=0x11223344), "section header block at byte 0: byte-order magic 44332211, "
                                                  "expected 1a2b3c4d or 4d3c2b1a"),
    "pcapng version": (shb(major=2), "section header block at byte 0: pcapng version 2.0, expected 1.0"),
    "truncated section header": (shb()[:6], "block at byte 0: truncated: the file ends 6 bytes into the block"),
    "lengths disagree": (shb() + idb() + epb(F0, 0) + epb(F1, 0, trailer=88),
                         f"record 2 at byte {EPB2}: block length 84 at its start, 88 at its end"),
    "length not a multiple of 4": (shb() + idb() + epb(F0, 0) + epb(F1, 0, length=83),
                                   f"record 2 at byte {EPB2}: block length 83: a block is a multiple of 4 bytes, "
                                   f"at least 12"),
    "block too short for its caplen": (shb() + idb() + epb(F0, 0) + epb(F1[:32], 0, caplen=49, wirelen=49),
                                       f"record 2 at byte {EPB2}: block length 64 leaves 32 bytes for the frame, "
                                       f"its caplen is 49"),
    "simple packet block of another length": (shb() + idb() + epb(F0, 0)
                                              + block(3, struct.pack("<I", len(F1)) + pad4(F1) + bytes(4)),
                                              f"record 2 at byte {EPB2}: block length 72 disagrees with its "
                                              f"49-byte frame (68)"),
    "truncated block": (shb() + idb() + epb(F0, 0) + epb(F1, 0)[:40],
                        f"record 2 at byte {EPB2}: truncated: the file ends 40 bytes into the 84-byte enhanced "
                        f"packet block"),
    "no interface for the packet": (shb() + idb() + epb(F0, 0) + epb(F1, 0, iface=1),
                                    f"record 2 at byte {EPB2}: interface 1, but the section describes 1 interface "
                                    f"before it"),
    "a packet before any interface": (shb() + spb(F0), "record 1 at byte 28: interface 0, but the section "
                                                       "describes 0 interfaces before it"),
    "absurd interface block": (shb() + idb(length=0x7FFFFFF0),
                               "interface description block at byte 28: block length 2147483632, more than any "
                               "interface description block needs (1048576 bytes)"),
    "caplen over the interface's snaplen": (shb() + idb(snaplen=40) + epb(F0, 0),
                                            f"record 1 at byte {IDB_END}: caplen 49 is over the snaplen 40"),
    "70 KB enhanced packet": (shb() + idb() + epb(F0, 0) + epb(JUMBO, 0),
                              f"record 2 at byte {EPB2}: a frame of 70000 bytes, over the largest the engine "
                              f"takes (65535 bytes)"),
    "caplen 0xffffffff in an enhanced packet": (shb() + idb() + epb(F0, 0, caplen=0xFFFFFFFF, wirelen=0xFFFFFFFF),
                                                f"record 1 at byte {IDB_END}: a frame of 4294967295 bytes, over the "
                                                f"largest the engine takes (65535 bytes)"),
    "timestamp before 1970": (shb() + idb(tsoffset=-10) + epb(F0, 0),
                              f"record 1 at byte {IDB_END + 12}: timestamp before 1970 (if_tsoffset -10 s): the "
                              f"engine's clock counts nanoseconds from 1970 in 64 bits"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_a_malformed_capture_is_one_line_naming_the_record(tmp_path, name):
    data, error = HOSTILE[name]
    assert refused(tmp_path, data) == error


def test_a_failed_apply_leaves_an_earlier_output_as_it_was(tmp_path):
    (tmp_path / "out.pcap").write_bytes(b"an earlier result")
    with pytest.raises(CaptureError):
        apply(tmp_path, HOSTILE["caplen 0xffffffff"][0])
    assert (tmp_path / "out.pcap").read_bytes() == b"an earlier result"


@pytest.mark.parametrize("name", ["caplen 0xffffffff", "70 KB frame"])
def test_cli_exits_1_with_one_line_and_no_output(tmp_path, name):
    data, error = HOSTILE[name]
    (tmp_path / "in.pcap").write_bytes(data)
    (tmp_path / "rules.yaml").write_text(PLAIN)
    result = subprocess.run([sys.executable, "-m", "reshaper", "apply", str(tmp_path / "rules.yaml"),
                             str(tmp_path / "in.pcap"), str(tmp_path / "out.pcap")], capture_output=True, text=True)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"reshaper apply: {tmp_path / 'in.pcap'}: {error}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.pcap", "rules.yaml"]
