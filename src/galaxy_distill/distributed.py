"""Several processes, one job, through PyTorch's own engine: torchrun starts them, torch.distributed links them.

Each process (rank) learns its place from torchrun's environment (RANK, WORLD_SIZE,
LOCAL_RANK). On GPUs rank r computes on cuda:LOCAL_RANK and tensors travel through NCCL;
barriers and small Python objects (results, manifest entries) go through gloo on the CPU,
as everything does in a CPU run. Outside torchrun no process group is started and every
helper acts as for a single process, so the same code runs alone unchanged.

What is split: expert groups (experts/train.py), the rows of every inner batch of the
distillation (Shard), evaluation networks (evaluate/train.py).
Every rank holds the same state; only rank 0 writes files.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed

from galaxy_distill.errors import GalaxyDistillError

T = TypeVar("T")

COLLECTIVE_TIMEOUT = timedelta(hours=24)
"""A rank may wait at a collective while the others finish a whole expert group or evaluation network; a rank
that dies does not leave the others waiting this long, torchrun ends them."""


@dataclass(frozen=True)
class Shard:
    """This process's share of every inner batch when several processes split it (torch.distributed).

    Each process takes a contiguous block of the batch rows; per-step gradient sums,
    Hessian-vector products and pixel gradients are summed over processes, so every
    process follows the same student trajectory and gets the full gradients.
    """

    rank: int = 0
    size: int = 1

    def rows(self, batch_size: int) -> tuple[int, int]:
        return batch_size * self.rank // self.size, batch_size * (self.rank + 1) // self.size

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.size > 1:
            torch.distributed.all_reduce(tensor)
        return tensor


def world_size() -> int:
    return torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1


def rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def is_main() -> bool:
    """Whether this process is rank 0, the one that writes files and prints."""
    return rank() == 0


def shard() -> Shard:
    """This process's share of every inner batch of the distillation."""
    return Shard(rank(), world_size())


def progress_disabled() -> bool | None:
    """tqdm's `disable`: automatic (a bar only on a terminal) on rank 0, no bar on the other ranks."""
    return None if is_main() else True


def setup(device: torch.device) -> torch.device:
    """Join torchrun's process group (once per process) and return the device this rank computes on.

    Alone (no WORLD_SIZE above 1 and no group) the device is returned as it is. With several
    processes a CUDA device becomes cuda:LOCAL_RANK, so each rank has its own GPU.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1 and not torch.distributed.is_initialized():
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", rank()))
    if device.type == "cuda":
        if device.index is not None:
            raise GalaxyDistillError(f"device '{device}': with several processes each takes cuda:LOCAL_RANK; "
                                     f"use --device cuda or auto")
        if local_rank >= torch.cuda.device_count():
            raise GalaxyDistillError(f"process of local rank {local_rank} needs GPU cuda:{local_rank}, but this machine "
                                     f"has {torch.cuda.device_count()}; start at most that many processes per machine")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        # NVLink multicast (NVLS) can put a shared host's GPUs out of service; it stays off unless asked for.
        os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
        torch.distributed.init_process_group("cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo",
                                             timeout=COLLECTIVE_TIMEOUT)
        atexit.register(teardown)
    elif device.type == "cuda" and "nccl" not in torch.distributed.get_backend():
        raise GalaxyDistillError(f"the process group uses {torch.distributed.get_backend()}, which cannot carry CUDA "
                                 f"tensors; start it with NCCL or use --device cpu")
    return device


def teardown() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def all_gather(value: T) -> list[T]:
    """Every rank's `value` (a small picklable object), in rank order, on every rank."""
    if not torch.distributed.is_initialized():
        return [value]
    gathered: list[T] = [None] * world_size()  # type: ignore[list-item]
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def broadcast_flag(value: bool) -> bool:
    """Rank 0's value on every rank, for decisions that must agree (e.g. one taken by rank 0's clock)."""
    return bool(all_gather(value)[0]) if world_size() > 1 else value


def rounds(items: Sequence[T]) -> Iterator[T | None]:
    """This rank's item of each round of `world_size()` consecutive items; None where a last round runs short.

    Every rank sees the same number of rounds, so a collective after each round (gathering
    its results) is reached by all ranks.
    """
    size, me = world_size(), rank()
    for first in range(0, len(items), size):
        mine = first + me
        yield items[mine] if mine < len(items) else None


def launch(nproc: int) -> None:
    """Run the current command in `nproc` processes: re-launch it through torchrun unless already inside one.

    Inside torchrun (direct `torchrun -m galaxy_distill.cli ...`, or the re-launched command)
    this returns at once, ranks above 0 printing nothing to standard output. Otherwise, with
    nproc above 1, the same command line runs under torch.distributed.run and this process
    exits with its outcome: the exit code of the first process that failed, whose one-line
    error is already printed.
    """
    if nproc < 1:
        raise GalaxyDistillError(f"--nproc must be at least 1, got {nproc}")
    if "WORLD_SIZE" in os.environ:
        size = int(os.environ["WORLD_SIZE"])
        if nproc not in (1, size):
            raise GalaxyDistillError(f"--nproc {nproc} disagrees with the {size} processes torchrun started; drop --nproc")
        if int(os.environ.get("RANK", "0")) != 0:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
        return
    if nproc == 1:
        return
    sys.exit(_run_under_torchrun(nproc, sys.argv[1:]))


def _run_under_torchrun(nproc: int, arguments: list[str]) -> int:
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    # The processes share the cores; torchrun alone would give each one thread and print a notice.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    # The launcher's own log lines and traceback would bury the failed process's one-line error.
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("torch.distributed.elastic", "torch.distributed.launcher")):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    # torchrun would leave a log directory in the system's temporary folder at every launch.
    with tempfile.TemporaryDirectory(prefix="galaxy_distill_torchrun_") as logs:
        try:
            # "--" ends torchrun's own options: ours (--run, --nproc) would otherwise pass for abbreviations of its.
            torchrun.run(torchrun.parse_args(["--standalone", f"--nproc-per-node={nproc}", f"--log-dir={logs}", "-m", "--",
                                              "galaxy_distill.cli", *arguments]))
        except ChildFailedError as failed:
            failed_rank, failure = failed.get_first_failure()
            if failure.exitcode > 0:
                return failure.exitcode
            print(f"error: the process of rank {failed_rank} was ended by signal {failure.signal_name()}", file=sys.stderr)
            return 1
    return 0
