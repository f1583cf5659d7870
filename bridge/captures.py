"""Captures in and out of `reshaper apply`: pcap and pcapng read (every malformed
or hostile file is one CaptureError naming the record), nanosecond pcap or pcapng
written, to a temporary file renamed into place only when the whole capture
went through (bridge/apply.py).

A reader of many records at once (bridge/apply_native.py, in C) may take the
plain records between the ones this reader reads itself: CaptureReader.bulk.
"""
from __future__ import annotations

import dataclasses
import os
import struct
import tempfile
from typing import Iterator

from reshaper._native import lib

LINKTYPE_ETHERNET = 1
NS = 1_000_000_000

# pcap, the libpcap file format: the file header's magic says what a timestamp's fraction counts (in ns)
PCAP_MICRO_MAGIC, PCAP_NANO_MAGIC = 0xA1B2C3D4, 0xA1B23C4D
PCAP_MAGICS = {PCAP_MICRO_MAGIC: 1_000, PCAP_NANO_MAGIC: 1}
PCAP_VERSION = (2, 4)
PCAP_FILE_HEADER = struct.Struct("IHHiIII")  # magic, version 2.4, thiszone, sigfigs, snaplen, link type
PCAP_RECORD = struct.Struct("IIII")          # seconds, fraction, captured length, length on the wire
# the snaplen written to pcap output: what dumpcap and tcpdump write (tests/data/dumpcap-ethernet.pcapng's IDB)
PCAP_SNAPLEN = 262_144

# pcapng, the PCAP Next Generation format: blocks of type, total length, body, total length again
BLOCK_SHB, BLOCK_IDB, BLOCK_PB = 0x0A0D0D0A, 1, 2
BLOCK_SPB, BLOCK_EPB = lib.RS_PCAPNG_SPB, lib.RS_PCAPNG_EPB  # the ones the C reader takes (bridge/apply_loop.h)
BYTE_ORDER_MAGIC = 0x1A2B3C4D
PCAPNG_VERSION = (1, 0)
OPT_ENDOFOPT, OPT_SHB_USERAPPL, OPT_IF_NAME, OPT_IF_TSRESOL, OPT_IF_TSOFFSET = 0, 4, 2, 9, 14
DEFAULT_TSRESOL = 6           # if_tsresol: 10^-6 s, what an IDB without the option counts
TSRESOL_NS = 9                # 10^-9 s: what the output counts
PACKET_HEADER = struct.Struct("IIIII")  # EPB: interface, timestamp high, low, captured length, original length
# section headers and interface descriptions hold only options (names, comments): one past a megabyte
# is a corrupt length, not a real block
MAX_META_BLOCK = 1 << 20
BLOCK_NAMES = {BLOCK_SHB: "section header block", BLOCK_IDB: "interface description block",
               BLOCK_PB: "packet block", BLOCK_SPB: "simple packet block", BLOCK_EPB: "enhanced packet block"}
SKIP_CHUNK = 1 << 16          # unknown blocks are skipped in pieces: their length may be a lie
GZIP_MAGIC = b"\x1f\x8b"
# input handed to CaptureReader.bulk: a buffer of BULK_CHUNK bytes, filled again when less than BULK_REFILL is
# left (more than a record of RS_MAX_FRAME; a longer one, with options, the reader reads itself). One buffer,
# read into: a new one per read made the kernel fault in and zero its pages each time.
BULK_CHUNK, BULK_REFILL = 1 << 20, 128 << 10


class CaptureError(Exception):
    pass


class _Short(Exception):
    """The file ended inside something it promised."""


def _pad4(n: int) -> int:
    return n + (-n) % 4


@dataclasses.dataclass
class _Interface:
    linktype: int
    snaplen: int
    name: str
    per_second: int     # timestamp units per second (if_tsresol)
    offset_s: int       # if_tsoffset


@dataclasses.dataclass(eq=False)
class Layout:
    """How the records from a point of a capture on are laid out: what a reader of many at once needs
    (CaptureReader.bulk). A pcapng section gets a new one at each interface description block."""
    pcapng: bool
    big_endian: bool
    unit_ns: int = 0                                    # pcap: what a timestamp's fraction counts
    snaplen: int = 0                                    # pcap
    interfaces: tuple[_Interface, ...] = ()             # pcapng: the section's, so far


class CaptureReader:
    """The frames of a pcap or pcapng capture, every length checked against the others as it is read.

    Frames are (arrival ns, bytes). Anything malformed is a CaptureError naming the record (packets
    counted from 1, as Wireshark numbers frames) and its byte offset: nothing is cut or skipped silently.

    bulk, when given, is called at every record's start with the Layout, the input read ahead (a buffer),
    where in it the record starts, where what was read ends and the last packet's time (a simple packet
    block's); it runs the
    records it can take from there itself and returns where it stopped, how many records it took and
    the last packet's time. This reader reads the record it stopped at, and says what is wrong with it.
    """

    def __init__(self, path: str, bulk=None):
        self.path = path
        self.offset = 0
        self.records = 0
        self.timestamps_cut = 0   # pcapng timestamps finer than a nanosecond, cut to whole nanoseconds
        self.bulk = bulk
        self._ahead: memoryview | None = None   # input read ahead for bulk: [_at, _end) is still to read
        self._at = self._end = 0
        self._eof = False
        try:
            self.f = open(path, "rb")
        except OSError as exc:
            raise CaptureError(f"{path}: cannot open: {exc.strerror}") from None

    def close(self) -> None:
        self.f.close()

    def error(self, where: str, what: str) -> CaptureError:
        return CaptureError(f"{self.path}: {where}: {what}")

    def _take(self, n: int) -> bytes:
        """Up to n bytes (fewer only at the end of the file), the read-ahead's first."""
        data = b""
        if self._at < self._end:
            upto = min(self._end, self._at + n)
            data = bytes(self._ahead[self._at:upto])
            self._at = upto
        if len(data) < n:
            data += self.f.read(n - len(data))
        self.offset += len(data)
        return data

    def _read(self, n: int) -> bytes:
        data = self._take(n)
        if len(data) < n:
            raise _Short
        return data

    def _in_bulk(self, layout: Layout, last_ns: int = 0) -> int:
        """The records bulk takes from here; returns the last packet's time."""
        if self.bulk is None:
            return last_ns
        if self._end - self._at < BULK_REFILL and not self._eof:
            if self._ahead is None:
                self._ahead = memoryview(bytearray(BULK_CHUNK))
            left = self._end - self._at
            self._ahead[:left] = self._ahead[self._at:self._end]
            n = self.f.readinto(self._ahead[left:])
            self._eof = n == 0
            self._at, self._end = 0, left + n
        at, records, last_ns = self.bulk(layout, self._ahead, self._at, self._end, last_ns)
        self.offset += at - self._at
        self.records += records
        self._at = at
        return last_ns

    def _skip(self, n: int) -> None:
        while n > 0:
            n -= len(self._read(min(n, SKIP_CHUNK)))

    def frames(self) -> Iterator[tuple[int, bytes]]:
        head = self._take(4)
        if head == BLOCK_SHB.to_bytes(4, "big"):  # the same bytes in either byte order
            yield from self._pcapng(head)
            return
        for endian in "<>":
            if len(head) == 4 and struct.unpack(endian + "I", head)[0] in PCAP_MAGICS:
                yield from self._pcap(endian, head)
                return
        if not head:
            raise CaptureError(f"{self.path}: an empty file, not a capture")
        hint = " (gzip-compressed: decompress it first)" if head.startswith(GZIP_MAGIC) else ""
        raise CaptureError(f"{self.path}: not a pcap or pcapng capture: it starts with {head.hex()}{hint}, not a "
                           f"pcap magic (a1b2c3d4 or a1b23c4d, either byte order) or a pcapng section header "
                           f"(0a0d0d0a)")

    def _check_frame(self, where: str, caplen: int, wirelen: int, snaplen: int) -> None:
        """Lengths of a packet record, before its data is read (a caplen may claim gigabytes)."""
        if snaplen and caplen > snaplen:
            raise self.error(where, f"caplen {caplen} is over the snaplen {snaplen}")
        if caplen > wirelen:
            raise self.error(where, f"caplen {caplen} is over the frame's length {wirelen}")
        if caplen < wirelen:
            raise self.error(where, f"only {caplen} of the frame's {wirelen} bytes were captured; "
                                    f"apply needs whole frames")
        if caplen > lib.RS_MAX_FRAME:
            raise self.error(where, f"a frame of {caplen} bytes, over the largest the engine takes "
                                    f"({lib.RS_MAX_FRAME} bytes)")

    # ---- pcap ----
    def _pcap(self, endian: str, head: bytes) -> Iterator[tuple[int, bytes]]:
        try:
            header = head + self._read(PCAP_FILE_HEADER.size - 4)
        except _Short:
            raise self.error("file header", f"truncated: {self.offset} of its {PCAP_FILE_HEADER.size} bytes")
        magic, major, minor, _, _, snaplen, linktype = struct.unpack(endian + PCAP_FILE_HEADER.format, header)
        if major != PCAP_VERSION[0]:
            raise self.error("file header", f"pcap version {major}.{minor}, "
                                            f"expected {PCAP_VERSION[0]}.{PCAP_VERSION[1]}")
        if linktype != LINKTYPE_ETHERNET:
            raise self.error("file header", f"link type {linktype}, not Ethernet ({LINKTYPE_ETHERNET}): "
                                            f"apply takes Ethernet frames only")
        unit = PCAP_MAGICS[magic]
        record = struct.Struct(endian + PCAP_RECORD.format)
        layout = Layout(pcapng=False, big_endian=endian == ">", unit_ns=unit, snaplen=snaplen)
        while True:
            self._in_bulk(layout)
            start = self.offset
            raw = self._take(record.size)
            if not raw:
                return
            self.records += 1
            where = f"record {self.records} at byte {start}"
            if len(raw) < record.size:
                raise self.error(where, f"truncated: the file ends {len(raw)} bytes into its {record.size}-byte "
                                        f"header")
            sec, frac, caplen, wirelen = record.unpack(raw)
            self._check_frame(where, caplen, wirelen, snaplen)
            if frac * unit >= NS:
                raise self.error(where, f"timestamp fraction {frac} is not below a second ({NS // unit})")
            try:
                data = self._read(caplen)
            except _Short:
                raise self.error(where, f"truncated: the record takes {record.size + caplen} bytes, the file ends "
                                        f"{self.offset - start} bytes into it") from None
            yield sec * NS + frac * unit, data

    # ---- pcapng ----
    def _pcapng(self, head: bytes) -> Iterator[tuple[int, bytes]]:
        endian, interfaces, last_ns, start = "<", [], 0, 0
        layout = None  # for bulk: none before a section's first interface
        while head:
            where, kind, length = f"block at byte {start}", "block", None
            try:
                if len(head) < 4:
                    raise _Short
                rest = self._read(4)
                if head == BLOCK_SHB.to_bytes(4, "big"):
                    where, kind = f"section header block at byte {start}", BLOCK_NAMES[BLOCK_SHB]
                    endian = self._byte_order(where, self._read(4))
                    interfaces, layout = [], None  # each section describes its interfaces anew
                btype, length = struct.unpack(endian + "II", head + rest)
                if btype in (BLOCK_EPB, BLOCK_PB, BLOCK_SPB):
                    self.records += 1
                    where, kind = f"record {self.records} at byte {start}", BLOCK_NAMES[btype]
                elif btype == BLOCK_IDB:
                    where, kind = f"interface description block at byte {start}", BLOCK_NAMES[btype]
                if length % 4 or length < 12:
                    raise self.error(where, f"block length {length}: a block is a multiple of 4 bytes, "
                                            f"at least 12")
                if btype == BLOCK_SHB:
                    self._section(where, endian, length, self._meta(where, kind, length, length - 16))
                elif btype == BLOCK_IDB:
                    interfaces.append(self._interface(where, endian, length, self._meta(where, kind, length,
                                                                                        length - 12)))
                    layout = Layout(pcapng=True, big_endian=endian == ">", interfaces=tuple(interfaces))
                elif btype in (BLOCK_EPB, BLOCK_PB, BLOCK_SPB):
                    t_ns, data = self._packet(where, kind, btype, endian, length, interfaces, last_ns)
                else:
                    self._skip(length - 12)  # statistics, name resolution, ...: nothing apply needs
                trailer = struct.unpack(endian + "I", self._read(4))[0]
            except _Short:
                size = f"{length}-byte " if length is not None else ""
                raise self.error(where, f"truncated: the file ends {self.offset - start} bytes into the "
                                        f"{size}{kind}") from None
            if trailer != length:
                raise self.error(where, f"block length {length} at its start, {trailer} at its end")
            if btype in (BLOCK_EPB, BLOCK_PB, BLOCK_SPB):
                last_ns = t_ns
                yield t_ns, data
            if layout is not None:
                last_ns = self._in_bulk(layout, last_ns)
            start = self.offset
            head = self._take(4)

    def _byte_order(self, where: str, bom: bytes) -> str:
        for endian in "<>":
            if struct.unpack(endian + "I", bom)[0] == BYTE_ORDER_MAGIC:
                return endian
        raise self.error(where, f"byte-order magic {bom.hex()}, expected 1a2b3c4d or 4d3c2b1a")

    def _meta(self, where: str, kind: str, length: int, n: int) -> bytes:
        if length > MAX_META_BLOCK:
            raise self.error(where, f"block length {length}, more than any {kind} needs ({MAX_META_BLOCK} bytes)")
        if n < 0:
            raise self.error(where, f"block length {length}, too short for a {kind}")
        return self._read(n)

    def _section(self, where: str, endian: str, length: int, body: bytes) -> None:
        if len(body) < 12:
            raise self.error(where, f"block length {length}, too short for a section header block (28 at least)")
        major, minor = struct.unpack_from(endian + "HH", body)
        if major != PCAPNG_VERSION[0]:
            raise self.error(where, f"pcapng version {major}.{minor}, expected {PCAPNG_VERSION[0]}.{PCAPNG_VERSION[1]}")

    def _options(self, where: str, endian: str, data: bytes) -> dict[int, bytes]:
        options, i = {}, 0
        while i + 4 <= len(data):
            code, n = struct.unpack_from(endian + "HH", data, i)
            if code == OPT_ENDOFOPT:
                break
            if i + 4 + n > len(data):
                raise self.error(where, f"option {code} of {n} bytes runs past the end of the block")
            options.setdefault(code, data[i + 4:i + 4 + n])
            i += 4 + _pad4(n)
        return options

    def _interface(self, where: str, endian: str, length: int, body: bytes) -> _Interface:
        if len(body) < 8:
            raise self.error(where, f"block length {length}, too short for an interface description block "
                                    f"(20 at least)")
        linktype, _, snaplen = struct.unpack_from(endian + "HHI", body)
        options = self._options(where, endian, body[8:])
        resolution = options.get(OPT_IF_TSRESOL, bytes([DEFAULT_TSRESOL]))
        offset = options.get(OPT_IF_TSOFFSET, bytes(8))
        if len(resolution) != 1 or len(offset) != 8:
            raise self.error(where, f"if_tsresol of {len(resolution)} bytes (1 expected) or if_tsoffset of "
                                    f"{len(offset)} (8 expected)")
        r = resolution[0]
        per_second = 2 ** (r & 0x7F) if r & 0x80 else 10 ** r  # the high bit: a power of 2, else of 10
        return _Interface(linktype, snaplen, options.get(OPT_IF_NAME, b"").decode("utf-8", "replace"),
                          per_second, struct.unpack(endian + "q", offset)[0])

    def _packet(self, where: str, kind: str, btype: int, endian: str, length: int,
                interfaces: list[_Interface], last_ns: int) -> tuple[int, bytes]:
        if btype == BLOCK_SPB:
            fixed = 16
            if length < fixed:
                raise self.error(where, f"block length {length}, too short for a {kind} ({fixed} at least)")
            wirelen = struct.unpack(endian + "I", self._read(4))[0]
            iface = self._ethernet(where, interfaces, 0)
            caplen = min(wirelen, iface.snaplen) if iface.snaplen else wirelen
            self._check_frame(where, caplen, wirelen, iface.snaplen)
            if length != fixed + _pad4(caplen):  # a simple packet block has no options
                raise self.error(where, f"block length {length} disagrees with its {caplen}-byte frame "
                                        f"({fixed + _pad4(caplen)})")
            t_ns = last_ns  # it carries no timestamp: it arrives with the frame before it
        else:
            fixed = 12 + PACKET_HEADER.size
            if length < fixed:
                raise self.error(where, f"block length {length}, too short for a {kind} ({fixed} at least)")
            header = self._read(PACKET_HEADER.size)
            if btype == BLOCK_EPB:
                iface_id, high, low, caplen, wirelen = struct.unpack(endian + PACKET_HEADER.format, header)
            else:  # the obsolete packet block: a 16-bit interface and a drops count in its first word
                iface_id, _, high, low, caplen, wirelen = struct.unpack(endian + "HHIIII", header)
            iface = self._ethernet(where, interfaces, iface_id)
            self._check_frame(where, caplen, wirelen, iface.snaplen)
            if fixed + _pad4(caplen) > length:
                raise self.error(where, f"block length {length} leaves {length - fixed} bytes for the frame, "
                                        f"its caplen is {caplen}")
            ticks, finer = divmod(((high << 32) | low) * NS, iface.per_second)
            if finer:
                self.timestamps_cut += 1  # finer than the engine's clock (and Wireshark's): cut to whole ns
            t_ns = ticks + iface.offset_s * NS
            if t_ns < 0 or t_ns >> 64:
                raise self.error(where, f"timestamp {'before 1970' if t_ns < 0 else 'past 2554'} "
                                        f"(if_tsoffset {iface.offset_s} s): the engine's clock counts nanoseconds "
                                        f"from 1970 in 64 bits")
        data = self._read(_pad4(caplen))[:caplen]
        self._skip(length - fixed - _pad4(caplen))  # options
        return t_ns, data

    def _ethernet(self, where: str, interfaces: list[_Interface], iface_id: int) -> _Interface:
        if iface_id >= len(interfaces):
            raise self.error(where, f"interface {iface_id}, but the section describes {len(interfaces)} "
                                    f"interface{'s' if len(interfaces) != 1 else ''} before it")
        iface = interfaces[iface_id]
        if iface.linktype != LINKTYPE_ETHERNET:
            name = f" ({iface.name})" if iface.name else ""
            raise self.error(where, f"from interface {iface_id}{name}, link type {iface.linktype}, not Ethernet "
                                    f"({LINKTYPE_ETHERNET}): apply takes Ethernet frames only")
        return iface


class _PcapWriter:
    """Nanosecond pcap: every departure time exactly."""

    def __init__(self, f):
        self.f = f
        f.write(struct.pack("<" + PCAP_FILE_HEADER.format, PCAP_NANO_MAGIC, *PCAP_VERSION, 0, 0, PCAP_SNAPLEN,
                            LINKTYPE_ETHERNET))

    def write(self, t_ns: int, frame: bytes) -> None:
        sec, nsec = divmod(t_ns, NS)
        if sec >> 32:
            raise CaptureError(f"a departure at {sec} s past 1970 does not fit pcap's 32-bit seconds: "
                               f"write .pcapng")
        if len(frame) > PCAP_SNAPLEN:
            raise CaptureError(f"a frame of {len(frame)} bytes leaves, over the output's snaplen {PCAP_SNAPLEN}")
        self.f.write(struct.pack("<" + PCAP_RECORD.format, sec, nsec, len(frame), len(frame)) + frame)


class _PcapngWriter:
    """pcapng as Wireshark reads it: one section, one Ethernet interface counting nanoseconds."""

    def __init__(self, f):
        self.f = f
        appl = b"reshaper apply"
        # section length -1: not given; snaplen 0: no limit
        shb = struct.pack("<IHHq", BYTE_ORDER_MAGIC, *PCAPNG_VERSION, -1) + \
            self._option(OPT_SHB_USERAPPL, appl) + self._option(OPT_ENDOFOPT, b"")
        idb = struct.pack("<HHI", LINKTYPE_ETHERNET, 0, 0) + self._option(OPT_IF_TSRESOL, bytes([TSRESOL_NS])) + \
            self._option(OPT_ENDOFOPT, b"")
        self._block(BLOCK_SHB, shb)
        self._block(BLOCK_IDB, idb)

    @staticmethod
    def _option(code: int, value: bytes) -> bytes:
        return struct.pack("<HH", code, len(value)) + value + bytes(_pad4(len(value)) - len(value))

    def _block(self, btype: int, body: bytes) -> None:
        length = 12 + len(body)
        self.f.write(struct.pack("<II", btype, length) + body + struct.pack("<I", length))

    def write(self, t_ns: int, frame: bytes) -> None:
        n = len(frame)
        if t_ns >> 64:
            raise CaptureError(f"a departure at {t_ns} ns past 1970 does not fit pcapng's 64-bit timestamps")
        self._block(BLOCK_EPB, struct.pack("<" + PACKET_HEADER.format, 0, t_ns >> 32, t_ns & 0xFFFFFFFF, n, n)
                    + frame + bytes(_pad4(n) - n))


class CaptureOutput:
    """A capture in the format its name says (.pcapng, else pcap), written beside its place and put there
    only when apply succeeds: a failed run leaves no file that looks like a result."""

    def __init__(self, path: str):
        self.path, self.tmp = path, None
        try:
            if os.path.exists(path) and not os.path.isfile(path):  # /dev/stdout, a pipe: written as it goes
                self.f = open(path, "wb")
            else:
                fd, self.tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                                                prefix=f".{os.path.basename(path)}.", suffix=".partial")
                self.f = os.fdopen(fd, "wb")
        except OSError as exc:
            raise CaptureError(f"{path}: cannot write: {exc.strerror}") from None
        self.pcapng = path.lower().endswith(".pcapng")
        self.writer = (_PcapngWriter if self.pcapng else _PcapWriter)(self.f)

    def write(self, t_ns: int, frame: bytes) -> None:
        self.writer.write(t_ns, frame)

    def finish(self, ok: bool) -> None:
        self.f.close()
        if self.tmp is None:
            return
        if not ok:
            os.unlink(self.tmp)
            return
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)  # as if created in place (mkstemp makes it 0600)
        os.replace(self.tmp, self.path)
