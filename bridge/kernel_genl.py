"""The reshaper generic-netlink family (kmod/reshaper_genl.h), seen from user space.

A pyroute2 GenericNetlinkSocket with one verb per command: load, clear, stats.
Every number and the port-stats layout come from the header through the
native extension (reshaper/_ffi_build.py), so the module and this file cannot
disagree.
"""
from __future__ import annotations

import errno
import os

from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, genlmsg
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import GenericNetlinkSocket

from reshaper._native import ffi, lib
from reshaper.bridge.appliance import SetupError
from reshaper.rules.binding import state_counters

GENL_NAME = ffi.string(lib.reshaper_genl_name).decode()
PORT_COUNTERS = tuple(name for name, _ in ffi.typeof("struct reshaper_port_stats").fields)
# GET_STATS dumps asked again when a reload replaced the program during one (EAGAIN,
# kmod/reshaper_genl.h): reloads are rare and far apart, a few tries are plenty
STATS_TRIES = 3


class KernelError(SetupError):
    """The module refused an operation (or is not there); str() is its message."""

    def __init__(self, message: str, code: int = 0):
        super().__init__(message)
        self.code = code


# how each attribute is encoded; its number comes from the header
ATTRIBUTE_TYPES = {
    "RESHAPER_A_UNSPEC": "none",
    "RESHAPER_A_PROGRAM": "cdata",
    "RESHAPER_A_PORT_A": "asciiz",
    "RESHAPER_A_PORT_B": "asciiz",
    "RESHAPER_A_SEED": "uint64",
    "RESHAPER_A_PROGRAM_LEN": "uint32",
    "RESHAPER_A_STATE": "cdata",
    "RESHAPER_A_PORT_STATS": "cdata",
    "RESHAPER_A_QUEUED": "uint32",
    "RESHAPER_A_QUEUE_DROPS": "uint64",
    "RESHAPER_A_PAD": "none",
}


class reshapermsg(genlmsg):
    prefix = "RESHAPER_A_"
    nla_map = tuple((getattr(lib, name), name, kind) for name, kind in ATTRIBUTE_TYPES.items())


def _error(exc: NetlinkError, what: str) -> KernelError:
    code = exc.code
    text = exc.args[1] if len(exc.args) > 1 and exc.args[1] else os.strerror(code)
    if code == errno.EPERM:
        text = "operation not permitted (needs CAP_NET_ADMIN in the initial user namespace)"
    return KernelError(f"{what}: {text}", code)


class ReshaperSocket(GenericNetlinkSocket):
    """The generic netlink family of the module, in this network namespace."""

    def __init__(self):
        super().__init__(ext_ack=True)  # the kernel's extack message comes back in the error
        try:
            self.bind(GENL_NAME, reshapermsg)
        except NetlinkError as exc:
            self.close()
            if exc.code == errno.ENOENT:
                raise KernelError("the reshaper kernel module is not loaded", exc.code) from None
            raise _error(exc, "generic netlink") from None

    def _request(self, cmd: int, attrs: list, what: str, flags: int = NLM_F_ACK) -> list:
        msg = reshapermsg()
        msg["cmd"] = cmd
        msg["version"] = lib.RESHAPER_GENL_VERSION
        msg["attrs"] = attrs
        try:
            return list(self.nlm_request(msg, msg_type=self.prid, msg_flags=NLM_F_REQUEST | flags))
        except NetlinkError as exc:
            raise _error(exc, what) from None

    def stats_messages(self) -> list:
        """The messages of one GET_STATS dump, in order (kmod/reshaper_genl.h says what each holds)."""
        for tries in range(STATS_TRIES, 0, -1):
            try:
                return [m for m in self._request(lib.RESHAPER_CMD_GET_STATS, [], "stats", NLM_F_DUMP)
                        if m.get("cmd") == lib.RESHAPER_CMD_GET_STATS]
            except KernelError as exc:
                if exc.code != errno.EAGAIN or tries == 1:
                    raise

    def load(self, program: bytes, port_a: str, port_b: str, seed: int = 0) -> None:
        """Verified by the kernel; on refusal the loaded program stays (KernelError)."""
        if len(program) > lib.RESHAPER_MAX_PROGRAM_LEN:  # `check --mode kernel` refuses it too (bridge/modes/kernel.py)
            raise KernelError(f"program refused: {len(program)} bytes do not fit one netlink attribute "
                              f"(at most {lib.RESHAPER_MAX_PROGRAM_LEN})")
        self._request(lib.RESHAPER_CMD_LOAD,
                      [("RESHAPER_A_PROGRAM", program), ("RESHAPER_A_PORT_A", port_a),
                       ("RESHAPER_A_PORT_B", port_b), ("RESHAPER_A_SEED", seed)],
                      "program refused by the kernel")

    def clear(self) -> None:
        self._request(lib.RESHAPER_CMD_CLEAR, [], "clear")

    def stats(self) -> dict:
        """{"loaded", "engine", "rules" (list of counter dicts), "ports" {a, b}, "queued", "queue_drops"}."""
        return parse_stats(self.stats_messages())


def parse_stats(messages: list) -> dict:
    """The messages of a GET_STATS dump: the first has everything but the rest of the state,
    which comes in pieces, one a message, to be joined in order (kmod/reshaper_genl.h)."""
    first = messages[0]
    out = {"loaded": first.get_attr("RESHAPER_A_PROGRAM_LEN") is not None,
           "queued": first.get_attr("RESHAPER_A_QUEUED") or 0,
           "queue_drops": first.get_attr("RESHAPER_A_QUEUE_DROPS") or 0,
           "engine": {}, "rules": [], "ports": {}, "time_zero": None}
    state = b"".join(piece for m in messages for piece in m.get_attrs("RESHAPER_A_STATE"))
    if state:
        out["engine"], out["rules"], out["time_zero"] = state_counters(state)
    ports = first.get_attr("RESHAPER_A_PORT_STATS")
    if ports:
        stats = ffi.cast("struct reshaper_port_stats *", ffi.from_buffer(ports))
        out["ports"] = {name: {k: getattr(stats[i], k) for k in PORT_COUNTERS} for i, name in enumerate("ab")}
    return out
