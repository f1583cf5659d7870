"""`reshaper bench`'s report gives a mode's ratios to its own yardstick (settings.YARDSTICK_OF:
nfqueue to the bare NFQUEUE accept loop) from the same run, size and placement (bench/report.py);
the run itself: tests/test_bench.py."""
from reshaper.bench.report import yardstick_ratios, yardstick_section

RESULTS = {"placements": ["single-core", "split"]}


def row(mode: str, loss_free_pps: float, sat_delivered_pps: float, cpu_ns_per_frame: float,
        placement: str = "single-core") -> dict:
    """The fields of a summary row (report.summarise) the ratios read."""
    return {"mode": mode, "size": 64, "placement": placement, "loss_free_pps": loss_free_pps,
            "sat_delivered_pps": sat_delivered_pps, "cpu_ns_per_frame": cpu_ns_per_frame}


def test_nfqueue_against_the_bare_accept_loop_of_the_same_placement():
    rows = [row("nfqueue-accept", 100_000, 50_000, 10_000), row("nfqueue", 80_000, 40_000, 12_500),
            row("nfqueue-accept", 200_000, 100_000, 5_000, placement="split"),
            row("nfqueue", 100_000, 100_000, 5_000, placement="split"), row("ring", 300_000, 1_000, 2_000)]
    yardstick_ratios(rows)
    assert rows[1]["vs_yardstick"] == {"yardstick": "nfqueue-accept", "loss_free": 0.8, "saturation": 0.8,
                                       "cpu_per_frame": 1.25}
    assert rows[3]["vs_yardstick"] == {"yardstick": "nfqueue-accept", "loss_free": 0.5, "saturation": 1.0,
                                       "cpu_per_frame": 1.0}
    assert "vs_yardstick" not in rows[0] and "vs_yardstick" not in rows[4]   # no yardstick of their own
    section = yardstick_section(RESULTS, rows)
    assert section[1] == "## Against its own yardstick (same run, same size, same placement)"
    assert section[-2:] == ["| 64 | nfqueue | nfqueue-accept | single-core | 0.80 | 0.80 | 1.25 |",
                            "| 64 | nfqueue | nfqueue-accept | split | 0.50 | 1.00 | 1.00 |"]


def test_a_yardstick_the_run_left_out_is_named():
    rows = [row("nfqueue", 80_000, 40_000, 12_500), row("nfqueue-accept", 100_000, 50_000, 10_000, placement="split")]
    yardstick_ratios(rows)
    assert rows[0]["vs_yardstick"] is None
    assert yardstick_section(RESULTS, rows)[-1] == ("| 64 | nfqueue | nfqueue-accept | single-core | not in this run "
                                                   "(add nfqueue-accept to --modes) | | |")


def test_no_section_without_a_mode_that_has_a_yardstick():
    rows = [row("ring", 300_000, 1_000, 2_000)]
    yardstick_ratios(rows)
    assert yardstick_section(RESULTS, rows) == []
