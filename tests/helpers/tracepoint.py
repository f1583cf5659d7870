"""The module's tracepoint as its source writes it (kmod/rs_trace.h): the tests of the trace
reader hold the kernel's format file and bridge/kernel_trace.py's fields to it."""
from __future__ import annotations

import re
from pathlib import Path

RS_TRACE_H = Path(__file__).resolve().parents[2] / "kmod/rs_trace.h"


def tp_printk() -> str:
    """The format string of the event's TP_printk."""
    m = re.search(r'TP_printk\("([^"]*)"', RS_TRACE_H.read_text())
    assert m, f"no TP_printk in {RS_TRACE_H}"
    return m.group(1)
