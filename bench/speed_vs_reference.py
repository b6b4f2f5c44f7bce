"""Ours against the ORIGINAL MTT loop, seconds per outer iteration and peak memory, in one call on one GPU (issue #27,
item 4: every speed figure of the docs from one device call that ran both).

First the reference: the peer harness's peer_speed.py (../shared/peer, see its README) in a child process, so that its
memory is its own and freed before ours runs; it imports the reference's networks.py, reparam_module.py and utils.py
(GeorgeCazenavette/mtt-distillation) from --reference-dir (default .peer/mtt of this checkout, git-ignored: never commit
them). Then ours in this process: bench/distill_speed.py's `measure` at the docs' GPU settings (`--compile --precision
bf16`, CUDA graphs where distill uses them, distill_speed's chunking). Both on the same configs of
bench/mtt_reference_h200.json, 2 warm-up and --timed timed iterations, medians.

Writes (after every config) a JSON with a top-level "configs" list of
{"name", "s_per_iter", "peak_mem_gib", "ref_s_per_iter", "ref_peak_mem_gib", "gpu"} (plus "speedup", "memory_ratio"
and what each side recorded), and prints a markdown table (`--table FILE.json` prints that of an existing file).

    python bench/speed_vs_reference.py [--configs NAME ...] [--timed 8] [--out bench/results/speed/speed_vs_reference.json]
    python bench/speed_vs_reference.py --device cpu --tiny --configs cifar10_ipc1 --out /tmp/s.json   # CPU smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, RESULTS, environment, git_revision  # noqa: E402
from distill_speed import REFERENCE, chunk_for, measure  # noqa: E402
from roofline import shrunk  # noqa: E402

from galaxy_distill.runtime import configure_backends  # noqa: E402
from galaxy_distill.atomic_io import write_json  # noqa: E402

DEFAULT_OUT = RESULTS / "speed" / "speed_vs_reference.json"
REFERENCE_FILES = ("networks.py", "reparam_module.py", "utils.py")
PEER_PLACES = (REPO / ".peer" / "harness", REPO / "shared" / "peer", REPO.parent / "shared" / "peer", REPO / "bench" / "peer")
"""Where the peer harness (peer_speed.py, mtt_reference.py) is looked for, first hit: a copy in the git-ignored .peer/
(what a device call carries), shared/peer of the device's tree, ../shared/peer beside the checkout."""


def find_peer(explicit: Path | None) -> Path | None:
    places = [explicit] if explicit else [Path(os.environ["GALAXY_DISTILL_PEER"])] if os.environ.get("GALAXY_DISTILL_PEER") \
        else list(PEER_PLACES)
    return next((place for place in places if (place / "peer_speed.py").is_file() and (place / "mtt_reference.py").is_file()),
                None)


def missing_reference(directory: Path) -> list[str]:
    return [name for name in REFERENCE_FILES if not (directory / name).is_file()]


def run_reference(peer: Path, reference_dir: Path, names: list[str], device: str, timed: int, tiny: bool
                  ) -> dict[str, dict]:
    """peer_speed.py's rows by config name (it writes JSON lines), run in a child process from this checkout."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "peer_speed.jsonl"
        command = [sys.executable, str(peer / "peer_speed.py"), "--configs", *names, "--out", str(out),
                   "--configs-file", str(REFERENCE), "--device", device, "--timed", str(timed)]
        if tiny:
            command.append("--tiny")
        print("reference:", " ".join(command), flush=True)
        subprocess.run(command, cwd=REPO, env={**os.environ, "MTT_REFERENCE_DIR": str(reference_dir)}, check=True)
        return {row["config"]: row for row in map(json.loads, out.read_text().splitlines()) if row}


def row_for(name: str, ours: dict, reference: dict | None, gpu: str | None) -> dict[str, Any]:
    """One config in the issue's schema, with the ratios and what each side recorded."""
    reference = reference or {}
    row: dict[str, Any] = {"name": name, "s_per_iter": ours.get("s_per_iter"), "peak_mem_gib": ours.get("peak_mem_gib"),
                           "ref_s_per_iter": reference.get("s_per_iter_median"),
                           "ref_peak_mem_gib": reference.get("peak_mem_gib"), "gpu": gpu}
    if row["s_per_iter"] and row["ref_s_per_iter"]:
        row["speedup"] = row["ref_s_per_iter"] / row["s_per_iter"]
    if row["peak_mem_gib"] and row["ref_peak_mem_gib"]:
        row["memory_ratio"] = row["peak_mem_gib"] / row["ref_peak_mem_gib"]
    if reference.get("gpu", gpu) != gpu:
        row["note"] = f"reference ran on {reference.get('gpu')}"
    row["ours"] = {key: value for key, value in ours.items() if key not in ("s_per_iter", "peak_mem_gib")}
    row["reference"] = {key: value for key, value in reference.items() if key not in ("s_per_iter_median", "peak_mem_gib")}
    return row


def ours_from(paths: list[Path]) -> dict[str, Any]:
    """Ours from earlier roofline.py / distill_speed.py files (all of one GPU model): their rows by config name (a
    later file's row replacing an earlier one's), the GPU, and each file's provenance."""
    records = [(path, json.loads(path.read_text())) for path in paths]
    gpus = {record.get("gpu") for _, record in records}
    if len(gpus) != 1:
        sys.exit(f"speed_vs_reference: the --ours files ran on different GPUs ({', '.join(map(str, gpus))})")
    rows = {row["name"]: {key: value for key, value in row.items() if key not in ("top_kernels", "bytes_top_ops")}
            for _, record in records for row in record["configs"]}
    provenance = [{"file": str(path), **{key: record.get(key) for key in ("command", "revision", "git_revision", "gpu",
                                                                          "torch")}} for path, record in records]
    return {"gpu": gpus.pop(), "rows": rows, "files": provenance}


def reference_rows(paths: list[Path]) -> dict[str, dict]:
    """peer_speed.py's JSON-lines rows by config name, from files it wrote (a later row replacing an earlier one)."""
    return {row["config"]: row for path in paths for line in path.read_text().splitlines() if line.strip()
            for row in [json.loads(line)]}


def _fmt(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def markdown_table(record: dict) -> str:
    lines = [f"Seconds per outer iteration and peak memory, ours ({record['settings']['way']}) and the reference MTT loop, "
             f"one call on {record.get('gpu') or 'the CPU'}, torch {record.get('torch')}, revision "
             f"{str(record.get('revision'))[:12]}", "",
             "| config | ours s/it | reference s/it | speed-up | ours GiB | reference GiB | memory ratio |",
             "|" + " --- |" * 7]
    for row in record["configs"]:
        speedup, ratio = row.get("speedup"), row.get("memory_ratio")
        error = (row.get("reference") or {}).get("error") or ""
        reference_s = ("out of memory" if "memory" in error.lower() else "failed") if error else _fmt(row["ref_s_per_iter"], 3)
        lines.append(f"| {row['name']} | {_fmt(row['s_per_iter'], 3)} | {reference_s} | "
                     f"{_fmt(speedup, 2)}{'x' if speedup else ''} | {_fmt(row['peak_mem_gib'], 2)} | "
                     f"{_fmt(row['ref_peak_mem_gib'], 2)} | {_fmt(ratio, 3)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="*", help="config names (default: all nine)")
    parser.add_argument("--timed", type=int, default=8, help="timed iterations of each side after its warm-up (median)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], help="ours (default: bf16 on a GPU, fp32 on the CPU)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, help="ours (default: on a GPU only)")
    parser.add_argument("--tiny", action="store_true", help="both sides at test size (peer_speed.py --tiny: 2 syn steps, "
                                                            "IPC 1, 1 warm-up and 2 timed for the reference)")
    parser.add_argument("--peer", type=Path, help="folder with peer_speed.py and mtt_reference.py (default: the first of "
                                                  f"{', '.join(str(p) for p in PEER_PLACES)}; or $GALAXY_DISTILL_PEER)")
    parser.add_argument("--reference-dir", type=Path,
                        default=Path(os.environ.get("MTT_REFERENCE_DIR", REPO / ".peer" / "mtt")),
                        help="the reference's networks.py, reparam_module.py, utils.py (default $MTT_REFERENCE_DIR or .peer/mtt)")
    parser.add_argument("--ours", type=Path, nargs="+", metavar="FILE.json",
                        help="take ours from these roofline.py or distill_speed.py files (measured in the same device call "
                             "as the reference, or on the same GPU) instead of timing it here")
    parser.add_argument("--reference-rows", type=Path, nargs="+", metavar="FILE.jsonl",
                        help="take the reference from these peer_speed.py outputs instead of running it here; with --ours "
                             "too, nothing runs: the files are only merged (no GPU needed)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--table", type=Path, metavar="FILE.json", help="only print the markdown table of an existing file")
    args = parser.parse_args()
    if args.table:
        print(markdown_table(json.loads(args.table.read_text())))
        return
    configs = json.loads(REFERENCE.read_text())["configs"]
    known = [config["name"] for config in configs]
    if unknown := sorted(set(args.configs or []) - set(known)):
        sys.exit(f"speed_vs_reference: unknown config(s) {', '.join(unknown)}; known: {', '.join(known)}")
    chosen = [config for config in configs if not args.configs or config["name"] in args.configs]
    earlier = ours_from(args.ours) if args.ours else None
    offline = earlier is not None and args.reference_rows is not None
    device = torch.device("cpu" if offline else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("speed_vs_reference: no CUDA GPU (use --device cpu --tiny for a smoke test)")
    gpu = earlier["gpu"] if offline else torch.cuda.get_device_name(device) if device.type == "cuda" else None
    if earlier is not None and earlier["gpu"] != gpu:
        sys.exit(f"speed_vs_reference: the --ours files were measured on {earlier['gpu']}, this call runs on {gpu}: "
                 "time ours again")
    if args.reference_rows:
        reference = reference_rows(args.reference_rows)
    else:
        peer = find_peer(args.peer)
        if peer is None:
            sys.exit("speed_vs_reference: no peer harness (peer_speed.py, mtt_reference.py) found: give --peer DIR, e.g. "
                     "../shared/peer")
        if missing := missing_reference(args.reference_dir.resolve()):
            sys.exit(f"speed_vs_reference: the reference MTT code is missing in {args.reference_dir}: {', '.join(missing)}. "
                     "Copy networks.py, reparam_module.py and utils.py of GeorgeCazenavette/mtt-distillation (revision "
                     "50dccea) there, utils.py's kornia and torchvision imports wrapped in try/except (see "
                     "../shared/peer/README.md); never commit them")
        reference = run_reference(peer, args.reference_dir.resolve(), [config["name"] for config in chosen], device.type,
                                  args.timed, args.tiny)
    configure_backends(device)
    bf16 = (args.precision or ("bf16" if device.type == "cuda" else "fp32")) == "bf16"
    compiled = args.compile if args.compile is not None else device.type == "cuda"
    if earlier is not None:  # the files' settings, not this call's
        first = next(iter(earlier["rows"].values()), {})
        bf16, compiled = first.get("precision") == "bf16", bool(first.get("compiled"))
    run = environment()
    way = f"{'bf16' if bf16 else 'fp32'}{', compiled' if compiled else ''}"
    record = {"what": "seconds per outer iteration and peak memory: galaxy_distill and the reference MTT loop "
                      "(peer_speed.py) on one GPU" + ("" if earlier is None else
                                                       "; ours from the files in ours_from (timed in the device call "
                                                       "that ran the reference, where the command says so)"),
              "command": run["command"], "revision": git_revision(), "gpu": gpu, "torch": torch.__version__,
              "device": "cuda" if offline and gpu else device.type, "tiny": args.tiny,
              "reference_revision": next((row.get("reference_revision") for row in reference.values()), None),
              "reference_from": [str(path) for path in args.reference_rows or []] or None,
              "ours_from": earlier and earlier["files"],
              "settings": {"way": way, "precision": "bf16" if bf16 else "fp32", "compiled": compiled, "timed": args.timed},
              "configs": []}
    for config in chosen:
        sized = shrunk(config) if args.tiny else config
        if earlier is not None:
            ours = earlier["rows"].get(config["name"], {"s_per_iter": None, "peak_mem_gib": None,
                                                        "error": "not in the --ours files"})
        else:
            try:
                ours = measure(sized, args.timed, device, chunk_for(sized), cuda_graphs=True, bf16=bf16, compiled=compiled)
            except RuntimeError as exc:  # out of memory included
                ours = {"s_per_iter": None, "peak_mem_gib": None, "error": f"{exc}"[:300]}
            if device.type == "cuda":
                torch.cuda.empty_cache()
        record["configs"].append(row_for(config["name"], ours, reference.get(config["name"]), gpu))
        write_json(args.out, record)
        row = record["configs"][-1]
        print(f"{row['name']:18s} ours {_fmt(row['s_per_iter'], 3)} s/it {_fmt(row['peak_mem_gib'], 2)} GiB | reference "
              f"{_fmt(row['ref_s_per_iter'], 3)} s/it {_fmt(row['ref_peak_mem_gib'], 2)} GiB | speed-up "
              f"{_fmt(row.get('speedup'), 2)}x", flush=True)
    print(markdown_table(record))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
