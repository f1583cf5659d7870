"""The field tables of the rule language: every key a rule file may hold, the kind of its value, what it means.

The loader (rules/config.py) takes keys, parsers, required keys and defaults
from these tables; rules/schema.py writes rules/schema.json from them; the
compiler (rules/compiler.py) takes the engine's number for a name from the maps
below. A new match field or action starts here. Bounds the engine sets are read
from rules/engine/rs_program.h through the extension, never written again.
"""
from __future__ import annotations

import re

from yaml.nodes import Node

from reshaper._native import lib
from reshaper.rules.kinds import (ActionItem, Address, Bitrate, Bool, BytesSpec, Choice, Directories, Field, Flags,
                                  Hex, Int, Listed, Mac, Models, Network, OrNull, PortSpec, Probability, Ranges,
                                  Record, SetFields, Text, Time)
from reshaper.rules.model import Invalid
from reshaper.rules.values import node_text, node_value

# ---- names on the wire ---------------------------------------------------------------

ETH_TYPES = {"ipv4": lib.RS_ETH_P_IP, "ipv6": lib.RS_ETH_P_IPV6, "arp": 0x0806}
ETHERTYPE_MIN = 0x0600  # smaller values of the field are an 802.3 length
TPID_8021Q, TPID_8021AD = lib.RS_ETH_P_8021Q, lib.RS_ETH_P_8021AD
VLAN_TPIDS = {TPID_8021Q: "802.1Q", TPID_8021AD: "802.1ad"}
IP_PROTOS = {"icmp": lib.RS_IPPROTO_ICMP, "tcp": lib.RS_IPPROTO_TCP, "udp": lib.RS_IPPROTO_UDP,
             "icmpv6": lib.RS_IPPROTO_ICMPV6, "sctp": 132}
TCP_FLAGS = {"fin": 1, "syn": 2, "rst": 4, "psh": 8, "ack": 16, "urg": 32, "ece": 64, "cwr": 128}
# the largest value of each header field rules match or set (its width in bits)
HEADER_MAX = {"vlan": lib.RS_MAX_VLAN, "vlan_pcp": lib.RS_MAX_VLAN_PCP, "ip_proto": 0xFF, "port": 0xFFFF,
              "dscp": lib.RS_MAX_DSCP, "ecn": lib.RS_MAX_ECN, "ttl": lib.RS_MAX_TTL}
ETH_HLEN = lib.RS_ETH_HLEN  # the shortest frame the engine takes: an Ethernet header

# ---- the language's names for the engine's numbers (rules/engine/rs_program.h) -------------------

FROM_PORTS = {"a": lib.RS_FROM_A, "b": lib.RS_FROM_B, "any": lib.RS_FROM_ANY}
BASES = {"l2": lib.RS_BASE_L2, "l3": lib.RS_BASE_L3, "l4": lib.RS_BASE_L4}
DISTRIBUTIONS = {"uniform": lib.RS_DIST_UNIFORM, "normal": lib.RS_DIST_NORMAL,
                 "pareto": lib.RS_DIST_PARETO, "paretonormal": lib.RS_DIST_PARETONORMAL}
MAX_TIME_NS = lib.RS_MAX_DELAY_NS
MAX_OFFSET = lib.RS_MAX_OFFSET  # of bytes and payload
MAX_BITRATE = 2**64 - 1  # RS_A_RATE carries bits per second as a u64 (rules/engine/rs_program.h)


def jitter_reach(distribution: str) -> float:
    """The most a delay's jitter adds, in jitters: uniform's reaches +1, a table's its last point
    (rules/engine/rs_dist_tables.h, read through the extension)."""
    if distribution == "uniform":
        return 1.0
    return getattr(lib, f"rs_dist_{distribution}")[lib.RS_DIST_POINTS - 1] / lib.RS_DIST_SCALE


# ---- kinds of values on the wire ----------------------------------------------------------------

class EthType:
    """ipv4, ipv6, arp, vlan (the frame carries an inner tag) or an ethertype number."""

    def parse(self, node: Node) -> int | str:
        value = node_value(node)
        if isinstance(value, str) and re.fullmatch(r"0x[0-9a-fA-F]{1,4}", value):
            value = int(value, 16)  # quoted hex, as bytes values are written
        if isinstance(value, str) and value.lower() in (*ETH_TYPES, "vlan"):
            return value.lower()
        if isinstance(value, int) and not isinstance(value, bool) and ETHERTYPE_MIN <= value <= 0xFFFF:
            return value
        raise Invalid(f"expected {', '.join(ETH_TYPES)}, vlan or an ethertype from 0x{ETHERTYPE_MIN:04x} "
                      f"to 0xffff, got {node_text(node)!r}")


def tpid_names() -> str:
    return " or ".join(f"0x{tpid:04x} ({name})" for tpid, name in VLAN_TPIDS.items())


class Tpid:
    def parse(self, node: Node) -> int:
        value = node_value(node)
        if value not in VLAN_TPIDS:
            raise Invalid(f"expected a TPID of {tpid_names()}, got {node_text(node)!r}")
        return value


# ---- the tables ---------------------------------------------------------------------------------

def _ranges(field: str, names: dict[str, int] | None = None) -> Ranges:
    return Ranges(0, HEADER_MAX[field], lib.RS_MAX_RANGES, names)


def _bytes_fields(value: str) -> dict[str, Field]:
    return {
        "offset": Field(Int(0, MAX_OFFSET, "a byte offset"), "byte offset from the base", required=True),
        "base": Field(Choice(tuple(BASES)), "where offset counts from: l2 the frame start, l3 the IP header, "
                                            "l4 the TCP/UDP/ICMP header; l3 and l4 bytes end with the IP packet, "
                                            "never in padding", default="l2"),
        "value": Field(Hex("value", lib.RS_MAX_BYTES), value, required=True),
        "mask": Field(Hex("mask", lib.RS_MAX_BYTES),
                      "which bits of value count (all when not given), as long as value"),
    }


MATCH_FIELDS = {
    "eth_src": Field(Mac(mask=True), "source MAC"),
    "eth_dst": Field(Mac(mask=True), "destination MAC"),
    "eth_type": Field(EthType(), "ethertype after the inner tags"),
    "vlan": Field(_ranges("vlan"), "VLAN id of the inner tag (the port's own tag is already off)"),
    "vlan_pcp": Field(_ranges("vlan_pcp"), "priority of the inner tag"),
    "ip_src": Field(Network(), "the source IP"),
    "ip_dst": Field(Network(), "the destination IP"),
    "ip_proto": Field(_ranges("ip_proto", names=IP_PROTOS), "upper-layer protocol (after IPv6 extension headers)"),
    "src_port": Field(_ranges("port"), "TCP/UDP source port"),
    "dst_port": Field(_ranges("port"), "TCP/UDP destination port"),
    "tcp_flags": Field(Flags(TCP_FLAGS), "TCP flags that must be set or clear"),
    "dscp": Field(_ranges("dscp"), "DSCP of IPv4 TOS or IPv6 traffic class"),
    "ttl": Field(_ranges("ttl"), "IPv4 TTL or IPv6 hop limit"),
    "length": Field(Ranges(ETH_HLEN, lib.RS_MAX_FRAME, lib.RS_MAX_RANGES),
                    "frame length in bytes as the pipeline sees it (without the port's tag)"),
    "bytes": Field(BytesSpec(_bytes_fields("the bytes to compare")), "bytes at an offset equal a value under a mask"),
}

SET_FIELDS = {
    "eth_src": Field(Mac(mask=False), "new source MAC"),
    "eth_dst": Field(Mac(mask=False), "new destination MAC"),
    "ip_src": Field(Address(), "new source address, of the packet's family (IPv4 header and TCP/UDP checksums fixed)"),
    "ip_dst": Field(Address(), "new destination address, of the packet's family "
                               "(IPv4 header and TCP/UDP checksums fixed)"),
    "dscp": Field(Int(0, HEADER_MAX["dscp"]), "new DSCP (ECN bits kept)"),
    "ecn": Field(Int(0, HEADER_MAX["ecn"]), "new ECN bits (DSCP kept)"),
    "ttl": Field(Int(0, HEADER_MAX["ttl"]), "new IPv4 TTL or IPv6 hop limit"),
    "src_port": Field(Int(0, HEADER_MAX["port"], "a port"), "new TCP/UDP source port"),
    "dst_port": Field(Int(0, HEADER_MAX["port"], "a port"), "new TCP/UDP destination port"),
    "vlan": Field(Int(0, HEADER_MAX["vlan"], "a VLAN id"), "new VLAN id of the inner tag"),
    "vlan_pcp": Field(Int(0, HEADER_MAX["vlan_pcp"], "a priority"), "new priority of the inner tag"),
}

LOSS_RANDOM = {
    "probability": Field(Probability(), "chance a frame is lost", required=True),
    "correlation": Field(Probability(), "how much each draw leans on the previous one (netem)", default=0.0),
}
LOSS_GE = {
    "p": Field(Probability(), "chance of going from the good to the bad state", required=True),
    "r": Field(Probability(), "chance of going from the bad to the good state", required=True),
    "h": Field(Probability(), "chance a frame survives in the bad state", default=0.0),
    "k": Field(Probability(), "chance a frame survives in the good state", default=1.0),
}

# a file a rule file names (a schedule, a delivery trace), relative to it
FILE_NAME = Text(r"[^\x00]{1,4096}", "a file name")

# Each action: the kind of its parameters, and what it does.
ACTIONS = {
    "set": Field(SetFields(SET_FIELDS), "rewrite fields; checksums are fixed incrementally "
                                        "(a UDP checksum of 0 stays 0)"),
    "dec_ttl": Field(Record({}), "decrement TTL or hop limit; frames at 1 or 0 are dropped"),
    "pop_vlan": Field(Record({}), "remove the inner tag"),
    "drop": Field(Record({}), "drop the frame; later actions do not run"),
    "push_vlan": Field(Record({
        "vlan": Field(Int(0, HEADER_MAX["vlan"], "a VLAN id"), "VLAN id", required=True),
        "pcp": Field(Int(0, HEADER_MAX["vlan_pcp"], "a priority"), "priority", default=0),
        "tpid": Field(Tpid(), "tag protocol id", default=TPID_8021Q),
    }), "insert an inner tag after the MACs"),
    "payload": Field(BytesSpec(_bytes_fields("the bytes to write")), "overwrite bytes (under a mask); "
                                                                     "checksums are fixed"),
    "truncate": Field(Record({
        "length": Field(Int(ETH_HLEN, lib.RS_MAX_FRAME, "a frame length"), "frame length in bytes", required=True),
    }), "cut the frame to a length; IP and UDP lengths and checksums follow when the headers stay whole"),
    "duplicate": Field(Record({
        "copies": Field(Int(1, lib.RS_MAX_COPIES, "a number of extra copies"),
                        "extra copies (2 sends three frames)", default=1),
        "probability": Field(Probability(), "chance of duplicating", default=1.0),
    }), "send extra copies of the frame"),
    "corrupt": Field(Record({
        "probability": Field(Probability(), "chance a frame is corrupted", required=True),
    }), "flip one random bit past the Ethernet header (checksums are not fixed)"),
    "loss": Field(Models({
        "random": Field(Record(LOSS_RANDOM), "independent, or correlated, losses"),
        "gilbert-elliott": Field(Record(LOSS_GE), "a good and a bad state"),
    }), "lose frames at random (netem's correlated model) or by Gilbert-Elliott (model: gilbert-elliott)"),
    "delay": Field(Record({
        "time": Field(Time(MAX_TIME_NS), "the delay", required=True),
        "jitter": Field(Time(MAX_TIME_NS), "spread around the delay", default=0),
        "distribution": Field(Choice(tuple(DISTRIBUTIONS)), "shape of the jitter", default="uniform"),
        "correlation": Field(Probability(), "how much each draw leans on the previous one", default=0.0),
        "reorder_on_jitter": Field(Bool(), "let jitter reorder frames; when false a frame never leaves before "
                                           "an earlier one of the rule", default=False),
    }), "hold the frame before it leaves"),
    "reorder": Field(Record({
        "probability": Field(Probability(), "chance that a frame, once gap frames were delayed, skips the delay",
                             required=True),
        "gap": Field(Int(1, 1_000_000, "a gap"), "frames delayed between two reordered ones (netem's gap)",
                     default=1),
    }), "send some frames at once, skipping the rule's delay (needs a delay action in the rule)"),
    "python": Field(Record({
        "call": Field(Text(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*", "a hook as \"package.module:function\""),
                      "the function to call, found in hooks_path", required=True),
        "timeout": Field(Time(MAX_TIME_NS), "a hook that takes longer is counted and the frame follows on_error",
                         default=2_000_000),
        "raw": Field(Bool(), "pass bytes instead of a scapy packet (faster)", default=False),
        "on_error": Field(Choice(("pass", "drop")), "what happens to the frame when the hook raises or overruns: "
                                                    "pass (unchanged) or drop", default="pass"),
        "fix_checksums": Field(Bool(), "recompute IP/UDP lengths and checksums of what the hook returns",
                               default=True),
    }), "call a python function with the frame; it returns the frame, a list of frames or None; "
        "must be the rule's last action"),
    "rate": Field(Record({
        "bitrate": Field(Bitrate(MAX_BITRATE), "the rate; bitrate or trace is needed"),
        "trace": Field(FILE_NAME,
                       "instead of a bit rate, a delivery trace in mahimahi's format (one line per opportunity: "
                       "the millisecond at which one 1500-byte packet may leave; it repeats), relative to this "
                       "file"),
        "overhead": Field(Int(-64, 1024, "a per-frame overhead in bytes"),
                          "bytes added to each frame's length for the rate", default=0),
        "limit": Field(Int(1, lib.RS_MAX_RATE_LIMIT, "a queue limit in frames"),
                       "frames that may wait; more are dropped", default=1000),
    }), "serialise the rule's frames at a bit rate, or by a delivery trace, with a queue"),
}
ACTION_ITEM = ActionItem(ACTIONS)

# a phase of a schedule; its actions, like the rule's, are checked by rules/checks.py
PHASE_KEYS = {
    "for": Field(Time(lib.RS_MAX_PHASE_NS), "how long the phase lasts", required=True),
    "actions": Field(Listed(ACTION_ITEM, lib.RS_MAX_OPS), "the phase's actions, in place of the rule's; "
                                                           "omitted: the rule's own"),
}
# the columns of a schedule file, one phase a row (rules/schedule_file.py)
SCHEDULE_COLUMNS = ("for", "delay", "jitter", "loss")
SCHEDULE_KEYS = {
    "phases": Field(Listed(Record(PHASE_KEYS), lib.RS_MAX_PHASES), "the phases, in turn from time zero"),
    "file": Field(FILE_NAME,
                  f"a CSV file of phases, relative to this file: a header naming its columns "
                  f"({', '.join(SCHEDULE_COLUMNS)}; for is needed), then one phase a row"),
    "repeat": Field(Bool(), "start over after the last phase; false: the last phase holds", default=False),
    "keep_time": Field(Bool(), "a reload keeps the schedule running (its time zero is the first load's) "
                               "instead of starting it over", default=False),
}

RULE_KEYS = {
    "name": Field(Text(r"[a-z0-9_-]{1,32}", "a rule name of 1-32 characters from a-z, 0-9, _ and -"),
                  "unique within the file", required=True),
    "from": Field(Choice(tuple(FROM_PORTS)), "the port the frames arrive on", default="any"),
    "match": Field(OrNull(Record(MATCH_FIELDS)), "the fields a frame must match (all of them); "
                                                 "omitted or empty matches every frame"),
    "actions": Field(Listed(ACTION_ITEM), "what to do with a matching frame, in order; [] forwards it unchanged"),
    "schedule": Field(Record(SCHEDULE_KEYS), "actions that change over time: phases (or a file of them) "
                                             "replace the rule's actions for their time; phases or file is "
                                             "needed, not both. Time zero is the load (start or reload), in "
                                             "reshaper apply the first frame"),
}

_INTERFACE = Field(Text(r"[A-Za-z0-9_.@:-]{1,15}", "an interface name (1-15 characters, no spaces or '/')"),
                   "a VLAN interface or plain port")
_TRUNK = Field(Record({
    "interface": Field(_INTERFACE.value, "the interface carrying the VLAN", required=True),
    # VLAN ids 0 and 4095 are reserved (802.1Q): a port cannot be one
    "vlan": Field(Int(1, HEADER_MAX["vlan"] - 1, "a VLAN id"), "the port's VLAN id", required=True),
}), "trunk form: an interface and the VLAN id this port adds and removes")
PORTS = {
    "a": Field(PortSpec("a", _INTERFACE, _TRUNK), "port a: eth0.100 or {interface: eth0, vlan: 100}", required=True),
    "b": Field(PortSpec("b", _INTERFACE, _TRUNK), "port b: eth0.200 or {interface: eth0, vlan: 200}", required=True),
}

TOP_KEYS = {
    "version": Field(Int(1, 1, "version"), "format version", required=True),
    "ports": Field(Record(PORTS), "the two VLAN segments frames move between", required=True),
    "forward": Field(Choice(("both", "a-to-b", "b-to-a")), "directions frames move in", default="both"),
    "default": Field(Choice(("forward", "drop")), "what happens to frames no rule matches", default="forward"),
    "malformed": Field(Choice(("pass", "drop")), "what happens to frames that cannot be parsed; pass leaves them "
                                                 "unchanged", default="pass"),
    "hooks_path": Field(Directories(), "directories python hooks may be loaded from, relative to this file "
                                       "(nothing is loaded from anywhere else)"),
    "rules": Field(Listed(Record(RULE_KEYS), lib.RS_MAX_RULES), "the rules; the first that matches a frame applies"),
}
