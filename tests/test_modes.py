"""The registry of modes (bridge/modes/): each mode under its own name, in the order the
command line lists them, and light enough that `check` asks them all without loading
what only set-up needs."""
import subprocess
import sys

from reshaper.bridge import modes
from reshaper.examples import example

SET_UP_ONLY = ("pyroute2", "netfilterqueue", "reshaper.bridge.kernel_genl", "reshaper.bridge.linux_bridge")


def test_each_mode_is_registered_under_its_own_name():
    assert list(modes.MODES) == ["ring", "xdp", "nfqueue", "kernel"]
    assert {name: mode.mode for name, mode in modes.MODES.items()} == {name: name for name in modes.MODES}
    assert modes.get(modes.DEFAULT) is modes.MODES["ring"]


def test_check_asks_every_mode_without_loading_what_set_up_needs():
    code = ("import sys; from reshaper.bridge.cli import main; "
            f"status = main(['check', {str(example('demo.yaml'))!r}]); "
            f"print(status, sorted(m for m in {SET_UP_ONLY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "  modes: ring yes, xdp yes, nfqueue yes, kernel yes\n" in out
    assert out.splitlines()[-1] == "0 []"


def test_state_files_of_earlier_versions_still_say_which_bridge_to_undo():
    """A run killed before an upgrade left the bridge's part of its state under the mode's own
    keys; the next start reads them as linux_bridge's (bridge/linux_bridge.py, saved_state)."""
    from reshaper.bridge.linux_bridge import saved_state

    current = {"name": "rsbr1", "made": True, "enslaved": [], "brought_up": ["a1"]}
    assert saved_state({"chain": True, "linux_bridge": current}) == current
    assert saved_state({"chain": True, "bridge_created": "rsbr42"}) == {"name": "rsbr42", "made": True}
    reused = {"name": "br0", "nf_call_iptables": 0, "nf_call_ip6tables": 0, "ageing_time": 30000,
              "group_fwd_mask": 0}
    assert saved_state({"bridge_reused": reused}) == {
        "name": "br0", "made": False, "previous": {"br_nf_call_iptables": 0, "br_nf_call_ip6tables": 0,
                                                   "br_ageing_time": 30000, "br_group_fwd_mask": 0}}
    kernel = {"bridge": "rsbr0", "made_vlans": ["eth0.100"], "made_bridge": True, "enslaved": ["eth0.100"],
              "brought_up": ["eth0"]}
    assert saved_state(kernel) == {"name": "rsbr0", "made": True, "enslaved": ["eth0.100"],
                                   "brought_up": ["eth0"]}
    assert saved_state({"gro": {"a1": 1}}) == {}
