"""What a timing action should do, offline: the C engine (reshaper.rules.binding.Engine, the
one `reshaper apply` and the live modes run) driven with chosen arrival times and a fixed
seed, the CDFs of the configured delay distributions, and a Kolmogorov-Smirnov test.

The Kolmogorov-Smirnov statistic and its asymptotic p-value are computed here
(no scipy): D = sup |F_n(x) - F(x)|, p = Q_KS((sqrt(n) + 0.12 + 0.11/sqrt(n)) D)
with Q_KS(l) = 2 sum_{k>=1} (-1)^(k-1) exp(-2 k^2 l^2) (Numerical Recipes).
tests/test_timing.py checks the engine with them; bench/timing.py the live modes and netem.
"""
from __future__ import annotations

import math
import statistics

from reshaper.rules.binding import Engine
from reshaper.rules.compiler import compile_rules
from reshaper.rules.config import load_config

MS = 1_000_000
NORMAL = statistics.NormalDist()
PARETO_MEAN, PARETO_STD = 1.5, math.sqrt(0.75)
LOSS_N = 100_000   # frames per loss figure (tests/test_timing.py; bench/timing.py by default)


# ---- statistics ------------------------------------------------------------------------

def ks_pvalue(d: float, n: int) -> float:
    lam = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d
    if lam < 0.2:
        return 1.0
    total, sign = 0.0, 1.0
    for k in range(1, 101):
        term = sign * math.exp(-2.0 * k * k * lam * lam)
        total += term
        if abs(term) < 1e-12:
            break
        sign = -sign
    return max(0.0, min(1.0, 2.0 * total))


def ks_test(samples, cdf) -> tuple[float, float]:
    """One-sample KS test of samples against cdf; returns (D, p-value)."""
    xs = sorted(samples)
    n = len(xs)
    d = 0.0
    for i, x in enumerate(xs):
        f = cdf(x)
        d = max(d, (i + 1) / n - f, f - i / n)
    return d, ks_pvalue(d, n)


def q_standard(dist: str, u: float) -> float:
    """Zero-mean, unit-deviation quantile of a configured distribution (gen_dist_tables.py)."""
    if dist == "uniform":
        return math.sqrt(3.0) * (2.0 * u - 1.0)  # unused for the delay (see delay_cdf), kept for completeness
    qn = NORMAL.inv_cdf(u)
    qp = ((1.0 - u) ** (-1.0 / 3.0) - PARETO_MEAN) / PARETO_STD
    if dist == "normal":
        return qn
    if dist == "pareto":
        return qp
    return (0.25 * qn + 0.75 * qp) / PARETONORMAL_STD


def _paretonormal_std() -> float:
    # as gen_dist_tables.py, with fewer steps (its result to ~1e-6)
    m = 1 << 16
    acc = sum(-NORMAL.inv_cdf(((j + 0.5) / m) ** 3) * 3.0 * (j + 0.5) / m for j in range(m))
    c = acc / m / PARETO_STD
    return math.sqrt(0.25 ** 2 + 0.75 ** 2 + 2 * 0.25 * 0.75 * c)


PARETONORMAL_STD = _paretonormal_std()


def delay_cdf(dist: str, time_ns: float, jitter_ns: float):
    """The CDF of the delay a rule `delay: {time, jitter, distribution}` is configured with.

    uniform is time +- jitter (as netem: uniform on [time - jitter, time + jitter));
    the others are time + jitter * D, D of mean 0 and deviation 1 (netem's
    tables are the reference for shape). The engine clamps negative delays at
    0; the configurations tested here never go below.
    """
    if dist == "uniform":
        return lambda x: min(1.0, max(0.0, (x - time_ns + jitter_ns) / (2 * jitter_ns)))
    if dist == "normal":
        return lambda x: NORMAL.cdf((x - time_ns) / jitter_ns)
    if dist == "pareto":
        def cdf(x):
            # D = (X - 3/2)/sqrt(3/4), X pareto(shape 3, scale 1): F = 1 - X^-3
            xx = PARETO_MEAN + PARETO_STD * (x - time_ns) / jitter_ns
            return 0.0 if xx <= 1.0 else 1.0 - xx ** -3.0
        return cdf

    def cdf(x):  # paretonormal: invert the (monotone) quantile by bisection
        d = (x - time_ns) / jitter_ns
        lo, hi = 1e-12, 1.0 - 1e-12
        if d <= q_standard(dist, lo):
            return 0.0
        if d >= q_standard(dist, hi):
            return 1.0
        for _ in range(48):
            mid = (lo + hi) / 2
            if q_standard(dist, mid) < d:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2
    return cdf


# ---- the engine on simulated time ----------------------------------------------------

def udp_frame(payload_len: int = 18) -> bytes:
    """An IPv4 UDP frame of 14 + 20 + 8 + payload_len bytes (checksum 0)."""
    ip_len = 20 + 8 + payload_len
    eth = bytes.fromhex("020000000b01" "020000000a01" "0800")
    ip = bytes([0x45, 0, ip_len >> 8, ip_len & 0xFF, 0, 0, 0, 0, 64, 17, 0, 0, 10, 77, 0, 1, 10, 77, 0, 2])
    s = sum(int.from_bytes(ip[i:i + 2], "big") for i in range(0, 20, 2))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    ip = ip[:10] + (~s & 0xFFFF).to_bytes(2, "big") + ip[12:]
    udp = (4000).to_bytes(2, "big") + (5000).to_bytes(2, "big") + (8 + payload_len).to_bytes(2, "big") + b"\0\0"
    return eth + ip + udp + bytes(payload_len)


FRAME = udp_frame()


def engine(actions: str, seed: int = 1) -> Engine:
    text = f"version: 1\nports: {{a: a0, b: b0}}\nrules:\n  - name: r\n    actions: {actions}\n"
    return Engine(compile_rules(load_config("timing.yaml", text)), seed)


def run_frames(eng: Engine, arrivals, frame: bytes = FRAME):
    """Runs a frame at each arrival time; returns the verdicts (with arrival)."""
    out = []
    for t in arrivals:
        v, _ = eng.run(frame, "a", t)
        out.append((t, v))
    return out


def delays(actions: str, n: int, spacing_ns: int, seed: int = 1) -> list[int]:
    eng = engine(actions, seed)
    return [v.delay_ns for _, v in run_frames(eng, range(0, n * spacing_ns, spacing_ns))]


def lost_flags(actions: str, n: int = LOSS_N, seed: int = 1) -> tuple[list[bool], Engine]:
    eng = engine(actions, seed)
    flags = [not v.forward for _, v in run_frames(eng, range(0, n * 1000, 1000))]
    return flags, eng
