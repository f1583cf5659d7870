"""trafgen (Debian's netsniff-ng) as the generator of bench/ring.py: its configuration for a
frame mix, a preload that gives its sockets a send buffer, and the process on a0 in
namespace a, pinned to the generator's CPU. (reshaper bench uses bench/generator.c.)"""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from reshaper.bench.settings import GEN_CPU


def trafgen_config(frames: list[tuple[str, bytes]]) -> str:
    return "".join(f"/* {name} */\n{{ {', '.join(f'0x{b:02x}' for b in data)} }}\n" for name, data in frames)


# trafgen has no send-buffer option, and when its frames are freed on the other CPU (RPS) it
# aborts with "Flushing TX_RING failed: Resource temporarily unavailable" once the default
# send buffer is charged full; net.core.wmem_default cannot be set inside a namespace.
# This preload gives each AF_PACKET socket it opens a 4 MB buffer (SO_SNDBUFFORCE).
SNDBUF_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <sys/socket.h>
int socket(int domain, int type, int protocol)
{
	static int (*real)(int, int, int);
	int fd, size = 4 << 20;

	if (!real)
		real = (int (*)(int, int, int))dlsym(RTLD_NEXT, "socket");
	fd = real(domain, type, protocol);
	if (fd >= 0 && domain == AF_PACKET)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size));
	return fd;
}
"""


def build_shim(tmp: Path) -> Path:
    src, lib = tmp / "sndbuf_shim.c", tmp / "sndbuf_shim.so"
    src.write_text(SNDBUF_SHIM)
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(lib), str(src), "-ldl"], check=True)
    return lib


class Trafgen:
    """trafgen (netsniff-ng) on a0 in namespace a, pinned to the generator CPU."""

    def __init__(self, topo, cfg: Path, log: Path, shim: Path, rate_pps: float | None = None):
        self.env = {**os.environ, "LD_PRELOAD": str(shim)}
        self.argv = ["taskset", "-c", str(GEN_CPU), "trafgen", "--dev", "a0", "--conf", str(cfg),
                     "--cpus", "1", "--no-sock-mem", "--notouch-irq", "--no-cpu-stats"]
        if rate_pps:
            self.argv += ["--rate", f"{int(rate_pps)}pps"]
        self.log = log
        self.topo = topo
        self.proc = None

    def start(self) -> None:
        self._log = open(self.log, "w")
        # cwd: trafgen leaves .tmp_mmap.* files in its working directory
        self.proc = self.topo.a.popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT,
                                      start_new_session=True, env=self.env, cwd=self.log.parent)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # trafgen forks one worker per CPU: signal the whole group it leads
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        self.proc = None

    def output(self) -> str:
        return self.log.read_text(errors="replace")
