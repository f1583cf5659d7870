"""The PNGs of a run, in its headline placement: throughput against frame size, latency CDFs,
CPU per frame (report.md's tables have every placement). The one
module of the bench that imports matplotlib (report.py imports it only when plots are asked
for: under the VM's TCG importing it is slow, and the report needs none of it)."""
from __future__ import annotations

from pathlib import Path

from reshaper.bench.settings import ALL_MODES, KERNEL_PATHS


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plots(results: dict, out_dir: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    headline = results["placements"][0]
    rows = [r for r in results["summary"]["rows"] if r["placement"] == headline]
    modes = [m for m in results["modes"] if any(r["mode"] == m for r in rows)]
    colors = {m: f"C{i}" for i, m in enumerate(ALL_MODES)}   # matplotlib's ten-colour cycle, one per mode
    sub = f", {headline}" + (" (VM)" if results["where"] == "vm" else "")
    written = []

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for mode in modes:
        rs = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["size"])
        ax.plot([r["size"] for r in rs], [r["loss_free_pps"] / 1e3 for r in rs], "o-", color=colors[mode],
                label=f"{mode} loss-free")
        ax.plot([r["size"] for r in rs], [r["sat_delivered_pps"] / 1e3 for r in rs], "x--", color=colors[mode],
                alpha=0.6, label=f"{mode} at saturation")
    ax.set_xlabel("frame size (bytes, without FCS)")
    ax.set_ylabel("frames/s (thousands)")
    ax.set_title(f"Throughput vs frame size{sub}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    written.append(_save(fig, out_dir / "throughput.png"))

    sizes = sorted({r["size"] for r in rows})
    fig, axes = plt.subplots(1, max(1, len(sizes)), figsize=(5.5 * max(1, len(sizes)), 4.5), squeeze=False)
    styles = {"0.1": ":", "0.5": "-", "0.9": "--"}
    for ax, size in zip(axes[0], sizes):
        for mode in modes:
            s = results["modes"][mode]["placements"][headline]["sizes"].get(str(size), {})
            for frac, t in s.get("latency", {}).items():
                xs = sorted(t["latency"]["samples_us"])
                if not xs:
                    continue
                ys = [(i + 1) / len(xs) for i in range(len(xs))]
                ax.plot(xs, ys, styles.get(frac, "-"), color=colors[mode],
                        label=f"{mode} {float(frac):.0%}", linewidth=1.2)
        ax.set_xscale("log")
        ax.set_xlabel("one-way latency (µs, log)")
        ax.set_ylabel("fraction of probes")
        ax.set_title(f"Latency CDF, {size} B{sub}")
        ax.grid(True, alpha=0.3, which="both")
        ax.legend(fontsize=6, ncol=2)
    written.append(_save(fig, out_dir / "latency_cdf.png"))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    width = 0.8 / max(1, len(modes))
    for i, mode in enumerate(modes):
        xs, ys = [], []
        for j, size in enumerate(sizes):
            r = next((r for r in rows if r["mode"] == mode and r["size"] == size), None)
            if r and r["cpu_ns_per_frame"] is not None:
                xs.append(j + i * width)
                ys.append(r["cpu_ns_per_frame"])
        ax.bar(xs, ys, width, color=colors[mode],
               label=f"{mode} ({'softirq' if mode in KERNEL_PATHS else 'process user+sys'})")
    ax.set_xticks([j + width * (len(modes) - 1) / 2 for j in range(len(sizes))])
    ax.set_xticklabels([f"{s} B" for s in sizes])
    ax.set_ylabel("CPU ns per forwarded frame")
    ax.set_title(f"CPU per frame at 90 % of the loss-free rate{sub}")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    written.append(_save(fig, out_dir / "cpu_per_frame.png"))
    return written


def engine_scaling(costs: dict[str, list[dict]], path: Path) -> Path:
    """Instructions per frame against the number of per-host rules (bench/engine.py's rows), per
    architecture, for the loaded form and the reference walk: a frame hitting the last rule and none."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for a, (arch, rows) in enumerate(costs.items()):
        for e, (entry, label) in enumerate((("loaded", "loaded form"), ("reference", "every rule in turn"))):
            for hit, style in (("last rule", "o-"), ("no rule", "x--")):
                rs = sorted((r for r in rows if r["case"].endswith(hit)), key=lambda r: r["rules"])
                ax.plot([r["rules"] for r in rs], [r[entry]["instructions_per_frame"] for r in rs], style,
                        color=f"C{2 * a + e}", label=f"{arch}, {label}, {hit}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("per-host rules")
    ax.set_ylabel("engine instructions per frame (callgrind)")
    ax.set_title("Engine cost against the number of rules")
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return _save(fig, path)
