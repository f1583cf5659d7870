"""The Debian-kernel VM for the kernel-module tests, the netem comparisons and the benchmarks
(runner.py); the armhf kernel and rootfs (armhf.py), the emulated board (board.py), the
kernel module's build and guest set-up (kmod.py, agent.py). `python -m reshaper.lab.vm` prepares it.

    from reshaper.lab.vm import VM, vm_available, assert_kernel_clean
    with VM(shares={"/work/main": "/work/main"}) as vm:
        status, output = vm.run("python3 -c 'print(1)'", timeout=120)
    assert_kernel_clean(vm.kernel_log)
"""
from reshaper.lab.vm.runner import (CACHE, MODULES, VM, RunResult, VMError, VMResult, assert_kernel_clean,
                     kdir, kernel_problems, kernel_version, prepare, run_in_vm, vm_available)

__all__ = ["CACHE", "MODULES", "VM", "RunResult", "VMError", "VMResult", "assert_kernel_clean",
           "kdir", "kernel_problems", "kernel_version", "prepare", "run_in_vm", "vm_available"]
