"""A running appliance outlives whatever a reload, a snapshot or a second instance
brings: the old rules keep forwarding, the error is logged and `stats` shows it."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from reshaper.bridge.control import ControlInUse, ControlServer, read_stats
from reshaper.bridge.netns import HOST_A, HOST_B
from tests.helpers.frames import MAC_A, MAC_B, PLAIN
from tests.helpers.live import LiveAppliance

FIRST = PLAIN + """rules:
  - name: first
    match: {ip_proto: udp, dst_port: 7}
    actions: [{set: {dst_port: 9000}}]
"""
SIXTY_FIVE = ", ".join(["{set: {dscp: 1}}"] * 65)
# each is refused at reload; the comment says what escaped before (issue 14, item 1)
HOSTILE = {
    "timestamp": PLAIN + "rules:\n  - {name: t, actions: [{set: {ttl: 2024-13-01}}]}\n",     # ValueError
    "rate overflow": PLAIN + "rules:\n  - {name: r, actions: [{rate: {bitrate: 99999999999gbit}}]}\n",
    "verifier refusal": PLAIN + f"rules:\n  - {{name: many, actions: [{SIXTY_FIVE}]}}\n",
    "unknown tag": PLAIN + "rules: !!python/object:os.system [echo]\n",
    "deep nesting": PLAIN + "rules: " + "[" * 5000 + "]" * 5000 + "\n",              # RecursionError
    "huge integer": PLAIN + "rules:\n  - {name: i, actions: [{set: {ttl: " + "9" * 5000 + "}}]}\n",
    "invalid utf-8": PLAIN.encode() + b"rules:\n  - {name: \xff\xfe, actions: []}\n",
    "control characters": PLAIN + "rules:\n  - {name: \"a\x07b\", actions: []}\n",
    "hook exits at import": PLAIN + "hooks_path: [hooks]\nrules:\n  - name: h\n    actions:\n"
                                    "      - python: {call: 'exits:fn'}\n",
}


def ours(frame: bytes) -> bool:
    return frame[6:12] == bytes.fromhex(MAC_A.replace(":", ""))


def udp_to_7() -> bytes:
    return bytes(Ether(src=MAC_A, dst=MAC_B) / IP(src=HOST_A["v4"], dst=HOST_B["v4"]) / UDP(sport=1, dport=7))


def wait_refused(appliance: LiveAppliance, count: int, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = appliance.stats()
        if stats["reloads_refused"] >= count:
            return stats
        assert appliance.proc.poll() is None, appliance.log()
        time.sleep(0.05)
    raise AssertionError(f"reload {count} not refused: {appliance.log()}")


def test_every_hostile_reload_keeps_the_running_rules(tmp_path, topo, taps):
    tap_a, tap_b = taps
    config = tmp_path / "rules.yaml"
    config.write_text(FIRST)
    (tmp_path / "hooks").mkdir()
    (tmp_path / "hooks/exits.py").write_text("import sys\nsys.exit(3)\n")
    with LiveAppliance(topo.br, config, tmp_path) as appliance:
        for n, (name, text) in enumerate(HOSTILE.items(), 1):
            config.write_bytes(text if isinstance(text, bytes) else text.encode())
            appliance.send_signal(signal.SIGHUP)
            stats = wait_refused(appliance, n)
            assert stats["reloads"] == 0 and [r["name"] for r in stats["rules"]] == ["first"], name
            assert stats["last_reload_error"], name
            assert "Traceback" not in appliance.log(), (name, appliance.log())
        config.unlink()
        config.mkdir()     # a directory where the file was
        appliance.send_signal(signal.SIGHUP)
        stats = wait_refused(appliance, len(HOSTILE) + 1)
        assert stats["last_reload_error"].startswith(f"{config}:1:1: error: cannot read the file")
        tap_a.send(udp_to_7())
        [frame] = tap_b.receive(1, match=ours)
        assert Ether(frame)[UDP].dport == 9000
        assert appliance.proc.poll() is None
    assert appliance.proc.returncode == 0, appliance.log()
    log = appliance.log()
    assert log.count("the previous rules keep running") == len(HOSTILE) + 1
    assert f"{config}:7:9: error: rule 'h': loading 'exits' failed: SystemExit: 3" in log


def test_a_failing_snapshot_does_not_end_the_control_thread(tmp_path):
    calls = []

    def snapshot():
        calls.append(1)
        if len(calls) == 1:
            raise IndexError("rule 3 of 2")
        return {"ok": len(calls)}

    server = ControlServer(str(tmp_path / "c.sock"), snapshot)
    server.start()
    try:
        assert read_stats(server.path) == {"error": "snapshot failed: IndexError: rule 3 of 2"}
        assert read_stats(server.path) == {"ok": 2}
        with pytest.raises(ControlInUse, match="another reshaper answers on .*c.sock"):
            ControlServer(server.path, snapshot)
        # the refused one only asked (that was answer 3) and did not take the socket
        assert read_stats(server.path) == {"ok": 4}
    finally:
        server.close()


def test_stats_says_when_a_snapshot_failed(tmp_path):
    server = ControlServer(str(tmp_path / "c.sock"), lambda: 1 / 0)
    server.start()
    try:
        r = subprocess.run([sys.executable, "-m", "reshaper", "stats", "--control", server.path],
                           capture_output=True, text=True)
    finally:
        server.close()
    assert r.returncode == 1
    assert r.stderr == (f"reshaper stats: the instance on {server.path} answered: "
                        "snapshot failed: ZeroDivisionError: division by zero\n")


def test_two_instances_in_one_namespace(tmp_path, topo):
    """On other ports each has its own default control socket and `stats` asks which;
    on the same ports, or a second kernel-mode instance, the second is refused."""
    with topo.br.ipr() as ipr:
        ipr.link("add", ifname="c1", kind="veth", peer={"ifname": "d1"})
        ipr.link("add", ifname="e1", kind="veth", peer={"ifname": "f1"})
        for name in ("c1", "d1", "e1", "f1"):
            ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
    run_dir = tmp_path / "run"
    env = {**os.environ, "RESHAPER_RUN_DIR": str(run_dir)}

    def start(ports: str, *extra: str, name: str) -> subprocess.Popen:
        (tmp_path / name).write_text(f"version: 1\nports: {ports}\n")
        return topo.br.popen([sys.executable, "-m", "reshaper", "run", str(tmp_path / name), "--status-interval",
                              "0", *extra], env=env, stderr=subprocess.PIPE, text=True)

    def stats(*extra: str) -> subprocess.CompletedProcess:
        return topo.br.run([sys.executable, "-m", "reshaper", "stats", "--json", *extra], env=env,
                           capture_output=True, text=True)

    first = start("{a: a1, b: b1}", name="first.yaml")
    second = start("{a: c1, b: d1}", name="second.yaml")
    try:
        sockets = []
        deadline = time.monotonic() + 15
        while len(sockets) < 2 and time.monotonic() < deadline:
            sockets = sorted(str(p) for p in run_dir.glob("reshaper-*.sock"))
            time.sleep(0.05)
        assert [os.path.basename(p).split("-", 2)[2] for p in sockets] == ["a1-b1.sock", "c1-d1.sock"]
        for path in sockets:       # both answer: neither removed the other's socket
            read_stats(path, timeout=5)
        r = stats()
        assert r.returncode == 1
        assert r.stderr == (f"reshaper stats: 2 instances run in this network namespace; name one with "
                            f"--control: {', '.join(sockets)}\n")
        assert json.loads(stats("--control", sockets[1]).stdout)["ports"]["a"]["interface"] == "c1"

        third = start("{a: b1, b: c1}", name="third.yaml")
        assert third.wait(15) == 1
        assert f"runs on b1; state in {run_dir}/state-" in third.stderr.read()

        clash = start("{a: e1, b: f1}", "--control", sockets[0], name="clash.yaml")
        assert clash.wait(15) == 1
        assert f"another reshaper answers on {sockets[0]}: give this one its own --control" in clash.stderr.read()
        read_stats(sockets[0], timeout=5)      # the first still answers on its socket

        second.send_signal(signal.SIGTERM)
        assert second.wait(10) == 0
        assert [p.name for p in run_dir.glob("reshaper-*.sock")] == [os.path.basename(sockets[0])]
        r = stats()
        assert r.returncode == 0 and json.loads(r.stdout)["ports"]["b"]["interface"] == "b1"
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(10)


def test_a_second_kernel_mode_instance_is_refused(tmp_path, topo):
    """Kernel mode holds the namespace's one program: a state file of a live kernel-mode
    instance on other ports refuses the start before anything is changed."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    sleeper = topo.br.popen(["sleep", "60"])
    try:
        netns = os.stat(f"/proc/{sleeper.pid}/ns/net").st_ino
        (run_dir / f"state-{netns}-x1-y1.json").write_text(json.dumps(
            {"mode": "kernel", "pid": sleeper.pid, "interfaces": ["x1", "y1"], "namespace_wide": True}))
        (tmp_path / "k.yaml").write_text(PLAIN)
        r = topo.br.run([sys.executable, "-m", "reshaper", "run", str(tmp_path / "k.yaml"), "--mode", "kernel"],
                        env={**os.environ, "RESHAPER_RUN_DIR": str(run_dir)}, capture_output=True, text=True,
                        timeout=30)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert r.returncode == 1
    assert (f"another reshaper (pid {sleeper.pid}) runs in kernel mode in this network namespace, which has "
            f"one kernel data path; state in {run_dir}/state-{netns}-x1-y1.json") in r.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == [f"state-{netns}-x1-y1.json"]


@pytest.mark.parametrize("port", ["a1", "b1"])
def test_a_port_interface_that_goes_away_ends_the_run(tmp_path, topo, port):
    """Deleted under the running appliance (a USB NIC unplugged, its namespace torn down):
    it says so and exits non-zero, so that systemd starts it again (Restart=on-failure)."""
    config = tmp_path / "rules.yaml"
    config.write_text(FIRST)
    appliance = LiveAppliance(topo.br, config, tmp_path).start()
    try:
        with topo.br.ipr() as ipr:
            ipr.link("del", index=ipr.link_lookup(ifname=port)[0])
        assert appliance.proc.wait(5) == 1
    finally:
        appliance.stop()
    name = "a" if port == "a1" else "b"
    assert (f"reshaper: port {name}: interface {port} went away; exiting so that reshaper starts again on "
            f"the interface as it is now\n") in appliance.log()
    assert "Traceback" not in appliance.log()
    assert list((tmp_path / "run").glob("state-*.json")) == []   # what it changed was put back
