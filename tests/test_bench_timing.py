"""bench/timing.py's pure parts: the rules it measures, as ring-mode configuration
and as the netem options of the side-by-side comparison (no namespaces, no timing)."""
import pytest

from reshaper.bench.timing import netem_args, ring_config
from reshaper.rules.config import load_config


@pytest.mark.parametrize("actions, expected", [
    ("[{delay: {time: 10ms}}]", ["delay", "10ms"]),
    ("[{delay: {time: 250us}}]", ["delay", "250us"]),
    ("[{delay: {time: 10ms, jitter: 2ms, distribution: normal, reorder_on_jitter: true}}]",
     ["delay", "10ms", "2ms", "distribution", "normal"]),
    ("[{loss: {probability: 10%}}]", ["loss", "random", "10%"]),
    # Gilbert-Elliott: reshaper's h and k are survival chances, netem takes 1-h and 1-k
    ("[{loss: {model: gilbert-elliott, p: 1%, r: 10%}}]", ["loss", "gemodel", "1%", "10%", "100%", "0%"]),
    ("[{loss: {model: gilbert-elliott, p: 5%, r: 50%, h: 20%, k: 99%}}]",
     ["loss", "gemodel", "5%", "50%", "80%", "1%"]),
    ("[{rate: {bitrate: 10mbit, limit: 100}}]", ["rate", "10000000bit", "limit", "100"]),
    ("[{rate: {bitrate: 50mbit, limit: 100}}]", ["rate", "50000000bit", "limit", "100"]),
    ("[{rate: {bitrate: 512kbit, overhead: 24}}]", ["rate", "512000bit", "24", "limit", "1000"]),
    ("[{loss: {probability: 1%}}, {delay: {time: 20ms}}]", ["loss", "random", "1%", "delay", "20ms"]),
])
def test_netem_args(actions, expected):
    assert netem_args(actions) == expected


@pytest.mark.parametrize("actions, why", [
    ("[{delay: {time: 10ms, jitter: 2ms, distribution: normal}}]", "reorders on jitter"),
    ("[{delay: {time: 10ms, jitter: 2ms, correlation: 25%, reorder_on_jitter: true}}]", "correlation"),
    ("[{loss: {probability: 10%, correlation: 25%}}]", "correlation"),
    ("[dec_ttl]", "dec_ttl"),
])
def test_netem_args_refuses_what_netem_does_differently(actions, why):
    with pytest.raises(ValueError, match=why):
        netem_args(actions)


def test_ring_config_has_one_rule_per_port():
    text = ring_config([("fixed", 7000, "[{delay: {time: 10ms}}]"), ("l", 7100, "[{loss: {probability: 10%}}]")])
    cfg = load_config("bench.yaml", text)
    ports = [(r.name, r.match("dst_port").value) for r in cfg.rules]
    assert ports == [("fixed", [(7000, 7000)]), ("l", [(7100, 7100)])]
    assert [a.kind for r in cfg.rules for a in r.actions] == ["delay", "loss"]
