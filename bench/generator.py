"""The benchmarks' frame generator, bench/generator.c, compiled with gcc once per source
(cached by content hash, so a VM that shares the cache folder finds it built)."""
from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from reshaper.bench.settings import CACHE

SOURCE = Path(__file__).with_name("generator.c")


def build_generator(dest: Path | None = None) -> Path:
    """The generator binary in dest (default ~/.cache/reshaper/bench), built when missing."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    dest = dest or CACHE
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"generator-{digest}"
    if not out.exists():
        tmp = out.with_suffix(".tmp")
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(tmp), str(SOURCE)], check=True)
        tmp.rename(out)
    return out


def generator_argv(binary: Path, ifname: str, frames: Path, seconds: float, pps: float = 0) -> list[str]:
    """Sends frames round robin on ifname for seconds at pps (0: as fast as it goes); prints one JSON line."""
    return [str(binary), ifname, str(frames), f"{seconds:.3f}", f"{pps:.0f}"]
