"""Checkpoints of a distillation run: tensors in safetensors, the rest in JSON, both atomic.

The JSON names the SHA-256 of its tensor file, so a torn or corrupt pair is detected; the
previous good pair is kept as a fallback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from galaxy_distill.errors import GalaxyDistillError
from galaxy_distill.store import load_tensors, read_json, save_tensors, write_json

CHECKPOINT = "checkpoint"


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


def save_checkpoint(run_dir: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    current_json, current_tensors = run_dir / f"{CHECKPOINT}.json", run_dir / f"{CHECKPOINT}.safetensors"
    if current_json.is_file() and current_tensors.is_file():
        current_tensors.replace(run_dir / f"{CHECKPOINT}.prev.safetensors")
        current_json.replace(run_dir / f"{CHECKPOINT}.prev.json")
    digest = save_tensors(current_tensors, tensors)
    write_json(current_json, {**meta, "tensors_sha256": digest})


def load_checkpoint(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], list[str]] | None:
    """The newest intact checkpoint (tensors, meta, warnings), or None if the run has none."""
    warnings: list[str] = []
    for stem in (CHECKPOINT, f"{CHECKPOINT}.prev"):
        json_path, tensor_path = run_dir / f"{stem}.json", run_dir / f"{stem}.safetensors"
        if not json_path.is_file():
            continue
        try:
            meta = read_json(json_path)
            tensors = load_tensors(tensor_path, expected_sha256=meta.get("tensors_sha256"))
        except GalaxyDistillError as exc:
            warnings.append(f"skipping damaged checkpoint: {exc}")
            continue
        return tensors, meta, warnings
    if warnings:
        raise GalaxyDistillError(f"{run_dir}: no intact checkpoint to resume from ({'; '.join(warnings)})")
    return None
