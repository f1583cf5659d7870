"""The C engine against a small pure-Python reference model (hypothesis).

The model matches with plain comparisons and rewrites with scapy, which
recomputes every checksum from scratch; the engine updates them
incrementally. Both must give the same bytes for every generated rule set
and frame.
"""
import ipaddress

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from reshaper.rules.compiler import compile_rules
from reshaper.rules.config import load_config
from reshaper.rules.binding import Engine

MACS = ["02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"]
V4 = ["10.0.0.1", "10.0.0.2", "10.0.1.7", "192.0.2.9"]
V6 = ["2001:db8::1", "2001:db8::2", "2001:db8:1::7", "fd00::9"]
PORTS = [53, 80, 443, 8080, 40000]
PROTOS = {"tcp": 6, "udp": 17}
FLAGS = {"fin": 1, "syn": 2, "rst": 4, "psh": 8, "ack": 16}


# ---- frames ------------------------------------------------------------------

@st.composite
def frames(draw):
    v6 = draw(st.booleans())
    addrs = V6 if v6 else V4
    ip = (IPv6(src=draw(st.sampled_from(addrs)), dst=draw(st.sampled_from(addrs)),
               hlim=draw(st.integers(0, 255)), tc=draw(st.integers(0, 255)))
          if v6 else
          IP(src=draw(st.sampled_from(addrs)), dst=draw(st.sampled_from(addrs)),
             ttl=draw(st.integers(0, 255)), tos=draw(st.integers(0, 255)), id=draw(st.integers(0, 65535))))
    sport, dport = draw(st.sampled_from(PORTS)), draw(st.sampled_from(PORTS))
    if draw(st.booleans()):
        l4 = TCP(sport=sport, dport=dport, flags=draw(st.integers(0, 31)), seq=draw(st.integers(0, 2**32 - 1)))
    else:
        l4 = UDP(sport=sport, dport=dport)
    payload = draw(st.binary(max_size=40))
    frame = Ether(src=draw(st.sampled_from(MACS)), dst=draw(st.sampled_from(MACS))) / ip / l4 / payload
    return bytes(frame)


# ---- rules -------------------------------------------------------------------

def _range(draw, lo, hi):
    a, b = sorted((draw(st.integers(lo, hi)), draw(st.integers(lo, hi))))
    return f"{a}-{b}"


@st.composite
def rule_specs(draw, index):
    family = draw(st.sampled_from([4, 6, None]))
    match = {}
    if family is not None and draw(st.booleans()):
        match["eth_type"] = f"ipv{family}"
    if family is not None and draw(st.booleans()):
        addr = draw(st.sampled_from(V4 if family == 4 else V6))
        prefix = draw(st.sampled_from([8, 24, 32] if family == 4 else [32, 48, 128]))
        match[draw(st.sampled_from(["ip_src", "ip_dst"]))] = str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))
    if draw(st.booleans()):
        match["ip_proto"] = draw(st.sampled_from(list(PROTOS)))
    if draw(st.booleans()):
        match[draw(st.sampled_from(["src_port", "dst_port"]))] = draw(
            st.one_of(st.sampled_from(PORTS), st.just(_range(draw, 0, 65535)),
                      st.lists(st.sampled_from(PORTS), min_size=1, max_size=3)))
    if draw(st.integers(0, 3)) == 0:
        match["ttl"] = _range(draw, 0, 255)
    if draw(st.integers(0, 3)) == 0:
        match["dscp"] = _range(draw, 0, 63)
    if match.get("ip_proto") == "tcp" and draw(st.booleans()):
        names = draw(st.lists(st.sampled_from(list(FLAGS)), min_size=1, max_size=3, unique=True))
        match["tcp_flags"] = ",".join(("!" if draw(st.booleans()) else "") + n for n in names)
    if draw(st.integers(0, 3)) == 0:
        match["eth_src"] = draw(st.sampled_from(MACS))

    actions = []
    sets = {}
    if draw(st.booleans()):
        sets["dscp"] = draw(st.integers(0, 63))
    if draw(st.booleans()):
        sets["ecn"] = draw(st.integers(0, 3))
    if draw(st.booleans()):
        sets["ttl"] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        sets[draw(st.sampled_from(["src_port", "dst_port"]))] = draw(st.sampled_from(PORTS))
    if family is not None and draw(st.booleans()):
        sets[draw(st.sampled_from(["ip_src", "ip_dst"]))] = draw(st.sampled_from(V4 if family == 4 else V6))
    if draw(st.booleans()):
        sets[draw(st.sampled_from(["eth_src", "eth_dst"]))] = draw(st.sampled_from(MACS))
    if sets:
        actions.append({"set": sets})
    if draw(st.integers(0, 3)) == 0:
        actions.append("dec_ttl")
    if draw(st.integers(0, 5)) == 0:
        actions.append("drop")
    return {"name": f"r{index}", "from": draw(st.sampled_from(["a", "b", "any"])),
            "match": match, "actions": actions}


@st.composite
def configs(draw):
    n = draw(st.integers(0, 4))
    return {"version": 1, "ports": {"a": "veth-a", "b": "veth-b"},
            "default": draw(st.sampled_from(["forward", "drop"])),
            "rules": [draw(rule_specs(i)) for i in range(n)]}


# ---- the model ---------------------------------------------------------------

def _in_ranges(value, spec):
    items = spec if isinstance(spec, list) else [spec]
    for item in items:
        if isinstance(item, int):
            if value == item:
                return True
        else:
            lo, hi = (int(x) for x in item.split("-"))
            if lo <= value <= hi:
                return True
    return False


def _matches(pkt, match):
    ip = pkt.getlayer(IP) or pkt.getlayer(IPv6)
    l4 = pkt.getlayer(TCP) or pkt.getlayer(UDP)
    for field, want in match.items():
        if field == "eth_type":
            ok = (want == "ipv4") == isinstance(ip, IP)
        elif field in ("ip_src", "ip_dst"):
            addr = ipaddress.ip_address(ip.src if field == "ip_src" else ip.dst)
            ok = addr in ipaddress.ip_network(want)
        elif field == "ip_proto":
            ok = isinstance(l4, TCP if want == "tcp" else UDP)
        elif field in ("src_port", "dst_port"):
            ok = _in_ranges(l4.sport if field == "src_port" else l4.dport, want)
        elif field == "ttl":
            ok = _in_ranges(ip.ttl if isinstance(ip, IP) else ip.hlim, want)
        elif field == "dscp":
            ok = _in_ranges((ip.tos if isinstance(ip, IP) else ip.tc) >> 2, want)
        elif field == "tcp_flags":
            flags = int(l4.flags)
            ok = all(bool(flags & FLAGS[w.lstrip("!")]) != w.startswith("!") for w in want.split(","))
        elif field == "eth_src":
            ok = pkt.src == want
        else:
            raise AssertionError(field)
        if not ok:
            return False
    return True


def _apply(pkt, actions):
    """Returns the frame after the actions, or None when dropped."""
    ip = pkt.getlayer(IP) or pkt.getlayer(IPv6)
    l4 = pkt.getlayer(TCP) or pkt.getlayer(UDP)
    v4 = isinstance(ip, IP)
    for action in actions:
        if action == "drop":
            return None
        if action == "dec_ttl":
            ttl = ip.ttl if v4 else ip.hlim
            if ttl <= 1:
                return None
            if v4:
                ip.ttl = ttl - 1
            else:
                ip.hlim = ttl - 1
            continue
        for key, value in action["set"].items():
            tos = "tos" if v4 else "tc"
            if key == "dscp":
                setattr(ip, tos, (getattr(ip, tos) & 0x03) | (value << 2))
            elif key == "ecn":
                setattr(ip, tos, (getattr(ip, tos) & 0xFC) | value)
            elif key == "ttl":
                setattr(ip, "ttl" if v4 else "hlim", value)
            elif key == "src_port":
                l4.sport = value
            elif key == "dst_port":
                l4.dport = value
            elif key in ("ip_src", "ip_dst") and ipaddress.ip_address(value).version != (4 if v4 else 6):
                pass  # an address of the other family: the engine skips it
            elif key == "ip_src":
                ip.src = value
            elif key == "ip_dst":
                ip.dst = value
            elif key == "eth_src":
                pkt.src = value
            elif key == "eth_dst":
                pkt.dst = value
    if v4:
        del ip.chksum
    del l4.chksum
    return bytes(pkt)


def model(config, frame, port):
    pkt = Ether(frame)
    for rule in config["rules"]:
        if rule["from"] not in ("any", port):
            continue
        if _matches(pkt, rule["match"]):
            return _apply(pkt, rule["actions"])
    return frame if config["default"] == "forward" else None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs(), frame=frames(), port=st.sampled_from(["a", "b"]))
def test_engine_agrees_with_model(tmp_path_factory, config, frame, port):
    text = yaml.safe_dump(config, sort_keys=False)
    loaded = load_config("generated.yaml", text)
    engine = Engine(compile_rules(loaded))
    verdict, out = engine.run(frame, port)
    expected = model(config, frame, port)
    if expected is None:
        assert not verdict.forward, f"engine forwarded what the model drops\n{text}"
    else:
        assert verdict.forward, f"engine dropped ({verdict.reason}) what the model forwards\n{text}"
        assert out.hex() == expected.hex(), f"\n{text}\n{Ether(frame).show2(dump=True)}"
