"""Markdown tables from benchmark JSON files, so documents quote numbers a program printed.

    python bench/tables.py summary bench/results/cifar10/*.json bench/results/galaxies/*.json  # one row per dataset and IPC
    python bench/tables.py crossarch bench/results/galaxies/*.json                 # ConvNet, ResNet-18, VGG-11
    python bench/tables.py faithful bench/results/faithful/cifar10_zca.json        # reference MTT loop beside ours
    python bench/tables.py best bench/results/speed/distill_final_bf16.json [MORE.json...]  # each config's fastest row, targets
    python bench/tables.py speed bench/results/speed/distill_speed.json [MORE.json...]   # several runs' rows side by side
    python bench/tables.py flops bench/results/speed/distill_flops.json bench/results/speed/distill_final_bf16.json  # TFLOP/s
    python bench/tables.py distributed bench/results/speed/distributed_speed.json
    python bench/tables.py experts bench/results/experts/experts_speed.json       # expert training speed
    python bench/tables.py profile bench/results/experts/experts_layouts_padded.json  # ways of running an expert step
    python bench/tables.py runs bench/results/galaxies/*.json                      # wall time and GPU of every run
    python bench/tables.py results RESULTS.json                                    # every entry of a pipeline.py file
    python bench/tables.py inrun RUN_DIR [RUN_DIR...]                              # checkpoint evaluations in a run
    python bench/tables.py kernels PROFILE.json                                    # experts_profile/distill_speed --kernels
    python bench/tables.py convolutions DISTILL_SPEED.json                         # distill_speed --convolution-shapes

Add --docs (before the kind) for the form the documents quote: without the file and revision columns and without the
revision in a table's caption (the JSON files keep both).
"""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

LOSS_WINDOW = 50
"""Iterations averaged for a run's first and last matching loss in the in-run table."""


def _mean_loss(rows: list[dict[str, str]]) -> float:
    return sum(float(row["loss"]) for row in rows) / len(rows)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _header(*columns: str) -> list[str]:
    """A markdown table's heading row and the separator row under it."""
    return ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]


def results_table(path: Path) -> str:
    record = json.loads(path.read_text())
    lines = [f"`{path.name}` — {record.get('gpu') or 'CPU'}, torch {record.get('torch')}, revision {record.get('git_revision')}",
             "", *_header("dataset", "px", "IPC", "method", "architecture", "accuracy % (mean ± std)", "n", "selection",
                          "wall s")]
    for entry in record["results"]:
        ipc = "all" if entry["ipc"] is None else entry["ipc"]
        wall = entry.get("distill_wall_s", 0.0) + entry["wall_s"]
        lines.append(f"| {entry['dataset']} | {entry['resolution']} | {ipc} | {entry['method']} | {entry['architecture']} | "
                     f"{_accuracy(entry)} | {entry['n_eval']} | {entry['selection']} | {wall:.0f} |")
    for name, stage in record.get("stages", {}).items():
        if stage.get("best_on_test") is not None:
            lines.append(f"\n{name}: best-on-test accuracy over the checkpoint evaluations (literature's protocol, "
                         f"{_eval_networks(stage['settings'])} networks each): {100 * stage['best_on_test']:.1f}%")
    return "\n".join(lines)


def _eval_networks(settings: dict) -> int:
    """DistillSettings.eval_networks, stored as eval_nets before it was renamed."""
    return settings["eval_networks"] if "eval_networks" in settings else settings["eval_nets"]


def speed_table(paths: list[Path]) -> str:
    """One table of distill_speed rows from every file, each config's rows together (in the order the configs first
    appear), so that ways measured in separate runs read side by side."""
    records = _records(paths)
    machines = dict.fromkeys(f"{record.get('gpu')}, torch {record.get('torch')}, CUDA graphs {record.get('cuda_graphs', False)}"
                             for _, record in records)
    lines = [f"{_file_names(records)} — {'; '.join(machines)}", "",
             *_header("config", "ours s/it", "reference s/it", "speed-up", "ours peak GiB", "reference peak GiB", "memory ratio",
                      "chunk", "precision", "revision")]
    for name, rows in _rows_by_config(records).items():
        for row, record in rows:
            lines.append(f"| {name} | {_fmt(row.get('s_per_iter'))} | {_fmt(row.get('reference_s_per_iter'))} | "
                         f"{_fmt(row.get('speedup'), 2)}x | {_fmt(row.get('peak_mem_gib'), 2)} | "
                         f"{_fmt(row.get('reference_peak_mem_gib'), 1)} | {_fmt(row.get('memory_ratio'), 3)} | {row.get('batch_chunk') or '—'} | "
                         f"{distill_way(row)} | {_revision(row, record)} |")
    return "\n".join(lines)


SPEED_TARGET = 5.0
"""The issue's target: this many times faster than the reference MTT implementation."""


MEMORY_TARGET = 0.25
"""The issue's memory target at IPC >= 10: at most this fraction of the reference's peak memory."""


def best_table(paths: list[Path]) -> str:
    """Each config's fastest distill_speed row among the files, against the speed and memory targets."""
    records = _records(paths)
    lines = [_file_names(records), "",
             *_header("config", "fastest way", "chunk", "ours s/it", "reference s/it", "speed-up",
                      f"speed target ({SPEED_TARGET:g}x)", "memory ratio", f"memory target (IPC >= 10: <= {MEMORY_TARGET:g})",
                      "file", "revision")]
    paths_of = {id(record): path for path, record in records}
    for name, rows in _rows_by_config(records).items():
        if (fastest := fastest_row(rows)) is None:
            notes = "; ".join(sorted({row.get("note") or "no time" for row, _ in rows}))
            lines.append(f"| {name} | not timed ({notes.replace('|', '/')}) | — | — | "
                         f"{_fmt(rows[0][0].get('reference_s_per_iter'))} | — | — | — | — | — | — |")
            continue
        row, record = fastest
        speedup, memory = row.get("speedup"), row.get("memory_ratio")
        speed_verdict = "—" if speedup is None else "met" if speedup >= SPEED_TARGET else "missed"
        memory_verdict = ("—" if row.get("ipc", 0) < 10 or memory is None
                          else "met" if memory <= MEMORY_TARGET else "missed")
        lines.append(f"| {name} | {distill_way(row)} | {row.get('batch_chunk') or '—'} | {_fmt(row['s_per_iter'])} | "
                     f"{_fmt(row.get('reference_s_per_iter'))} | {_fmt(speedup, 2)}x | {speed_verdict} | {_fmt(memory, 3)} | "
                     f"{memory_verdict} | `{paths_of[id(record)].name}` | "
                     f"{_revision(row, record)} |")
    return "\n".join(lines)


def fastest_row(rows: list[tuple[dict, dict]]) -> tuple[dict, dict] | None:
    """The fastest timed (row, record) of one config's distill_speed rows; None when none was timed."""
    timed = [(row, record) for row, record in rows if row.get("s_per_iter") is not None]
    return min(timed, key=lambda pair: pair[0]["s_per_iter"]) if timed else None


def fastest_by_config(paths: list[Path]) -> dict[str, dict | None]:
    """Each config's fastest timed distill_speed row among the files (None: not timed), configs in first-seen order."""
    fastest = {}
    for name, rows in _rows_by_config(_records(paths)).items():
        pair = fastest_row(rows)
        fastest[name] = None if pair is None else pair[0]
    return fastest


def _records(paths: list[Path]) -> list[tuple[Path, dict]]:
    return [(path, json.loads(path.read_text())) for path in paths]


def _revision(row: dict, record: dict) -> str:
    """The short git revision a distill_speed row was measured at (its own run's, for rows an --append kept)."""
    return (row.get("run") or record).get("git_revision", "unknown")[:7]


def _file_names(records: list[tuple[Path, dict]]) -> str:
    return ", ".join(f"`{path.name}`" for path, _ in records)


def _rows_by_config(records: list[tuple[Path, dict]]) -> dict[str, list[tuple[dict, dict]]]:
    """distill_speed rows of every record grouped by config, configs in the order they first appear."""
    rows_by_config: dict[str, list[tuple[dict, dict]]] = defaultdict(list)
    for _, record in records:
        for row in record["configs"]:
            rows_by_config[row["name"]].append((row, record))
    return rows_by_config


def flops_table(paths: list[Path]) -> str:
    """Achieved arithmetic rate of every distill_speed row, from the FLOP counts of a distill_flops file among `paths`
    (ours per iteration, and MTT's unrolled formulation with the reference's seconds), the rate the target needs, and the
    speed-up still to gain for it (below 1: met)."""
    records = _records(paths)
    counts = {row["name"]: row for _, record in records if record.get("kind") == "distill_flops" for row in record["configs"]}
    if not counts:
        sys.exit("tables.py flops: give a distill_flops.json (bench/distill_flops.py) among the files")
    lines = [_file_names(records), "",
             *_header("config", "way", "chunk", "ours GFLOP/it", "ours s/it", "ours TFLOP/s", f"TFLOP/s for {SPEED_TARGET:g}x",
                      "still to gain", "MTT GFLOP/it", "reference s/it", "reference TFLOP/s", "revision")]
    timed = [(path, record) for path, record in records if record.get("kind") != "distill_flops"]
    for name, rows in _rows_by_config(timed).items():
        for row, record in rows:
            count = counts.get(name)
            if count is None or not row.get("s_per_iter"):
                continue
            ours, unrolled = count["ours_gflop_per_iteration"], count["unrolled_gflop_per_iteration"]
            reference_s = row.get("reference_s_per_iter")
            lines.append(f"| {name} | {distill_way(row)} | {row.get('batch_chunk') or '—'} | {ours:.0f} | {row['s_per_iter']:.3f} | "
                         f"{ours / row['s_per_iter'] / 1e3:.1f} | "
                         f"{_fmt(reference_s and ours * SPEED_TARGET / reference_s / 1e3, 1)} | "
                         f"{_fmt(reference_s and row['s_per_iter'] * SPEED_TARGET / reference_s, 2)}x | {unrolled:.0f} | "
                         f"{_fmt(reference_s)} | {_fmt(reference_s and unrolled / reference_s / 1e3, 1)} | "
                         f"{_revision(row, record)} |")
    return "\n".join(lines)


def distill_way(row: dict) -> str:
    """A distill_speed row's way: its precision, and ', compiled' for compiled student steps."""
    return f"{row.get('precision', 'fp32')}{', compiled' if row.get('compiled') else ''}"


def distributed_table(path: Path) -> str:
    record = json.loads(path.read_text())
    lines = [(f"`{path.name}` — {record.get('gpu_count')} x {record.get('gpu')}, torch {record.get('torch')}, "
              f"revision {record.get('git_revision')}"), "",
             *_header("work", "1 process", f"{record['processes']} processes", "speed-up")]
    for row in record["distill"]:
        lines.append(f"| distill {row['name']} (s/iteration) | {row['one']['s_per_iter']:.3f} | {row['many']['s_per_iter']:.3f} | "
                     f"{row['speedup']:.2f}x |")
    experts = record["experts"]
    settings = experts["one"]["settings"]
    lines.append(f"| experts {settings['num_experts']} x {settings['epochs']} epochs, parallel {settings['parallel']} (wall s) | "
                 f"{experts['one']['wall_s']:.1f} | {experts['many']['wall_s']:.1f} | {experts['speedup']:.2f}x |")
    return "\n".join(lines)


def _accuracy(entry: dict | None) -> str:
    if entry is None:
        return "—"
    return f"{100 * entry['acc_mean']:.1f} ± {100 * entry['acc_std']:.1f}"


def _entries(paths: list[Path]) -> list[tuple[dict, dict]]:
    """(entry, the record it came from) for every result of every file."""
    pairs = []
    for path in paths:
        record = json.loads(path.read_text())
        pairs += [(entry, record) for entry in record["results"]]
    return pairs


def summary_table(paths: list[Path]) -> str:
    """ConvNet accuracy per dataset and IPC: distilled sets (validation-selected and best-on-test) against baselines."""
    pairs = [(e, r) for e, r in _entries(paths) if e["architecture"] == "convnet"]
    full = {e["dataset"]: e for e, _ in pairs if e["method"] == "full"}
    cells: dict[tuple[str, int], dict[str, str]] = defaultdict(dict)
    for entry, record in pairs:
        if entry["ipc"] is None:
            continue
        row = cells[(entry["dataset"], entry["ipc"])]
        row[entry["method"]] = _accuracy(entry)
        stage = record.get("stages", {}).get(f"distill-{entry['method']}-ipc{entry['ipc']}")
        if stage and stage.get("best_on_test") is not None:
            row[f"{entry['method']}_best"] = f"{100 * stage['best_on_test']:.1f}"
            row[f"{entry['method']}_iterations"] = str(stage["iterations"])
    lines = _header("dataset", "IPC", "STM", "MTT", "random real", "class average", "full data", "STM best-on-test",
                    "MTT best-on-test", "iterations (STM / MTT)")
    for (dataset, ipc), row in sorted(cells.items()):
        lines.append(f"| {dataset} | {ipc} | {row.get('stm', '—')} | {row.get('mtt', '—')} | {row.get('random', '—')} | "
                     f"{row.get('class_average', '—')} | {_accuracy(full.get(dataset))} | {row.get('stm_best', '—')} | "
                     f"{row.get('mtt_best', '—')} | {row.get('stm_iterations', '—')} / {row.get('mtt_iterations', '—')} |")
    return "\n".join(lines)


def runs_table(paths: list[Path]) -> str:
    """Wall time and hardware of every ConvNet result: its distillation (distilled sets) and its evaluation."""
    lines = _header("file", "dataset", "IPC", "set", "distillation s", "evaluation s (networks)", "evaluated on",
                    "distilled on", "revision")
    for path in paths:
        record = json.loads(path.read_text())
        distilled_on = record.get("distilled_with", record)
        for entry in record["results"]:
            if entry["architecture"] != "convnet":
                continue
            distill_s = _fmt(entry["distill_wall_s"], 0) if "distill_wall_s" in entry else "—"
            evaluated_on = record["gpu"] if entry.get("device", "cuda").startswith("cuda") else "CPU"
            lines.append(f"| {path.parent.name}/{path.name} | {entry['dataset']} | {entry['ipc'] or 'all'} | {entry['method']} | "
                         f"{distill_s} | {_fmt(entry['wall_s'], 0)} ({entry['n_eval']}) | {evaluated_on} | "
                         f"{distilled_on['gpu'] if 'distill_wall_s' in entry else '—'} | {record['git_revision'][:7]} |")
    return "\n".join(lines)


def crossarch_table(paths: list[Path]) -> str:
    """Each set's accuracy on every architecture it was evaluated on."""
    cells: dict[tuple[str, int | None, str], dict[str, str]] = defaultdict(dict)
    architectures: list[str] = []
    for entry, _ in _entries(paths):
        cells[(entry["dataset"], entry["ipc"], entry["method"])][entry["architecture"]] = _accuracy(entry)
        if entry["architecture"] not in architectures:
            architectures.append(entry["architecture"])
    lines = _header("dataset", "IPC", "set", *architectures)
    for (dataset, ipc, method), row in sorted(cells.items(), key=lambda item: (item[0][0], item[0][1] or 10**9, item[0][2])):
        lines.append(f"| {dataset} | {'all' if ipc is None else ipc} | {method} | "
                     + " | ".join(row.get(name, "—") for name in architectures) + " |")
    return "\n".join(lines)


def inrun_table(run_dirs: list[Path]) -> str:
    """The checkpoint evaluations a distillation run made as it went (its own small protocol), from metrics.csv."""
    lines = _header("run", "iterations done / planned", "evaluated at", "validation %", "test % at best validation",
                    "best test %", "networks x epochs", f"matching loss, first / last {LOSS_WINDOW} it.", "start epochs drawn")
    for run in run_dirs:
        settings = json.loads((run / "settings.json").read_text())
        with (run / "metrics.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        evaluated = [row for row in rows if row["val_accuracy"]]
        best = max(evaluated, key=lambda row: float(row["val_accuracy"]), default=None)
        done = f"| {run.name} | {rows[-1]['iteration'] if rows else 0} / {settings['iterations']} | "
        if best:
            done += (f"{', '.join(row['iteration'] for row in evaluated)} | "
                     f"{100 * float(best['val_accuracy']):.1f} (it. {best['iteration']}) | {100 * float(best['test_accuracy']):.1f} | "
                     f"{max(100 * float(row['test_accuracy']) for row in evaluated):.1f} | {_eval_networks(settings)} x {settings['eval_epochs']} | ")
        else:
            done += "— | — | — | — | — | "
        if rows:
            starts = [int(row["start_epoch"]) for row in rows]
            done += (f"{_mean_loss(rows[:LOSS_WINDOW]):.3f} / {_mean_loss(rows[-LOSS_WINDOW:]):.3f} | "
                     f"{min(starts)}-{max(starts)} |")
        else:
            done += "— | — |"
        lines.append(done)
    return "\n".join(lines)


def experts_table(paths: list[Path]) -> str:
    """Expert-training wall time, per expert-epoch and projected to 100 x 50: from the pipeline's experts stage
    or from bench/experts_speed.py (whose record of an unfinished run counts the experts done so far)."""
    lines = _header("dataset", "experts x epochs", "batch", "trained at once", "step", "wall s", "s per expert-epoch",
                    "100 x 50 at this rate (min)", "100 x 50 from group times (min)", "final test accuracy %",
                    "test scored every (epochs)", "GPU")
    for path in paths:
        record = json.loads(path.read_text())
        stage = record["stages"]["experts"] if "stages" in record else record
        settings = stage["settings"]
        experts = stage.get("experts_done", settings["num_experts"])
        done = "" if stage.get("finished", True) else f" (of {settings['num_experts']}: unfinished)"
        per_expert_epoch = stage["wall_s"] / (experts * settings["epochs"])
        step = f"{settings.get('precision', 'fp32')}{', compiled' if settings.get('compile') else ''}"
        lines.append(f"| {record['dataset']} | {experts}{done} x {settings['epochs']} | {settings['batch_size']} | "
                     f"{settings['parallel']} | {step} | {stage['wall_s']:.1f} | {per_expert_epoch:.3f} | "
                     f"{100 * 50 * per_expert_epoch / 60:.1f} | {_fmt(_minutes_from_groups(stage, settings), 1)} | "
                     f"{100 * stage['final_test_acc_mean']:.1f} ± {100 * stage['final_test_acc_std']:.1f} | "
                     f"{settings.get('test_every', 1)} | {record.get('gpu')} |")
    return "\n".join(lines)


def _minutes_from_groups(stage: dict, settings: dict) -> float | None:
    """100 x 50 projected from an experts_speed record's group times: its first group (which includes compiling)
    once, then the mean of the later groups for every further group of the same size; None without later groups."""
    groups = [seconds for _, seconds in sorted(stage.get("group_seconds", {}).items(), key=lambda item: int(item[0]))]
    if len(groups) < 2:
        return None
    later = statistics.mean(groups[1:]) * 50 / settings["epochs"]
    return (groups[0] * 50 / settings["epochs"] + later * (math.ceil(100 / settings["parallel"]) - 1)) / 60


def _way(row: dict) -> str:
    """A profile row's compilation ('yes' or 'no'), and '+ step graph' for a step recorded as one CUDA graph
    ('+ step graph, streams' with a CUDA stream per network; profiles before streams were recorded had none)."""
    compiled = "yes" if row.get("compile") else "no"
    if not row.get("whole_step_graph"):
        return compiled
    return f"{compiled} + step graph, streams" if row.get("network_streams") else f"{compiled} + step graph"


def _caption(path: Path, record: dict) -> str:
    """The line above a per-file benchmark table: which file, GPU, torch and revision."""
    return f"`{path.name}` — {record.get('gpu')}, torch {record.get('torch')}, revision {record.get('git_revision', 'unknown')[:7]}"


def kernels_table(path: Path) -> str:
    """--kernels of bench/experts_profile.py (per way of running an expert step) or bench/distill_speed.py (per
    config's outer iteration): the GPU time of all kernels (where recorded) and of the most time-consuming ones
    against the step's wall time (the rest is the host launching work), and the three largest."""
    record = json.loads(path.read_text())
    distill = "configs" in record
    described = (("config", "precision", "CUDA graphs") if distill
                 else ("experts at once", "precision", "compiled"))
    lines = [_caption(path, record), "", *_header(*described, "step ms", "all kernels' GPU ms per step", "GPU busy share",
                                                  "kernels listed", "their GPU ms per step", "share of the step",
                                                  "three largest (ms per step)")]
    for row in record["configs" if distill else "rows"]:
        kernels = row.get("top_kernels")
        step_ms = row["s_per_iter"] * 1000 if distill and row.get("s_per_iter") else row.get("step_ms")
        if not kernels or step_ms is None:
            continue
        busy = sum(kernel["ms_per_step"] for kernel in kernels)
        largest = "; ".join(f"{kernel['name'][:48]} ({kernel['ms_per_step']:.2f})" for kernel in kernels[:3])
        way = ((row["name"], distill_way(row), "yes" if row.get("cuda_graphs") else "no") if distill
               else (row["experts"], row["precision"], _way(row)))
        device_ms = row.get("device_ms_per_step")
        lines.append(f"| {' | '.join(map(str, way))} | {step_ms:.1f} | {_fmt(device_ms, 1)} | "
                     f"{_fmt(device_ms and device_ms / step_ms, 2)} | {len(kernels)} | {busy:.1f} | "
                     f"{busy / step_ms:.2f} | {largest.replace('|', '/')} |")
    return "\n".join(lines)


def convolutions_table(path: Path) -> str:
    """--convolution-shapes of bench/distill_speed.py: per config, its most time-consuming convolution operators by
    operand shapes (input and weight for the forward; output gradient, input and weight for the backward)."""
    record = json.loads(path.read_text())
    lines = [_caption(path, record), "", *_header("config", "way", "CUDA graphs", "step ms", "operator", "operand shapes",
                                                  "calls per step", "GPU ms per step", "share of the step")]
    for row in record["configs"]:
        step_ms = row["s_per_iter"] * 1000 if row.get("s_per_iter") is not None else None
        for convolution in row.get("convolution_shapes") or []:
            shapes = ", ".join("x".join(map(str, shape)) for shape in convolution["shapes"] if len(shape) > 1)
            share = _fmt(step_ms and convolution["ms_per_step"] / step_ms, 2)
            lines.append(f"| {row['name']} | {distill_way(row)} | {'yes' if row.get('cuda_graphs') else 'no'} | "
                         f"{_fmt(step_ms, 1)} | {convolution['op'].removeprefix('aten::')} | {shapes} | "
                         f"{convolution['calls_per_step']:g} | {convolution['ms_per_step']:.2f} | {share} |")
    return "\n".join(lines)


def profile_table(path: Path) -> str:
    """bench/experts_profile.py: milliseconds per expert step for each way of running the stacked experts (with a
    layout column where the profile compared input layouts)."""
    record = json.loads(path.read_text())
    layouts = any("channels_last" in row for row in record["rows"])
    lines = [_caption(path, record), "", *_header("experts at once", "precision", *(["layout"] if layouts else []), "compiled",
                                                  "step ms", "augmentation ms", "ms per expert-step",
                                                  "100 x 50 projected (min)", "peak GiB")]
    for row in sorted(record["rows"], key=lambda row: (row["experts"], row["ms_per_expert_step"] or float("inf"))):
        layout = (" channels-last |" if row.get("channels_last") else " NCHW |") if layouts else ""
        lines.append(f"| {row['experts']} | {row['precision']} |{layout} {_way(row)} | {_fmt(row['step_ms'], 1)} | "
                     f"{row['augment_ms'] + row['draw_ms_per_step']:.2f} | {_fmt(row['ms_per_expert_step'])} | "
                     f"{_fmt(row['projected_min_100x50'], 1)} | {_fmt(row['peak_mem_gib'], 2)} |")
    return "\n".join(lines)


FAITHFUL_METHODS = {"mtt-reference": "reference MTT loop", "mtt": "ours `--method mtt`", "stm": "ours `--method stm`",
                    "random": "random real"}
"""bench/faithful.py's methods, in the table's column order, and their column headings."""


def faithful_table(path: Path) -> str:
    """bench/faithful.py: test accuracy % (mean ± std) of the reference MTT loop, ours with --method mtt and stm, and
    random real images per IPC, with the learned step size of the three distilled sets."""
    record = json.loads(path.read_text())
    cells: dict[int, dict[str, dict]] = defaultdict(dict)
    for entry in record["results"]:
        cells[entry["ipc"]][entry["method"]] = entry
    lines = [_caption(path, record), "", *_header("IPC", *FAITHFUL_METHODS.values(),
                                                  "learned step size (reference / mtt / stm)")]
    for ipc, row in sorted(cells.items()):
        accuracy = [f"{row[m]['acc_mean']:.1f} ± {row[m]['acc_std']:.1f}" if m in row else "—" for m in FAITHFUL_METHODS]
        step = " / ".join(_fmt(row.get(m, {}).get("learned_lr"), 4) for m in ("mtt-reference", "mtt", "stm"))
        lines.append(f"| {ipc} | {' | '.join(accuracy)} | {step} |")
    return "\n".join(lines)


def for_docs(text: str) -> str:
    """A table as the documents quote it: the file and revision columns and a caption's revision left out."""
    out, dropped = [], []
    for line in text.splitlines():
        if line.startswith("| ") and not dropped and not line.startswith("| ---"):
            cells = line.strip("|").split(" | ")
            heading = [cell.strip() for cell in cells]
            dropped = [i for i, cell in enumerate(heading) if cell in ("file", "revision")]
        if line.startswith("|") and dropped:
            cells = line[1:-1].split("|")
            line = "|" + "|".join(cell for i, cell in enumerate(cells) if i not in dropped) + "|"
        elif not line.startswith("|"):
            dropped = []
            line = re.sub(r",? revision [0-9a-f]{7,40}|, revision unknown", "", line)
        out.append(line)
    return "\n".join(out)


if __name__ == "__main__":
    combined = {"summary": summary_table, "crossarch": crossarch_table, "inrun": inrun_table, "experts": experts_table,
                "runs": runs_table, "speed": speed_table, "best": best_table, "flops": flops_table}
    per_file = {"results": results_table, "distributed": distributed_table, "profile": profile_table,
                "kernels": kernels_table, "convolutions": convolutions_table, "faithful": faithful_table}
    arguments = sys.argv[1:]
    docs = "--docs" in arguments
    arguments = [argument for argument in arguments if argument != "--docs"]
    if len(arguments) < 2 or arguments[0] not in {**combined, **per_file}:
        sys.exit(f"usage: tables.py [--docs] {{{','.join([*combined, *per_file])}}} FILE...\n{__doc__}")
    kind, paths = arguments[0], [Path(p) for p in arguments[1:]]
    if missing := [str(p) for p in paths if not p.exists()]:
        sys.exit(f"tables.py: no such file: {', '.join(missing)}")
    text = combined[kind](paths) if kind in combined else "\n\n".join(per_file[kind](p) for p in paths)
    print(for_docs(text) if docs else text)
