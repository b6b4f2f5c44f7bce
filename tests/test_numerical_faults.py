"""Numerical faults in distillation: detected, rolled back exactly, the offending learning rate halved, logged;
repeated faults stop the run with one clear error; the remedy keeps resumption bit-identical.

Faults are injected by wrapping InnerLoop.loss_and_gradients (NaN loss, infinite pixel gradient)
or provoked for real (a huge --lr-lr drives the learned step size below zero, NaN expert
trajectories poison every loss). Anything the reference MTT would carry on with is no fault.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from reliability_helpers import (
    DATASET,
    TinyWorkspace,
    copy_workspace,
    record,
    run_main,
)

from galaxy_distill.data.registry import load_prepared
from galaxy_distill.distill import run as distill_run
from galaxy_distill.distill.matching import InnerLoop, MatchingGradients
from galaxy_distill.distill.faults import MAX_FAULTS_IN_A_ROW
from galaxy_distill.distill.run import distill
from galaxy_distill.distill.settings import DistillSettings
from galaxy_distill.experts import ExpertStore
from galaxy_distill.atomic_io import read_json, save_tensors, write_json


@pytest.fixture
def workspace(tiny: TinyWorkspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TinyWorkspace:
    return copy_workspace(tiny, tmp_path / "home", monkeypatch)


def settings_for(workspace: TinyWorkspace, **changes: object) -> DistillSettings:
    values = {"dataset": DATASET, "experts": workspace.experts, "method": "mtt", "iterations": 4, "syn_steps": 2,
              "max_start_epoch": 2, "lr_img": 100.0, "lr_lr": 1e-6, "checkpoint_every": 1, "snapshot_every": 100, "device": "cpu", **changes}
    return DistillSettings(**values)


def run_distill(workspace: TinyWorkspace, run_dir: Path, resume: bool = False, **changes: object) -> None:
    distill(settings_for(workspace, **changes), load_prepared(DATASET), ExpertStore(workspace.experts), run_dir, resume=resume)


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def faults(run_dir: Path) -> list[dict]:
    return [event for event in read_json(run_dir / "stages.json") if event["kind"] == "fault"]


class Injector:
    """Wraps InnerLoop.loss_and_gradients: remembers the images each call saw and spoils chosen calls."""

    def __init__(self, spoil: dict[int, Callable[[MatchingGradients], MatchingGradients]]) -> None:
        self.spoil = spoil
        self.seen: list[torch.Tensor] = []
        self.original = InnerLoop.loss_and_gradients

    def install(self, monkeypatch: pytest.MonkeyPatch) -> Injector:
        injector = self

        def wrapped(inner: InnerLoop, images: torch.Tensor, *args: object) -> MatchingGradients:
            injector.seen.append(images.detach().clone())
            gradients = injector.original(inner, images, *args)
            change = injector.spoil.get(len(injector.seen))
            return change(gradients) if change is not None else gradients

        monkeypatch.setattr(InnerLoop, "loss_and_gradients", wrapped)
        return self


def nan_loss(gradients: MatchingGradients) -> MatchingGradients:
    return replace(gradients, loss=torch.tensor(float("nan")))


def infinite_pixels(gradients: MatchingGradients) -> MatchingGradients:
    return replace(gradients, images=gradients.images * float("inf"))


def test_nan_loss_is_rolled_back_and_both_rates_halved(workspace: TinyWorkspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    injector = Injector({2: nan_loss, 3: nan_loss}).install(monkeypatch)
    run_distill(workspace, tmp_path / "run")
    found = faults(tmp_path / "run")
    record("numerical faults", "NaN loss injected at calls 2 and 3", f"{len(found)} faults, rolled back, run finished",
           injected=2, detected=len(found))
    assert [event["iteration"] for event in found] == [2, 2]
    assert all(event["detail"]["fault"] == "non-finite matching loss (nan)" for event in found)
    assert [event["detail"]["lowered"] for event in found] == [{"lr_img": 50.0, "lr_lr": 5e-07}, {"lr_img": 25.0, "lr_lr": 2.5e-07}]
    rows = metric_rows(tmp_path / "run")
    assert [int(row["faults"]) for row in rows] == [0, 2, 0, 0]
    assert [float(row["pixel_lr"]) for row in rows] == [100.0, 25.0, 25.0, 25.0]
    assert torch.equal(injector.seen[1], injector.seen[2]) and torch.equal(injector.seen[2], injector.seen[3])
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: iteration 2:")]
    assert len(warnings) == 2 and "rolled back, lowered lr_img to 50, lr_lr to 5e-07" in warnings[0]


def test_infinite_pixel_gradient_is_undone_exactly(workspace: TinyWorkspace, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    injector = Injector({3: infinite_pixels}).install(monkeypatch)
    run_distill(workspace, tmp_path / "run")
    found = faults(tmp_path / "run")
    record("numerical faults", "infinite pixel gradient injected at call 3", f"{len(found)} fault, rolled back, run finished",
           injected=1, detected=len(found))
    assert len(found) == 1 and found[0]["iteration"] == 3
    assert found[0]["detail"]["fault"] == "non-finite pixel gradient"
    assert found[0]["detail"]["lowered"] == {"lr_img": 50.0, "lr_lr": 5e-07}
    # The retry starts from exactly the images the faulty update had started from.
    assert torch.equal(injector.seen[2], injector.seen[3])
    checkpoint = read_json(tmp_path / "run" / "checkpoint.json")
    assert checkpoint["lr_factors"] == {"lr_img": 0.5, "lr_lr": 0.5}
    assert float(metric_rows(tmp_path / "run")[-1]["pixel_lr"]) == 50.0


def test_negative_step_size_is_caught_and_resume_after_it_is_bit_identical(workspace: TinyWorkspace, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # On this tiny set the step-size gradient is in the hundreds: SGD at lr_lr 1e-4 takes 0.01 below zero at once.
    run_distill(workspace, tmp_path / "whole", lr_lr=1e-4)
    found = faults(tmp_path / "whole")
    record("numerical faults", "--lr-lr 1e-4 (learned step size driven below zero)", f"{len(found)} faults, lr_lr lowered "
           f"to {found[-1]['detail']['lowered']['lr_lr']:.3g}", injected=0, detected=len(found))
    assert [event["detail"]["lowered"] for event in found[:2]] == [{"lr_lr": 5e-05}, {"lr_lr": 2.5e-05}]
    assert all(event["detail"]["fault"].endswith("is not positive") for event in found)
    assert len(metric_rows(tmp_path / "whole")) == 4

    saved = distill_run.save_checkpoint

    def save_then_stop(run_dir: Path, iteration: int, *args: object) -> None:
        saved(run_dir, iteration, *args)
        if iteration == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(distill_run, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_distill(workspace, tmp_path / "interrupted", lr_lr=1e-4)
    monkeypatch.setattr(distill_run, "save_checkpoint", saved)
    run_distill(workspace, tmp_path / "interrupted", resume=True, lr_lr=1e-4)

    whole, resumed = tmp_path / "whole", tmp_path / "interrupted"
    assert (whole / "synthetic.safetensors").read_bytes() == (resumed / "synthetic.safetensors").read_bytes()
    assert read_json(whole / "stages.json") == read_json(resumed / "stages.json")
    strip = [{key: value for key, value in row.items() if key != "seconds"} for row in metric_rows(whole)]
    assert strip == [{key: value for key, value in row.items() if key != "seconds"} for row in metric_rows(resumed)]
    record("numerical faults", "resume after faults (interrupted at iteration 2)", "bit-identical to the uninterrupted run")


def test_repeated_faults_stop_with_one_clear_error(workspace: TinyWorkspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    Injector({call: nan_loss for call in range(1, 100)}).install(monkeypatch)
    run_dir = tmp_path / "run"
    result = run_main(["distill", "--dataset", DATASET, "--experts", str(workspace.experts), "--method", "mtt", "--iterations", "3",
                       "--syn-steps", "2", "--max-start-epoch", "1", "--device", "cpu", "--out", str(run_dir)], monkeypatch, capsys)
    lines = result.error_lines
    record("numerical faults", "NaN loss injected at every call", lines[-1], injected=MAX_FAULTS_IN_A_ROW,
           detected=len(faults(run_dir)), exit_code=result.exit_code)
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert len(lines) == MAX_FAULTS_IN_A_ROW + 1
    assert all(line.startswith("warning: iteration 1: non-finite matching loss") for line in lines[:-1])
    assert lines[-1].startswith("error: iteration 1: 5 numerical faults in a row (last: non-finite matching loss (nan))")
    assert len(faults(run_dir)) == MAX_FAULTS_IN_A_ROW
    assert not (run_dir / "synthetic.safetensors").exists()


@pytest.mark.parametrize(("case", "args", "spoil_store", "expected"), [
    ("--lr-lr 1 (step size driven below zero)", ["--lr-lr", "1"], False, "(last: learned step size"),
    ("expert trajectories full of NaN", [], True, "(last: non-finite matching loss (nan))"),
])
def test_real_faults_stop_the_run_instead_of_producing_garbage(case: str, args: list[str], spoil_store: bool, expected: str,
                                                               workspace: TinyWorkspace, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    if spoil_store:
        manifest = read_json(workspace.experts / "experts.json")
        for entry in manifest["experts"]:
            entry["sha256"] = save_tensors(workspace.experts / entry["file"],
                                           {"trajectory": torch.full((4, manifest["param_count"]), float("nan"))})
        write_json(workspace.experts / "experts.json", manifest)
    result = run_main(["distill", "--dataset", DATASET, "--experts", str(workspace.experts), "--method", "mtt", "--iterations", "3",
                       "--syn-steps", "2", "--max-start-epoch", "1", "--device", "cpu", "--out", str(tmp_path / "run"), *args],
                      monkeypatch, capsys)
    record("numerical faults", case, result.error_lines[-1], injected=0, detected=len(faults(tmp_path / "run")),
           exit_code=result.exit_code)
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert result.error_lines[-1].startswith("error: iteration 1: 5 numerical faults in a row " + expected)
    assert not (tmp_path / "run" / "synthetic.safetensors").exists()


@pytest.mark.parametrize(("case", "args", "expected"), [
    ("experts --lr 1e30", ["experts", "--dataset", DATASET, "--width", "8", "--depth", "2", "--epochs", "2", "--num-experts", "1",
                          "--lr", "1e30", "--device", "cpu", "--out", "{tmp}/experts"], "expert training diverged (loss nan)"),
    ("evaluate --lr 1e8", ["evaluate", "--dataset", DATASET, "--baselines", "random", "--ipc", "2", "--networks", "1", "--epochs",
                           "4", "--lr", "1e8", "--device", "cpu", "--out", "{tmp}/evaluation.json"], "diverged: loss nan"),
])
def test_diverging_training_is_an_error_not_a_number(case: str, args: list[str], expected: str, workspace: TinyWorkspace,
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    result = run_main([arg.format(tmp=tmp_path) for arg in args], monkeypatch, capsys)
    record("numerical faults", case, result.error_lines[-1] if result.error_lines else "", injected=0, exit_code=result.exit_code)
    assert result.exit_code == 2 and len(result.error_lines) == 1 and expected in result.error_lines[0]
    assert not (tmp_path / "evaluation.json").exists()
