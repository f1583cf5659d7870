"""Timing actions, statistically, offline: the C engine with simulated time and fixed seeds.

Every test drives reshaper.rules.binding.Engine (the engine `reshaper apply` and the
live modes run) with chosen arrival times and a fixed seed, so each result is
deterministic: a threshold either holds for that seed or it does not, and the
tests never flake. The thresholds are still set as a statistician would (p-value
of a Kolmogorov-Smirnov test, a few binomial standard deviations), so a seed
change would not make them fail either.

The Kolmogorov-Smirnov test, the configured distributions' CDFs and the engine on
simulated time are lab/timing_model.py's (bench/timing.py uses them on live measurements).
"""
from __future__ import annotations

import math
import statistics

import pytest

from reshaper.lab.timing_model import (FRAME, LOSS_N, MS, NORMAL, delay_cdf, delays, engine, ks_pvalue, ks_test,
                                       lost_flags, run_frames, udp_frame)
from reshaper.rules.config import load_config
from tests.helpers.captures import write_capture


# ---- statistics helpers of these tests --------------------------------------------

def autocorr1(xs) -> float:
    m = statistics.fmean(xs)
    num = sum((a - m) * (b - m) for a, b in zip(xs, xs[1:]))
    den = sum((a - m) ** 2 for a in xs)
    return num / den


def runs(flags) -> list[int]:
    """Lengths of the runs of True in a sequence of booleans."""
    out, n = [], 0
    for f in flags:
        if f:
            n += 1
        elif n:
            out.append(n)
            n = 0
    if n:
        out.append(n)
    return out


# ---- the helpers themselves ----------------------------------------------------

def test_ks_helper_accepts_the_right_distribution_and_rejects_a_wrong_one():
    import random
    rnd = random.Random(5)
    xs = [rnd.gauss(0, 1) for _ in range(5000)]
    assert ks_test(xs, NORMAL.cdf)[1] > 0.05
    assert ks_test(xs, lambda x: min(1, max(0, (x + 1.7) / 3.4)))[1] < 1e-6
    # Q_KS at the textbook 5 % point
    assert ks_pvalue(1.358 / math.sqrt(1e6), 1_000_000) == pytest.approx(0.05, abs=0.002)


# ---- delay distributions ------------------------------------------------------------

DIST_N = 20_000


@pytest.mark.parametrize("dist", ["uniform", "normal", "pareto", "paretonormal"])
def test_delay_distribution_matches_the_configured_one_with_reorder_on_jitter(dist):
    # frames 100 us apart, jitter 2 ms: order is not kept, each draw stands
    got = delays(f"[{{delay: {{time: 10ms, jitter: 2ms, distribution: {dist}, reorder_on_jitter: true}}}}]",
                 DIST_N, 100_000)
    d, p = ks_test(got, delay_cdf(dist, 10 * MS, 2 * MS))
    assert p > 0.01, f"{dist}: KS D={d:.4f} p={p:.3g}"
    # mean and deviation: the tables stop at u = 1 - 1/2048, which cuts the
    # heavy pareto tail: the deviation achieved is 0.89 (pareto) and 0.93
    # (paretonormal) of `jitter` (integrated over the interpolated tables)
    if dist != "uniform":
        assert statistics.fmean(got) == pytest.approx(10 * MS, abs=0.05 * MS)
        table_sd = {"normal": 0.999, "pareto": 0.890, "paretonormal": 0.927}[dist]
        assert statistics.pstdev(got) == pytest.approx(table_sd * 2 * MS, rel=0.04)
    # and it is not a test that passes anything: another distribution is refused
    other = "normal" if dist != "normal" else "uniform"
    assert ks_test(got, delay_cdf(other, 10 * MS, 2 * MS))[1] < 1e-6


def test_delay_without_jitter_is_exact():
    assert set(delays("[{delay: {time: 10ms}}]", 1000, 1000)) == {10 * MS}


def test_negative_draws_are_clamped_at_zero():
    got = delays("[{delay: {time: 1ms, jitter: 2ms, distribution: normal, reorder_on_jitter: true}}]",
                 5000, 1_000_000)
    assert min(got) == 0
    assert sum(1 for g in got if g == 0) / len(got) == pytest.approx(NORMAL.cdf(-0.5), abs=0.02)


def departures(actions: str, n: int, spacing_ns: int, seed: int = 1) -> list[tuple[int, int]]:
    eng = engine(actions, seed)
    return [(t, t + v.delay_ns) for t, v in run_frames(eng, range(0, n * spacing_ns, spacing_ns))]


def test_without_reorder_on_jitter_departures_never_decrease_and_the_cost_is_measured():
    """The default keeps order. What it costs, 10ms +- 2ms normal:

    frames farther apart than the jitter's spread (20 ms here) are untouched
    (the configured distribution exactly); 1 ms apart, a frame waits behind an
    earlier slow draw: the lower tail is cut, the mean rises, the deviation
    falls. The figures are asserted so the README's statement stays true.
    """
    cdf = delay_cdf("normal", 10 * MS, 2 * MS)
    sparse = departures("[{delay: {time: 10ms, jitter: 2ms, distribution: normal}}]", DIST_N, 20 * MS)
    assert all(b[1] >= a[1] for a, b in zip(sparse, sparse[1:]))
    assert ks_test([d - t for t, d in sparse], cdf)[1] > 0.01

    for spacing_ms, mean_lo, mean_hi in ((1, 11.0, 12.5), (0.1, 13.0, 15.5)):
        dense = departures("[{delay: {time: 10ms, jitter: 2ms, distribution: normal}}]",
                           DIST_N, int(spacing_ms * MS))
        assert all(b[1] >= a[1] for a, b in zip(dense, dense[1:]))
        achieved = [d - t for t, d in dense]
        mean, sd = statistics.fmean(achieved) / MS, statistics.pstdev(achieved) / MS
        d, p = ks_test(achieved, cdf)
        assert p < 1e-6 and mean_lo < mean < mean_hi and sd < 2.0, (spacing_ms, mean, sd, d)
        # never earlier than its own draw: the order only ever adds delay
        reorder = departures("[{delay: {time: 10ms, jitter: 2ms, distribution: normal, reorder_on_jitter: true}}]",
                             DIST_N, int(spacing_ms * MS))
        assert all(a[1] >= b[1] for a, b in zip(dense, reorder))


def test_delay_correlation_lag1():
    """netem's correlated draw u' = (1-c) r + c u: lag-1 autocorrelation c, and a narrower spread.

    The spread of u shrinks by sqrt((1-c)/(1+c)) (netem does the same; its
    correlation is known to distort the distribution): with c = 0.5 the
    achieved deviation is ~0.58 of the configured one.
    """
    for c in (0.0, 0.25, 0.5, 0.9):
        got = delays(f"[{{delay: {{time: 10ms, jitter: 2ms, distribution: uniform, correlation: {c}, "
                     f"reorder_on_jitter: true}}}}]", DIST_N, 100_000)
        r1 = autocorr1(got)
        assert r1 == pytest.approx(c, abs=0.03), (c, r1)
        sd_uniform = 2 * MS / math.sqrt(3)
        assert statistics.pstdev(got) / sd_uniform == pytest.approx(math.sqrt((1 - c) / (1 + c)), rel=0.05)
    got = delays("[{delay: {time: 10ms, jitter: 2ms, distribution: normal, correlation: 50%, "
                 "reorder_on_jitter: true}}]", DIST_N, 100_000)
    assert 0.4 < autocorr1(got) < 0.6


# ---- loss ---------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.01, 0.05, 0.10, 0.30])
def test_random_loss_rate(p):
    flags, eng = lost_flags(f"[{{loss: {{probability: {p}}}}}]")
    lost = sum(flags)
    assert eng.rule_counters(0)["lost"] == lost
    sigma = math.sqrt(LOSS_N * p * (1 - p))
    assert abs(lost - LOSS_N * p) < 3 * sigma
    if p >= 0.05:  # 2 % relative is more than 3 sigma from 5 % up, at 100k frames
        assert lost / LOSS_N == pytest.approx(p, rel=0.02)
    # independent: no memory between frames
    assert abs(autocorr1([float(f) for f in flags])) < 0.01


@pytest.mark.parametrize("p,c", [(0.10, 0.25), (0.02, 0.5), (0.3, 0.8)])
def test_correlated_loss_keeps_the_rate_and_has_the_correlation(p, c):
    """Correlated loss keeps the configured rate, and its lag-1 autocorrelation is the correlation.

    (netem's formula, u' = (1-c) r + c u, loses 1.8 % for 10 % with 25 %: the
    engine uses a two-state chain instead; see PROGRAM.md.)
    """
    flags, _ = lost_flags(f"[{{loss: {{probability: {p}, correlation: {c}}}}}]", n=200_000)
    rate = sum(flags) / len(flags)
    # bursts widen the count's spread by sqrt((1+c)/(1-c)) over a binomial's
    sigma = math.sqrt(p * (1 - p) / len(flags) * (1 + c) / (1 - c))
    assert abs(rate - p) < 4 * sigma, (rate, p)
    assert autocorr1([float(f) for f in flags]) == pytest.approx(c, abs=0.02)


@pytest.mark.parametrize("p,r,h,k", [(0.01, 0.30, 0.0, 1.0), (0.05, 0.5, 0.2, 0.99), (0.01, 0.1, 0.5, 1.0)])
def test_gilbert_elliott_stationary_rate_and_geometric_bursts(p, r, h, k):
    flags, eng = lost_flags(f"[{{loss: {{model: gilbert-elliott, p: {p}, r: {r}, h: {h}, k: {k}}}}}]",
                            n=200_000)
    n = len(flags)
    pi_bad = p / (p + r)
    expected = (1 - pi_bad) * (1 - k) + pi_bad * (1 - h)
    rate = sum(flags) / n
    # bursts make the count's variance larger than a binomial's: 5 % relative at 200k frames
    assert rate == pytest.approx(expected, rel=0.05), (rate, expected)
    assert eng.rule_counters(0)["lost"] == sum(flags)
    if h == 0.0 and k == 1.0:
        # every frame in the bad state is lost: a burst is a bad-state sojourn, geometric(r)
        bursts = runs(flags)
        mean = statistics.fmean(bursts)
        assert mean == pytest.approx(1 / r, rel=0.05)
        for length in (1, 2, 3):
            share = sum(1 for b in bursts if b == length) / len(bursts)
            assert share == pytest.approx(r * (1 - r) ** (length - 1), abs=0.02)
        gaps = runs([not f for f in flags])  # good-state sojourns, geometric(p)
        assert statistics.fmean(gaps) == pytest.approx(1 / p, rel=0.08)


def test_gilbert_elliott_in_apply_matches_the_engine(tmp_path):
    """Same seed, same losses: `reshaper apply` and the engine agree frame for frame."""
    from reshaper.bridge.apply import apply_capture

    cfg_text = ("version: 1\nports: {a: a0, b: b0}\nrules:\n  - name: ge\n"
                "    actions: [{loss: {model: gilbert-elliott, p: 5%, r: 40%}}]\n")
    cfg_path = tmp_path / "ge.yaml"
    cfg_path.write_text(cfg_text)
    inp, out = tmp_path / "in.pcap", tmp_path / "out.pcap"
    n = 20_000
    write_capture(inp, [(i * 1000, FRAME) for i in range(n)], base_ns=10**9)   # 1 us apart from 1 s
    res = apply_capture(load_config(str(cfg_path)), str(inp), str(out), seed=7)
    flags, _ = lost_flags("[{loss: {model: gilbert-elliott, p: 5%, r: 40%}}]", n=n, seed=7)
    assert res.dropped["loss"] == sum(flags) and res.frames_out == n - sum(flags)


# ---- duplicate, corrupt ---------------------------------------------------------------

def test_duplicate_rate_and_copies():
    eng = engine("[{duplicate: {copies: 2, probability: 10%}}]")
    copies = [v.copies for _, v in run_frames(eng, range(0, LOSS_N * 1000, 1000))]
    assert set(copies) == {0, 2}
    share = copies.count(2) / LOSS_N
    assert share == pytest.approx(0.10, rel=0.03)
    assert eng.rule_counters(0)["duplicated"] == sum(copies)


def test_corrupt_rate_flips_one_bit_past_the_ethernet_header():
    eng = engine("[{corrupt: {probability: 5%}}]")
    n, hit, positions = 50_000, 0, set()
    for i in range(n):
        v, out = eng.run(FRAME, "a", i * 1000)
        diff = [j for j in range(len(FRAME)) if out[j] != FRAME[j]]
        if diff:
            hit += 1
            assert len(diff) == 1 and diff[0] >= 14
            assert bin(out[diff[0]] ^ FRAME[diff[0]]).count("1") == 1
            positions.add(diff[0])
    assert hit == eng.rule_counters(0)["corrupted"]
    assert hit / n == pytest.approx(0.05, rel=0.05)
    assert positions == set(range(14, len(FRAME)))  # every byte past L2 can be hit


# ---- reorder (netem's gap) -----------------------------------------------------------------

def test_reorder_gap_semantics_as_netem():
    """`reorder: {probability: 100%, gap: 5}` with a 10 ms delay: frames 5, 10, 15... go at once."""
    eng = engine("[{reorder: {probability: 100%, gap: 5}}, {delay: {time: 10ms}}]")
    ds = [v.delay_ns for _, v in run_frames(eng, range(0, 100 * MS, MS))]
    immediate = [i for i, d in enumerate(ds) if d == 0]
    assert immediate == list(range(4, 100, 5))
    assert all(d == 10 * MS for i, d in enumerate(ds) if i not in immediate)
    assert eng.rule_counters(0)["reordered"] == 20

    # probability p after the gap: the counter restarts at each reordered frame,
    # so the share is 1 / (gap - 1 + 1/p): 25 %, gap 5 -> 1/8
    eng = engine("[{reorder: {probability: 25%, gap: 5}}, {delay: {time: 10ms}}]")
    ds = [v.delay_ns for _, v in run_frames(eng, range(0, LOSS_N * 1000, 1000))]
    zero = [i for i, d in enumerate(ds) if d == 0]
    assert len(zero) / LOSS_N == pytest.approx(1 / 8, rel=0.03)
    assert min(b - a for a, b in zip(zero, zero[1:])) == 5
    # gap 1 (the default): each frame goes at once with probability p
    eng = engine("[{reorder: {probability: 25%}}, {delay: {time: 10ms}}]")
    ds = [v.delay_ns for _, v in run_frames(eng, range(0, LOSS_N * 1000, 1000))]
    assert ds.count(0) / LOSS_N == pytest.approx(0.25, rel=0.02)


def test_reordered_frames_overtake_while_the_others_keep_their_order():
    eng = engine("[{reorder: {probability: 100%, gap: 3}}, {delay: {time: 10ms, jitter: 3ms, distribution: normal}}]")
    res = run_frames(eng, range(0, 3000 * 100_000, 100_000))
    delayed = [t + v.delay_ns for t, v in res if v.delay_ns]
    assert all(b >= a for a, b in zip(delayed, delayed[1:]))
    assert sum(1 for _, v in res if v.delay_ns == 0) == 1000


# ---- rate --------------------------------------------------------------------------------

@pytest.mark.parametrize("bitrate,overhead,size", [("10mbit", 0, 1000), ("1mbit", 24, 100), ("100mbit", 0, 1500)])
def test_rate_achieved(bitrate, overhead, size):
    rate = {"10mbit": 10e6, "1mbit": 1e6, "100mbit": 100e6}[bitrate]
    frame = udp_frame(size - 42)
    eng = engine(f"[{{rate: {{bitrate: {bitrate}, overhead: {overhead}, limit: 10000}}}}]")
    n = 5000
    wire = (size + overhead) * 8
    spacing = int(wire / rate * 1e9 / 2)  # offered at twice the rate
    res = run_frames(eng, range(0, n * spacing, spacing), frame)
    deps = [t + v.delay_ns for t, v in res if v.forward]
    achieved = (len(deps) - 1) * wire / ((deps[-1] - deps[0]) / 1e9)
    assert achieved == pytest.approx(rate, rel=0.02)
    assert all(b - a == pytest.approx(wire / rate * 1e9, abs=1) for a, b in zip(deps, deps[1:]))


def test_rate_limit_tail_drops_are_counted():
    """10 mbit, 1000-byte frames (800 us each) offered every 400 us, limit 50."""
    frame = udp_frame(1000 - 42)
    eng = engine("[{rate: {bitrate: 10mbit, limit: 50}}]")
    n = 10_000
    res = run_frames(eng, range(0, n * 400_000, 400_000), frame)
    fwd = [(t, t + v.delay_ns) for t, v in res if v.forward]
    dropped = [v for _, v in res if not v.forward]
    assert {v.reason for v in dropped} == {"queue"}
    c = eng.rule_counters(0)
    assert c["queue_drops"] == len(dropped)
    # the link sends one frame per 800 us: about half get through, the rest are tail drops
    assert len(fwd) == pytest.approx(n / 2, abs=60)
    assert c["queue_depth"] <= 50
    # a frame admitted never waits longer than the queue ahead of it: limit x 800 us
    assert max(d - t for t, d in fwd) <= 50 * 800_000 + 800_000
    achieved = (len(fwd) - 1) * 8000 / ((fwd[-1][1] - fwd[0][1]) / 1e9)
    assert achieved == pytest.approx(10e6, rel=0.02)


def test_rate_after_delay_serialises_delayed_frames():
    """delay then rate: start = max(departure so far, link busy-until)."""
    frame = udp_frame(1000 - 42)
    eng = engine("[{delay: {time: 5ms}}, {rate: {bitrate: 10mbit, limit: 100}}]")
    res = run_frames(eng, [0, 0, 0, 10 * MS], frame)
    assert [v.delay_ns for _, v in res] == [5.8 * MS, 6.6 * MS, 7.4 * MS, 5.8 * MS]
