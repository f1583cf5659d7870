"""Golden tests: every case of tests/golden/ through `reshaper apply`, the exact frames
out and the counts (the case format: tests/helpers/golden.py)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.captures import read_outputs
from tests.helpers.golden import CASES, GOLDEN, Case, count_problems, mismatches, run_case


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_golden(path: Path, tmp_path: Path):
    case = Case(path)
    result, got = run_case(case, tmp_path)
    problems = mismatches(case, got) + count_problems(case, result)
    if problems:
        pytest.fail(f"{path.name}:\n" + "\n".join(problems) + "\n\napply report:\n" + result.report(),
                    pytrace=False)


CLI_CASE = "set-ports"


def test_cli_apply_matches_golden(tmp_path: Path):
    """The real command line on one case: same bytes out, counts printed."""
    case = Case(GOLDEN / f"{CLI_CASE}.yaml")
    config, in_pcap, out_pcap = tmp_path / "rules.yaml", tmp_path / "in.pcap", tmp_path / "out.pcap"
    config.write_text(case.config)
    case.write_inputs(in_pcap)
    proc = subprocess.run([sys.executable, "-m", "reshaper", "apply", str(config), str(in_pcap), str(out_pcap),
                           "--from", case.from_port, "--seed", str(case.seed)],
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent)
    assert proc.returncode == 0, proc.stderr
    assert mismatches(case, read_outputs(out_pcap)) == []
    lines = proc.stdout.splitlines()
    assert lines[0] == "in 4, out 4, dropped 0, unmatched 1"
    assert lines[1].split() == ["rule", "matched", "dropped", "lost", "queue_drops", "duplicated",
                                "corrupted", "reordered", "delayed", "skipped"]
    assert lines[2].split() == ["to-proxy", "3", "0", "0", "0", "0", "0", "0", "0", "2"]
