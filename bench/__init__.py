"""reshaper.bench: the benchmark lab, installed as an extra (`pip install reshaper[bench]`),
never on the board.

`reshaper bench` (cli.py) runs every mode side by side on one rule file:

    settings.py     modes, CPU placement, loss threshold, load points
    frames.py       the five-frame mix; generator.py builds generator.c, the paced AF_PACKET sender
    topology.py     the namespaces' settings and the placement (placed(): single-core or split)
                    with its check; devices.py the devices under test (reshaper's modes,
                    the Linux bridge, br_netfilter, a bare NFQUEUE loop, naive_forwarder.py)
    counters.py     what a trial reads before and after; probe.py the latency probe
    trial.py        one trial, and a mode's measurement: saturation, loss-free search, latency
    run.py          the whole run on this machine; vm.py the same inside the Debian-kernel VM
    report.py       summary and report.md; plots.py the PNGs (the one module that imports matplotlib)

The other benchmarks, each `python -m reshaper.bench.NAME`: engine (engine cost, `apply`
throughput), engine_armhf (the engine on armhf, counted), kernel (kernel bridge, module and
ring mode in the VM), ring (ring mode against the Linux bridge, trafgen.py's generator),
timing (achieved delay, loss and rate, against netem in the VM).
Shared with the tests: reshaper.lab (the VM, frame taps, stamped datagrams, the timing model).
"""
