"""Checkpoints of a distillation run: tensors in safetensors, the rest in JSON, every file written atomically.

The current checkpoint's JSON names its tensor file (one per saved iteration) and that file's SHA-256, so
a torn, truncated or corrupt pair is detected; the previous intact pair is kept as
the previous one (file names: rundir.RunDir). A new tensor file is written before the JSON that names it, and the
current JSON becomes the previous one only if it is intact, so whenever the process is
killed at least one intact pair stays on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from galaxy_distill.errors import GalaxyDistillError
from galaxy_distill.rundir import RunDir
from galaxy_distill.atomic_io import file_matches, load_tensors, read_json, save_tensors, write_json


def optimizer_to_store(prefix: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state into tensors and JSON metadata."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for param_id, entries in state["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{param_id}.{key}"] = value
            else:
                plain.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "plain_state": plain}


def optimizer_from_store(prefix: str, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                         meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            _, param_id, key = name.split(".", 2)
            state.setdefault(int(param_id), {})[key] = value
    for param_id, entries in meta["plain_state"].items():
        state.setdefault(int(param_id), {}).update(entries)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _read_meta(json_path: Path) -> dict[str, Any]:
    meta = read_json(json_path)
    if not isinstance(meta, dict) or not isinstance(meta.get("tensors_file"), str) or "tensors_sha256" not in meta:
        raise GalaxyDistillError(f"{json_path}: not a checkpoint written by galaxy-distill")
    if Path(meta["tensors_file"]).name != meta["tensors_file"]:
        raise GalaxyDistillError(f"{json_path}: tensors_file must be a file name in the run directory")
    return meta


def _intact_meta(json_path: Path) -> dict[str, Any] | None:
    """The checkpoint's metadata if it and the tensor file it names are intact, else None."""
    if not json_path.is_file():
        return None
    try:
        meta = _read_meta(json_path)
    except GalaxyDistillError:
        return None
    return meta if file_matches(json_path.parent / meta["tensors_file"], meta["tensors_sha256"]) else None


def save_checkpoint(run: RunDir, iteration: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write the checkpoint of `iteration`; the current one, if intact, becomes the previous one."""
    tensors_path = run.checkpoint_tensors(iteration)
    digest = save_tensors(tensors_path, tensors)
    replaced = _intact_meta(run.checkpoint)
    moved = replaced is not None and replaced["tensors_file"] != tensors_path.name
    if moved:
        run.checkpoint.replace(run.previous_checkpoint)
    write_json(run.checkpoint, {**meta, "tensors_file": tensors_path.name, "tensors_sha256": digest})
    previous = replaced if moved else _intact_meta(run.previous_checkpoint)  # the moved one was just checked
    referenced = {tensors_path.name} | ({previous["tensors_file"]} if previous is not None else set())
    for stale in run.checkpoint_tensor_files():
        if stale.name not in referenced:
            stale.unlink(missing_ok=True)


def load_checkpoint(run: RunDir) -> tuple[dict[str, torch.Tensor], dict[str, Any], list[str]] | None:
    """The newest intact checkpoint (tensors, meta, warnings about damaged ones), or None if the run has none."""
    warnings: list[str] = []
    for json_path in (run.checkpoint, run.previous_checkpoint):
        if not json_path.is_file():
            continue
        try:
            meta = _read_meta(json_path)
            tensors = load_tensors(run.path / meta["tensors_file"], expected_sha256=meta["tensors_sha256"])
        except GalaxyDistillError as exc:
            warnings.append(f"skipping damaged checkpoint: {exc}")
            continue
        return tensors, meta, warnings
    if warnings:
        raise GalaxyDistillError(f"{run.path}: no intact checkpoint to resume from ({'; '.join(warnings)})")
    return None
