"""Roofline of one outer distillation iteration on the reference MTT configs (issue #27): how far from the GPU's limit.

For each config of mtt_reference_h200.json, at the default GPU settings of the docs (`--compile --precision bf16`,
CUDA graphs where distill uses them, the chunking of bench/distill_speed.py):

- seconds per outer iteration and peak memory: bench/distill_speed.py's `measure` (2 warm-up iterations, which also
  compile, then `--iterations` timed, median);
- the top kernels by total device time: torch.profiler over 3 more iterations (distill_speed's `--kernels`): name,
  share of all kernel time, calls per iteration (CPU operators by CPU time when run on the CPU);
- FLOPs per outer iteration: torch.utils.flop_counter (convolutions and matrix products, as bench/distill_flops.py
  counts them) over one eager iteration of the same config at full size, uncompiled, without CUDA graphs, at the same
  precision, cross-checked against distill_flops.py's count extended from one image (`flops_extrapolated`);
- bytes moved: in the same eager iteration, a TorchDispatchMode (`ByteCounter`) adds up the bytes of every aten
  operator's tensor inputs and outputs (views excepted), split into the convolutions and matrix products (the operators
  the FLOP counter counts) and the rest. Every operator reading its inputs from and writing its outputs to memory is
  what an UNFUSED run does: an upper bound on DRAM traffic. torch.compile fuses the elementwise ops (normalisation,
  ReLU, pooling, augmentation arithmetic) and caches hold small tensors, so the compiled run moves less: a bandwidth
  fraction above 1 means fusion or caches saved traffic, not that the GPU beat its bandwidth;
- achieved TFLOP/s, arithmetic intensity (FLOPs per byte, all operators, and convolutions/matrix products alone), and
  the fractions of the GPU's dense bf16 tensor-core peak and of its memory bandwidth (`PEAKS`, by device name; null on
  an unknown device or the CPU).

Writes one JSON (--out, after every config, so a run stopped early keeps what it measured) and prints a markdown
table; `--table FILE.json` prints the table of an existing file (for docs/performance.md).

    python bench/roofline.py [--configs NAME ...] [--iterations 8] [--out bench/results/speed/roofline.json]
    python bench/roofline.py --table bench/results/speed/roofline.json [MORE.json ...]
    python bench/roofline.py --merge A.json B.json --out bench/results/speed/roofline.json   # two device calls' configs
    python bench/roofline.py --device cpu --configs cifar10_ipc1 --iterations 1 --tiny --width 16 --out /tmp/r.json

On a GPU session, bench/roofline_device.sh runs it with the reference loop per group of configs in one device call
(bench/results/speed/README-roofline.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode, flop_registry

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, environment, git_revision  # noqa: E402
from distill_flops import flops_per_iteration  # noqa: E402
from distill_speed import NETWORK, REFERENCE, chunk_for, measure, outer_iteration, synchronize  # noqa: E402

from galaxy_distill.runtime import configure_backends  # noqa: E402
from galaxy_distill.atomic_io import write_json  # noqa: E402

DEFAULT_OUT = RESULTS / "speed" / "roofline.json"
TOP_KERNELS = 3

PEAKS: dict[str, dict[str, float]] = {
    # Dense (no sparsity) bf16 tensor-core TFLOP/s and memory bandwidth in TB/s (10^12 bytes/s), from NVIDIA's data
    # sheets: "NVIDIA H100 Tensor Core GPU" datasheet (H100 SXM: BF16 Tensor Core 1,979 TFLOPS with sparsity, i.e.
    # 989.4 dense, 3.35 TB/s; H100 PCIe: 1,513 sparse / 756.5 dense, 2.0 TB/s; H100 NVL: 1,671 sparse / 835.5 dense,
    # 3.9 TB/s) and the "NVIDIA H200 Tensor Core GPU" datasheet (H200 SXM: 1,979 sparse / 989.4 dense, 4.8 TB/s;
    # H200 NVL: 1,671 sparse / 835.5 dense, 4.8 TB/s). Matched by substring of torch.cuda.get_device_name, first hit:
    # "NVIDIA H100 80GB HBM3" is the SXM part, "NVIDIA H200" the SXM part.
    "H100 PCIe": {"bf16_tflops": 756.5, "bandwidth_tb_s": 2.0},
    "H100 NVL": {"bf16_tflops": 835.5, "bandwidth_tb_s": 3.9},
    "H100": {"bf16_tflops": 989.4, "bandwidth_tb_s": 3.35},
    "H200 NVL": {"bf16_tflops": 835.5, "bandwidth_tb_s": 4.8},
    "H200": {"bf16_tflops": 989.4, "bandwidth_tb_s": 4.8},
}


def peak_for(device_name: str | None) -> dict[str, Any] | None:
    """The `PEAKS` entry of a device name (with the key that matched), or None (CPU, unknown GPU)."""
    for key, peak in PEAKS.items():
        if device_name and key in device_name:
            return {"matched": key, **peak}
    return None


def measured_ceilings(device: torch.device, size: int = 8192, copy_gib: float = 2.0, repeats: int = 10) -> dict[str, float]:
    """The two ceilings as measured on this GPU (the datasheet's are not reached in practice: an H200 here gave about
    790 TFLOP/s and 4.3 TB/s): a `size`^3 bf16 matrix product on random data (TFLOP/s), and a device-to-device copy of
    `copy_gib` GiB counting bytes read and written (TB/s); each the mean of `repeats` timed runs after 3 warm-up ones."""
    a, b = (torch.randn(size, size, device=device, dtype=torch.bfloat16) for _ in range(2))
    source = torch.empty(int(copy_gib * 2**30), dtype=torch.uint8, device=device)
    target = torch.empty_like(source)

    def timed(work) -> float:
        for _ in range(3):
            work()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        for _ in range(repeats):
            work()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1000 / repeats

    matmul_s = timed(lambda: torch.mm(a, b))
    copy_s = timed(lambda: target.copy_(source))
    return {"bf16_matmul_tflops": 2 * size**3 / matmul_s / 1e12, "copy_tb_s": 2 * copy_gib * 2**30 / copy_s / 1e12,
            "matmul_size": size, "copy_gib": copy_gib}


NO_TRAFFIC = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "lift_fresh", "set_",
              "resize_", "_local_scalar_dense", "record_stream", "is_same_size", "_unsafe_view"}
"""Operators that allocate, inspect or re-label storage and move no tensor data (`_unsafe_view`: a view whose schema
does not say so); views are recognised by their schema."""


def _is_view(func: torch._ops.OpOverload) -> bool:
    """Whether the operator's result aliases its input without writing (OpOverload.is_view, from the schema)."""
    known = getattr(func, "is_view", None)
    if known is not None:
        return bool(known)
    return any(ret.alias_info is not None and not ret.alias_info.is_write for ret in func._schema.returns)


def _is_matmul_conv(func: torch._ops.OpOverload) -> bool:
    """Whether torch.utils.flop_counter counts FLOPs for the operator: convolutions and matrix products."""
    return func.overloadpacket in flop_registry


class ByteCounter(TorchDispatchMode):
    """Bytes of the tensor inputs and outputs of every aten operator run under it (views excepted), split into
    convolutions/matrix products (`matmul_conv`) and the rest (`other`): each operator reading its operands from memory
    and writing its results back, i.e. an unfused run's traffic, an upper bound on DRAM traffic. An in-place operator
    counts its operand twice (read and written); an indexing operator counts all of its input."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = {"matmul_conv": 0, "other": 0}
        self.ops = {"matmul_conv": 0, "other": 0}
        self.by_op: dict[str, int] = {}

    @staticmethod
    def tensor_bytes(values: Any) -> int:
        leaves, _ = tree_flatten(values)
        return sum(leaf.numel() * leaf.element_size() for leaf in leaves if isinstance(leaf, torch.Tensor))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if _is_view(func) or func.overloadpacket.__name__ in NO_TRAFFIC:
            return out
        moved = self.tensor_bytes((args, kwargs)) + self.tensor_bytes(out)
        kind = "matmul_conv" if _is_matmul_conv(func) else "other"
        self.bytes[kind] += moved
        self.ops[kind] += 1
        name = str(func.overloadpacket.__name__)
        self.by_op[name] = self.by_op.get(name, 0) + moved
        return out

    @property
    def total(self) -> int:
        return sum(self.bytes.values())


def count_iteration(config: dict, device: torch.device, chunk: int | None, network: dict, bf16: bool) -> dict[str, Any]:
    """FLOPs and bytes of one eager outer iteration (no torch.compile, no CUDA graphs) of the config at full size."""
    iteration, _, _ = outer_iteration(config, device, chunk, cuda_graphs=False, network=network, bf16=bf16, compiled=False)
    with FlopCounterMode(display=False) as flops, ByteCounter() as moved:
        iteration()
    synchronize(device)
    top = sorted(moved.by_op.items(), key=lambda item: item[1], reverse=True)[:8]
    return {"flops": flops.get_total_flops(), "bytes": {**moved.bytes, "total": moved.total},
            "ops_counted": dict(moved.ops), "bytes_top_ops": [{"op": op, "bytes": count} for op, count in top]}


def roofline_row(config: dict, measured: dict, counted: dict, flops_extrapolated: float | None, peak: dict | None,
                 ceilings: dict | None = None) -> dict[str, Any]:
    """A config's record: timing, counts, rates, intensities, peak fractions and top kernels."""
    seconds, flops, moved = measured["s_per_iter"], counted["flops"], counted["bytes"]
    row: dict[str, Any] = {
        "name": config["name"], **{key: config[key] for key in ("channels", "resolution", "classes", "ipc", "syn_steps",
                                                                "batch_syn")},
        "batch": min(config["batch_syn"], config["classes"] * config["ipc"]),
        **{key: measured.get(key) for key in ("batch_chunk", "precision", "compiled", "cuda_graphs", "s_per_iter", "times",
                                              "peak_mem_gib", "loss_last")},
        **counted, "flops_extrapolated": flops_extrapolated,
        "tflops_per_s": flops / seconds / 1e12,
        "intensity_flop_per_byte": flops / moved["total"] if moved["total"] else None,
        "intensity_matmul_conv_flop_per_byte": flops / moved["matmul_conv"] if moved["matmul_conv"] else None,
        "bandwidth_tb_s_unfused": moved["total"] / seconds / 1e12,
    }
    if peak:
        ridge = peak["bf16_tflops"] / peak["bandwidth_tb_s"]
        row.update({
            "fraction_of_peak_flops": row["tflops_per_s"] / peak["bf16_tflops"],
            "fraction_of_peak_bandwidth_unfused": row["bandwidth_tb_s_unfused"] / peak["bandwidth_tb_s"],
            "ridge_flop_per_byte": ridge,
            # The roofline's attainable rate at the unfused intensity (a lower bound on the attainable rate: fusion
            # only raises the intensity).
            "attainable_tflops_unfused": min(peak["bf16_tflops"], (row["intensity_flop_per_byte"] or 0) * peak["bandwidth_tb_s"]),
        })
    else:
        row.update({"fraction_of_peak_flops": None, "fraction_of_peak_bandwidth_unfused": None})
    if ceilings:
        row["fraction_of_measured_matmul"] = row["tflops_per_s"] / ceilings["bf16_matmul_tflops"]
        row["fraction_of_measured_copy_unfused"] = row["bandwidth_tb_s_unfused"] / ceilings["copy_tb_s"]
    total_ms = measured.get("device_ms_per_step") or 0.0
    row["device_ms_per_iter"] = total_ms
    # Kernel time over wall time (the profiled iterations against the timed ones): well under 1, the GPU waits for the
    # host (launches, synchronisation); near 1, the kernels themselves are what to speed up.
    row["device_busy_fraction"] = total_ms / 1000 / seconds if total_ms else None
    row["top_kernels"] = [{"name": kernel["name"], "percent": 100 * kernel["ms_per_step"] / total_ms if total_ms else None,
                           "ms_per_iter": kernel["ms_per_step"], "calls_per_iter": kernel["calls_per_step"]}
                          for kernel in measured.get("top_kernels", [])]
    return row


def shrunk(config: dict) -> dict:
    """A config at test size, as peer_speed.py --tiny makes it: 2 syn steps, IPC 1, the batch at most one image per class."""
    return {**config, "syn_steps": 2, "ipc": 1, "batch_syn": min(config["batch_syn"], config["classes"])}


def _percent(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f}%"


def _kernel_name(name: str, width: int = 60) -> str:
    name = name.replace("|", "/").replace("`", "'")
    return name if len(name) <= width else name[: width - 1] + "…"


def markdown_table(record: dict) -> str:
    peak = record.get("peak")
    limits = (f"{peak['matched']}: {peak['bf16_tflops']:g} TFLOP/s dense bf16, {peak['bandwidth_tb_s']:g} TB/s"
              if peak else "no peak known for this device")
    ceilings = record.get("measured_ceilings")
    if ceilings:
        limits += (f"; measured here: {ceilings['bf16_matmul_tflops']:.0f} TFLOP/s bf16 matrix product, "
                   f"{ceilings['copy_tb_s']:.2f} TB/s copy")
    lines = [f"Roofline, one outer iteration — {record.get('gpu') or 'CPU'} ({limits}), torch {record.get('torch')}, "
             f"revision {str(record.get('revision'))[:12]}, `{record.get('command')}`", "",
             "| config | s/it | GFLOP/it | TFLOP/s | % bf16 peak | GB/it unfused (conv+mm / rest) | FLOP/B | "
             "% bandwidth (unfused bound) | GPU busy | top kernels (% of kernel time, calls/it) |",
             "|" + " --- |" * 10]
    for row in record["configs"]:
        if row.get("s_per_iter") is None or "flops" not in row:
            seconds = "—" if row.get("s_per_iter") is None else f"{row['s_per_iter']:.3f}"
            lines.append(f"| {row['name']} | {seconds} | {row.get('note', 'not measured')} |" + " |" * 7)
            continue
        moved = row["bytes"]
        kernels = "; ".join(f"`{_kernel_name(k['name'])}` {_percent(k['percent'] and k['percent'] / 100, 0)}, "
                            f"{k['calls_per_iter']:g}" for k in row["top_kernels"])
        measured = (f" ({_percent(row['fraction_of_measured_matmul'])} of measured)"
                    if row.get("fraction_of_measured_matmul") is not None else "")
        lines.append(
            f"| {row['name']} | {row['s_per_iter']:.3f} | {row['flops'] / 1e9:.0f} | {row['tflops_per_s']:.1f} | "
            f"{_percent(row.get('fraction_of_peak_flops'))}{measured} | {moved['total'] / 1e9:.1f} ({moved['matmul_conv'] / 1e9:.1f} / "
            f"{moved['other'] / 1e9:.1f}) | {row['intensity_flop_per_byte']:.0f} | "
            f"{_percent(row.get('fraction_of_peak_bandwidth_unfused'), 0)} | {_percent(row.get('device_busy_fraction'), 0)} | "
            f"{kernels} |")
    lines += ["", "Bytes: every aten operator's tensor inputs and outputs of an eager, unfused run (an upper bound on DRAM "
              "traffic; the compiled run fuses elementwise work, so a bandwidth share above 100% means fusion saved "
              "traffic). FLOPs: convolutions and matrix products (torch.utils.flop_counter). GPU busy: kernel time of "
              "the profiled iterations over the timed wall time (below 100%: the GPU waits for the host)."]
    return "\n".join(lines)


def merged(paths: list[Path]) -> dict:
    """Several roofline.py files of one GPU model (e.g. the configs of two device calls) as one record: the configs in
    the reference's order (a later file's row replacing an earlier one's), each row with its file's command, revision
    and measured ceilings under "run", and the files under "merged_from"."""
    records = [(path, json.loads(path.read_text())) for path in paths]
    gpus = {record.get("gpu") for _, record in records}
    if len(gpus) != 1:
        sys.exit(f"roofline: the files ran on different GPUs ({', '.join(map(str, gpus))}): keep them apart")
    if len(records) == 1:
        return records[0][1]
    order = [config["name"] for config in json.loads(REFERENCE.read_text())["configs"]]
    provenance = ("command", "revision", "torch", "measured_ceilings")
    rows = {row["name"]: {**row, "run": {key: record.get(key) for key in provenance}}
            for _, record in records for row in record["configs"]}
    return {**records[0][1], "command": " ; ".join(record["command"] for _, record in records),
            "merged_from": [{"file": str(path), **{key: record.get(key) for key in provenance}} for path, record in records],
            "configs": sorted(rows.values(), key=lambda row: order.index(row["name"]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="*", help="config names (default: all nine)")
    parser.add_argument("--iterations", type=int, default=8, help="timed iterations after 2 warm-up ones (median)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"],
                        help="the student's forward precision (default: bf16 on a GPU, as the docs' settings; fp32 on "
                             "the CPU)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction,
                        help="torch.compile the student's steps (default: on a GPU, as the docs' settings; not on the CPU)")
    parser.add_argument("--no-cuda-graphs", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="test size: 2 syn steps, IPC 1 (CPU smoke test)")
    parser.add_argument("--width", type=int, default=NETWORK["width"], help="ConvNet width (the configs: 128)")
    parser.add_argument("--no-extrapolated", action="store_true",
                        help="skip the cross-check of the FLOPs against distill_flops.py's count from one image")
    parser.add_argument("--no-ceilings", action="store_true",
                        help="skip measuring the GPU's bf16 matrix-product rate and copy bandwidth (a few seconds)")
    parser.add_argument("--append", action="store_true", help="keep the configs already in --out that this run does not measure")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--table", type=Path, nargs="+", metavar="FILE.json",
                        help="only print the markdown table of existing files (several: their configs together)")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="FILE.json",
                        help="only write the configs of several files (e.g. of two device calls) as one file, --out")
    args = parser.parse_args()
    if args.table:
        print(markdown_table(merged(args.table)))
        return
    if args.merge:
        write_json(args.out, merged(args.merge))
        print(markdown_table(merged([args.out])))
        print(f"wrote {args.out}")
        return
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("roofline: no CUDA GPU (use --device cpu for a smoke test)")
    bf16 = (args.precision or ("bf16" if device.type == "cuda" else "fp32")) == "bf16"
    compiled = args.compile if args.compile is not None else device.type == "cuda"
    configure_backends(device)
    network = {**NETWORK, "width": args.width}
    reference = json.loads(REFERENCE.read_text())
    order = [config["name"] for config in reference["configs"]]
    if unknown := sorted(set(args.configs or []) - set(order)):
        sys.exit(f"roofline: unknown config(s) {', '.join(unknown)}; known: {', '.join(order)}")
    run = environment()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    peak = peak_for(gpu)
    ceilings = measured_ceilings(device) if device.type == "cuda" and not args.no_ceilings else None
    if ceilings:
        torch.cuda.empty_cache()  # the measurement's 4 GiB back before any config
        print(f"measured ceilings: {ceilings['bf16_matmul_tflops']:.0f} TFLOP/s bf16 matrix product, "
              f"{ceilings['copy_tb_s']:.2f} TB/s copy", flush=True)
    rows = []
    if args.append and args.out.is_file():
        rows = [row for row in json.loads(args.out.read_text())["configs"] if not (args.configs and row["name"] in args.configs)]
    record = {"what": "roofline of one galaxy_distill outer distillation iteration per reference config (bench/roofline.py)",
              "command": run["command"], "revision": git_revision(), "gpu": gpu, "torch": torch.__version__,
              "device": device.type, "peak": peak, "measured_ceilings": ceilings, "network": network, "tiny": args.tiny,
              "settings": {"precision": "bf16" if bf16 else "fp32", "compiled": compiled,
                           "cuda_graphs": not args.no_cuda_graphs and device.type == "cuda", "timed_iterations": args.iterations, "warmup": 2},
              "bytes_note": "bytes = tensor inputs + outputs of every aten operator (views excepted) in one eager, "
                            "uncompiled iteration at the same precision: an upper bound on DRAM traffic without fusion",
              "configs": rows}
    for config in reference["configs"]:
        if args.configs and config["name"] not in args.configs:
            continue
        if args.tiny:
            config = shrunk(config)
        chunk = chunk_for(config)
        began = time.perf_counter()
        try:
            measured = measure(config, args.iterations, device, chunk, not args.no_cuda_graphs, network=network, bf16=bf16,
                               kernels=TOP_KERNELS, compiled=compiled)
        except RuntimeError as exc:  # out of memory included
            measured = None
            row = {"name": config["name"], "gpu": gpu, "s_per_iter": None, "note": f"failed: {exc}"[:500]}
        if measured is not None:
            if device.type == "cuda":
                torch.cuda.empty_cache()
            try:
                counted = count_iteration(config, device, chunk, network, bf16)
                batch = min(config["batch_syn"], config["classes"] * config["ipc"])
                extrapolated = None if args.no_extrapolated else flops_per_iteration(
                    config["channels"], config["resolution"], config["classes"], config["syn_steps"], batch, network)["ours"]
                row = {**roofline_row(config, measured, counted, extrapolated, peak, ceilings), "gpu": gpu}
            except RuntimeError as exc:  # the timing stands without the counts
                row = {"name": config["name"], "gpu": gpu, **measured, "note": f"counting failed: {exc}"[:500]}
        if device.type == "cuda":
            torch.cuda.empty_cache()
        # Compilation, warm-up, timing, profile and counts: what a device call must leave room for.
        row["wall_s"] = time.perf_counter() - began
        rows = [r for r in rows if r["name"] != row["name"]] + [row]
        record["configs"] = sorted(rows, key=lambda r: order.index(r["name"]))
        write_json(args.out, record)
        if "flops" in row:
            print(f"{row['name']:18s} {row['s_per_iter']:.4f} s/it  {row['flops'] / 1e9:9.1f} GFLOP  "
                  f"{row['tflops_per_s']:7.2f} TFLOP/s ({_percent(row['fraction_of_peak_flops'])} of peak)  "
                  f"{row['bytes']['total'] / 1e9:8.2f} GB unfused  {row['intensity_flop_per_byte']:6.1f} FLOP/B  "
                  f"({row['wall_s']:.0f} s in all)", flush=True)
        else:
            print(f"{row['name']:18s} {row['note']}", flush=True)
    print(markdown_table(record))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
