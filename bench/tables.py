"""Markdown tables from benchmark JSON files, so documents quote numbers a program printed.

    python bench/tables.py results bench/results/smoke_gz1_64.json
    python bench/tables.py speed bench/results/distill_speed.json
    python bench/tables.py distributed bench/results/distributed_speed.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def results_table(path: Path) -> str:
    record = json.loads(path.read_text())
    lines = [f"`{path.name}` — {record.get('gpu') or 'CPU'}, torch {record.get('torch')}, revision {record.get('git_revision')}",
             "", "| dataset | px | IPC | method | architecture | accuracy % (mean ± std) | n | selection | wall s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for entry in record["results"]:
        ipc = "all" if entry["ipc"] is None else entry["ipc"]
        wall = entry.get("distill_wall_s", 0.0) + entry["wall_s"]
        lines.append(f"| {entry['dataset']} | {entry['resolution']} | {ipc} | {entry['method']} | {entry['architecture']} | "
                     f"{100 * entry['acc_mean']:.1f} ± {100 * entry['acc_std']:.1f} | {entry['n_eval']} | {entry['selection']} | {wall:.0f} |")
    for name, stage in record.get("stages", {}).items():
        if stage.get("best_on_test") is not None:
            lines.append(f"\n{name}: best-on-test accuracy over the checkpoint evaluations (literature's protocol, "
                         f"{stage['settings']['eval_nets']} networks each): {100 * stage['best_on_test']:.1f}%")
    return "\n".join(lines)


def speed_table(path: Path) -> str:
    record = json.loads(path.read_text())
    lines = [f"`{path.name}` — {record.get('gpu')}, torch {record.get('torch')}, CUDA graphs {record.get('cuda_graphs', False)}",
             "", "| config | ours s/it | reference s/it | speed-up | ours peak GiB | reference peak GiB | memory ratio | chunk | revision |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in record["configs"]:
        lines.append(f"| {row['name']} | {_fmt(row.get('s_per_iter'))} | {_fmt(row.get('reference_s_per_iter'))} | "
                     f"{_fmt(row.get('speedup'), 2)}x | {_fmt(row.get('peak_mem_gib'), 2)} | "
                     f"{_fmt(row.get('reference_peak_mem_gib'), 1)} | {_fmt(row.get('memory_ratio'), 3)} | {row.get('batch_chunk') or '—'} | "
                     f"{(row.get('run') or record).get('git_revision', 'unknown')[:7]} |")
    return "\n".join(lines)


def distributed_table(path: Path) -> str:
    record = json.loads(path.read_text())
    lines = [f"`{path.name}` — {record.get('gpu_count')} x {record.get('gpu')}, torch {record.get('torch')}, "
             f"revision {record.get('git_revision')}", "",
             "| work | 1 process | {0} processes | speed-up |".format(record["processes"]), "| --- | --- | --- | --- |"]
    for row in record["distill"]:
        lines.append(f"| distill {row['name']} (s/iteration) | {row['one']['s_per_iter']:.3f} | {row['many']['s_per_iter']:.3f} | "
                     f"{row['speedup']:.2f}x |")
    experts = record["experts"]
    settings = experts["one"]["settings"]
    lines.append(f"| experts {settings['num_experts']} x {settings['epochs']} epochs, parallel {settings['parallel']} (wall s) | "
                 f"{experts['one']['wall_s']:.1f} | {experts['many']['wall_s']:.1f} | {experts['speedup']:.2f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    kind, *paths = sys.argv[1:]
    render = {"results": results_table, "speed": speed_table, "distributed": distributed_table}[kind]
    print("\n\n".join(render(Path(p)) for p in paths))
