"""The engine's 64-bit counters count on past 2**32 (tests/helpers/counter_carry.py; on armhf the
same check runs in tests/armhf/test_wheel_armhf.py)."""
from tests.helpers.counter_carry import EXPECTED, counts_after_carry


def test_counters_carry_past_32_bits():
    assert counts_after_carry() == EXPECTED
