"""A delivery trace: `rate: {trace: FILE}`, in mahimahi's format (as mm-link reads it).

One line per delivery opportunity: the millisecond, from the trace's start, at which one
opportunity occurs; the lines do not go down, and lines with the same millisecond are as many
opportunities in it. The trace repeats, its period the last line's millisecond. An opportunity
carries RS_TRACE_OPP_BYTES of frames (rules/engine/rs_program.h): a 1500-byte packet with its
Ethernet header. Errors name the file, the line and the column.
"""
from __future__ import annotations

import dataclasses
import re

from reshaper._native import lib
from reshaper.rules.loader import read_text
from reshaper.rules.model import ConfigError, Diagnostic

# the program keeps each opportunity as its milliseconds after the one before, in 16 bits
MAX_GAP_MS = 0xFFFF


@dataclasses.dataclass(frozen=True)
class DeliveryTrace:
    path: str
    opportunities: tuple[int, ...]   # each one's millisecond from the period's start

    @property
    def period_ms(self) -> int:
        return self.opportunities[-1]

    def program_bytes(self) -> bytes:
        """The trace as the program carries it (rules/engine/PROGRAM.md, "Delivery traces")."""
        import struct

        deltas = [b - a for a, b in zip((0,) + self.opportunities, self.opportunities)]
        return struct.pack("<III", lib.RS_TRACE_HDR_LEN + 2 * len(deltas), self.period_ms, len(deltas)) + \
            struct.pack(f"<{len(deltas)}H", *deltas)


def read_delivery_trace(path: str) -> DeliveryTrace:
    """The trace at path; ConfigError at the line that is wrong."""
    def error(line: int, col: int, message: str) -> ConfigError:
        return ConfigError([Diagnostic(path, line, col, message)])

    times: list[int] = []
    for line, text in enumerate(read_text(path).splitlines(), 1):
        if not text.strip():
            continue
        col = len(text) - len(text.lstrip()) + 1
        if not re.fullmatch(r"\s*\d{1,9}\s*", text):
            raise error(line, col, f"expected a whole number of milliseconds, got {text.strip()!r}")
        ms = int(text)
        if times and ms < times[-1]:
            raise error(line, col, f"expected a millisecond at or after the line before's {times[-1]}, got {ms}")
        if ms - (times[-1] if times else 0) > MAX_GAP_MS:
            raise error(line, col, f"expected at most {MAX_GAP_MS} ms between two opportunities, "
                                   f"got {ms - (times[-1] if times else 0)}")
        if ms > lib.RS_MAX_TRACE_MS:
            raise error(line, col, f"expected a trace of at most a day ({lib.RS_MAX_TRACE_MS} ms), got {ms}")
        times.append(ms)
    if not times or times[-1] == 0:
        raise error(1, 1, "expected at least one delivery opportunity, the last after 0 ms (the period)")
    return DeliveryTrace(path, tuple(times))
