"""Figures from benchmark JSON files for the documents, drawn by matplotlib and written as PNG.

    python bench/plots.py best OUT.png bench/results/speed/distill_final_bf16.json [MORE.json...]
        # each config's fastest distill_speed row (as `tables.py best`): its speed-up and memory ratio against the targets
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from galaxy_distill.atomic_io import atomic_write_bytes  # noqa: E402
from tables import MEMORY_TARGET, SPEED_TARGET, distill_way, fastest_by_config  # noqa: E402


def best_figure(paths: list[Path]) -> bytes:
    """Two bar charts over the configs: speed-up against the reference (target line at SPEED_TARGET) and peak memory as
    a fraction of the reference's (target line at MEMORY_TARGET, which holds from IPC 10 up). Configs the reference
    could not run, or that were not timed, are named in their bar's place."""
    fastest = fastest_by_config(paths)
    names = list(fastest)
    figure, (speed_axis, memory_axis) = plt.subplots(1, 2, figsize=(11, 0.45 * len(names) + 1.6), sharey=True)
    positions = range(len(names))
    for position, name in zip(positions, names, strict=True):
        row = fastest[name]
        speedup = None if row is None else row.get("speedup")
        if speedup is None:
            why = "not timed" if row is None else f"no reference time; ours {row['s_per_iter']:.3f} s/it"
            speed_axis.text(0.1, position, why, va="center", fontsize=8, color="dimgray",
                            bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
        else:
            met = speedup >= SPEED_TARGET
            speed_axis.barh(position, speedup, color="tab:green" if met else "tab:orange")
            speed_axis.text(speedup + 0.1, position, f"{speedup:.2f}x  {distill_way(row)}", va="center", fontsize=8)
        memory = None if row is None else row.get("memory_ratio")
        if memory is not None:
            held = row.get("ipc", 0) >= 10
            memory_axis.barh(position, memory, color=("tab:green" if memory <= MEMORY_TARGET else "tab:orange") if held
                             else "lightgray")
            memory_axis.text(memory + 0.01, position, f"{memory:.3f}" + ("" if held else " (no target below IPC 10)"),
                             va="center", fontsize=8)
    speed_axis.axvline(SPEED_TARGET, color="black", linestyle="--", linewidth=1)
    speed_axis.set_xlabel(f"speed-up over the reference MTT (target ≥ {SPEED_TARGET:g}x, dashed)")
    speed_axis.set_xlim(0, max([SPEED_TARGET * 1.5] + [1.6 * (row.get("speedup") or 0) for row in fastest.values() if row]))
    memory_axis.axvline(MEMORY_TARGET, color="black", linestyle="--", linewidth=1)
    memory_axis.set_xlabel(f"peak memory / reference's (target ≤ {MEMORY_TARGET:g} at IPC ≥ 10, dashed)")
    memory_axis.set_xlim(0, 0.75)
    speed_axis.set_yticks(list(positions), names)
    speed_axis.invert_yaxis()
    gpus = sorted({row["run"]["gpu"] for row in fastest.values() if row and row.get("run", {}).get("gpu")})
    figure.suptitle(f"Each config's fastest way among {len(paths)} distill_speed files ({', '.join(gpus) or 'GPU unknown'})",
                    fontsize=9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


if __name__ == "__main__":
    figures = {"best": best_figure}
    if len(sys.argv) < 4 or sys.argv[1] not in figures:
        sys.exit(f"usage: plots.py {{{','.join(figures)}}} OUT.png FILE...\n{__doc__}")
    kind, out, paths = sys.argv[1], Path(sys.argv[2]), [Path(p) for p in sys.argv[3:]]
    if missing := [str(p) for p in paths if not p.exists()]:
        sys.exit(f"plots.py: no such file: {', '.join(missing)}")
    atomic_write_bytes(out, figures[kind](paths))
    print(f"wrote {out}")
