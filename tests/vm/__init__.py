"""VM runner for kernel-module and netem tests: see runner.py.

    from tests.vm import VM, vm_available, assert_kernel_clean
    with VM(shares={"/work/main": "/work/main"}) as vm:
        status, output = vm.run("python3 -c 'print(1)'", timeout=120)
    assert_kernel_clean(vm.kernel_log)
"""
from .runner import (CACHE, MODULES, VM, RunResult, VMError, VMResult, assert_kernel_clean,
                     kdir, kernel_problems, kernel_version, prepare, run_in_vm, vm_available)

__all__ = ["CACHE", "MODULES", "VM", "RunResult", "VMError", "VMResult", "assert_kernel_clean",
           "kdir", "kernel_problems", "kernel_version", "prepare", "run_in_vm", "vm_available"]
