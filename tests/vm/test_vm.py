"""The VM runner itself: an out-of-tree module builds against the cached headers
and loads; 8021q, netem, bridge + br_netfilter (+ iptables NFQUEUE) work inside.
One boot for the whole file (~10-20 s under TCG)."""
import subprocess
import textwrap

import pytest

from reshaper.lab.vm import VM, assert_kernel_clean, kdir, kernel_problems, prepare

pytestmark = pytest.mark.vm

HELLO_C = r"""
#include <linux/module.h>
#include <linux/init.h>
static int __init hello_init(void) { pr_info("reshaper-hello: loaded\n"); return 0; }
static void __exit hello_exit(void) { pr_info("reshaper-hello: unloaded\n"); }
module_init(hello_init);
module_exit(hello_exit);
MODULE_LICENSE("GPL");
"""


@pytest.fixture(scope="module")
def hello_ko(tmp_path_factory):
    prepare(install=False)
    src = tmp_path_factory.mktemp("hello")
    (src / "hello.c").write_text(HELLO_C)
    (src / "Kbuild").write_text("obj-m := hello.o\n")
    r = subprocess.run(["make", "-C", str(kdir()), f"M={src}", "modules"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return src / "hello.ko"


@pytest.fixture(scope="module")
def vm(hello_ko):
    with VM(shares={str(hello_ko.parent): "/hello"}) as v:
        yield v
    assert_kernel_clean(v.kernel_log)


def ok(vm, script, timeout=120):
    status, out = vm.run(textwrap.dedent(script), timeout)
    assert status == 0, out
    return out


def test_hello_module_loads(vm):
    ok(vm, "insmod /hello/hello.ko && rmmod hello")
    log = vm.dmesg()
    assert "reshaper-hello: loaded" in log and "reshaper-hello: unloaded" in log, log


def test_vlan_on_veth(vm):
    out = ok(vm, """
        set -e
        ip link add va type veth peer name vb
        ip link add link va name va.100 type vlan id 100
        ip link set va up; ip link set vb up; ip link set va.100 up
        ip -d link show va.100
    """)
    assert "vlan protocol 802.1Q id 100" in out


def test_netem(vm):
    out = ok(vm, """
        set -e
        ip link add nd type dummy && ip link set nd up
        tc qdisc add dev nd root netem delay 10ms
        tc qdisc show dev nd
    """)
    assert "netem" in out and "delay 10ms" in out


def test_bridge_netfilter(vm):
    out = ok(vm, """
        set -e
        modprobe br_netfilter
        ip link add br0 type bridge
        ip link add p1 type veth peer name p1x
        ip link set p1 master br0
        sysctl -n net.bridge.bridge-nf-call-iptables
    """)
    assert out.strip() == "1"


def test_iptables_nfqueue(vm):
    out = ok(vm, """
        set -e
        iptables -A FORWARD -m physdev --physdev-in p1 -j NFQUEUE --queue-num 1 --queue-bypass
        iptables -S FORWARD
    """)
    assert "NFQUEUE" in out


def test_python_and_status(vm):
    assert vm.run("python3 -c 'import sys; sys.exit(3)'") == (3, "")
    assert vm.run("echo out; echo err >&2").output == "out\nerr\n"


def test_kernel_problems_helper():
    log = "[ 1.0] ok\n[ 2.0] WARNING: CPU: 0 PID: 1 at x.c:1\n[ 3.0] BUG: kernel NULL pointer\n"
    assert len(kernel_problems(log)) == 2
    assert kernel_problems("[ 1.0] This is not a bug.\n") == []
