"""Our STM schedule against a transcription of the STM code's rule, fed the same probe-loss series.

`reference_stm` transcribes the stage loop of HaowenGuan/Galaxy-Dataset-Distillation's distill.py
(stagewise `auto-max-epoch`, cycle sampling, global step size) statement by statement, with the
distillation update itself left out: it consumes one probe value per iteration while not fine-tuning
and records its start epochs, pixel learning rates and grow / fine-tune / stop decisions. The series
are recorded probe losses of real runs (tests/data) and planted ones.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from galaxy_distill.distill.schedule import SelfAdaptiveSchedule

DATA = Path(__file__).parent / "data"


def reference_stm(probe_values: list[float], iterations: int, lr_img: float, max_start_epoch: int,
                  sigma_threshold: float = 5, max_duration: int = 1000, min_duration: int = 1, init_epoch: int = 1) -> dict:
    values = iter(probe_values)
    starts, pixel_lrs, decisions = [], [], []
    test_loss = []
    passed = fine_tuning = False
    start_epoch_cap = init_epoch
    lr = lr_img
    for it in range(iterations):
        start_epoch = it % int(start_epoch_cap)
        if not fine_tuning:  # "Collect Next Epoch loss"
            test_loss.append(next(values))
        starts.append(start_epoch)
        pixel_lrs.append(lr)  # optimizer_img.step() uses this rate
        cur_duration = len(test_loss)
        if cur_duration >= min_duration and cur_duration % 10 == 0:
            r = np.corrcoef(test_loss, list(range(cur_duration)))[0, 1]
            sigma = np.sqrt(1 / (cur_duration - 2))
            if not passed and not fine_tuning:
                fine_tuning = cur_duration > max_duration
                if fine_tuning:
                    decisions.append((it + 1, "fine_tune", start_epoch_cap))
                if not fine_tuning:
                    passed = r < -(sigma_threshold * sigma)
            if fine_tuning and it % 50 == 0:
                lr *= 0.8
                if lr < 50:
                    decisions.append((it + 1, "stop", start_epoch_cap))
                    break
            elif not passed and cur_duration % 20 == 0:
                pass  # "[Pending]"
            elif passed or r > 3 * sigma:
                if fine_tuning:
                    raise AssertionError("the STM code grows while fine-tuning here and then never decays; series "
                                         "that reach this branch are outside what the comparison covers")
                test_loss = []
                passed = False
                grown = start_epoch_cap + 1 <= max_start_epoch
                if grown:
                    start_epoch_cap += 1
                decisions.append((it + 1, "grow" if grown else "restart", start_epoch_cap))
    return {"starts": starts, "pixel_lrs": pixel_lrs, "decisions": decisions}


def ours(probe_values: list[float], iterations: int, lr_img: float, max_start_epoch: int, **settings: float) -> dict:
    """Our schedule driven the way distill/run.py drives it, on the same values."""
    schedule = SelfAdaptiveSchedule(max_start_epoch=max_start_epoch, max_iterations=iterations,
                                    stop_factor=50 / lr_img, **settings)
    values = iter(probe_values)
    starts, pixel_lrs, decisions = [], [], []
    iteration = 0
    rng = np.random.default_rng(0)
    while not schedule.finished(iteration):
        starts.append(schedule.start_epoch(iteration, rng))
        probe = next(values) if schedule.probe_epoch() is not None else None
        pixel_lrs.append(lr_img * schedule.pixel_lr_factor())
        iteration += 1
        for event in schedule.observe(iteration, probe):
            decisions.append((event.iteration, event.kind, schedule.cap))
    return {"starts": starts, "pixel_lrs": pixel_lrs, "decisions": decisions}


def recorded(name: str) -> list[float]:
    return [float(row["probe_loss"]) for row in recorded_rows(name)]


def recorded_rows(name: str) -> list[dict[str, str]]:
    with open(DATA / f"stm_probe_{name}.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def planted(seed: int) -> list[float]:
    """Phases the rule must tell apart: a steep fall, a slow rise, long flat noise (fine-tuning), more noise."""
    rng = np.random.default_rng(seed)
    fall = 1.0 - 0.02 * np.arange(40) + 0.01 * rng.standard_normal(40)
    rise = 0.5 + 0.004 * np.arange(60) + 0.01 * rng.standard_normal(60)
    flat = 0.7 + 0.01 * rng.standard_normal(3000)
    return np.concatenate([fall, rise, flat]).tolist()


def assert_same(reference: dict, mine: dict, lr_img: float) -> None:
    assert mine["decisions"] == reference["decisions"]
    assert mine["starts"] == reference["starts"]
    np.testing.assert_allclose(mine["pixel_lrs"], reference["pixel_lrs"], rtol=1e-12)


@pytest.mark.parametrize("name", ["simzoo128_ipc10", "cifar10_zca_ipc10"])
def test_recorded_probe_series_give_the_reference_decisions(name: str) -> None:
    series = recorded(name)
    reference = reference_stm(series, len(series), lr_img=1000.0, max_start_epoch=20)
    assert_same(reference, ours(series, len(series), lr_img=1000.0, max_start_epoch=20), 1000.0)
    # The run that recorded the series grew its pool at the same iterations (simzoo-128: 3 times in 300).
    rows = recorded_rows(name)
    growths = [(int(row["iteration"]), int(row["cap_after"])) for before, row in zip(rows, rows[1:])
               if row["cap_after"] != before["cap_after"]]
    assert [(iteration, cap) for iteration, kind, cap in reference["decisions"]] == growths


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_start_epoch", [2, 20])
def test_planted_series_through_growth_fine_tuning_and_stop_give_the_reference_decisions(seed: int, max_start_epoch: int) -> None:
    series = planted(seed)
    reference = reference_stm(series, 4000, lr_img=1000.0, max_start_epoch=max_start_epoch)
    mine = ours(series, 4000, lr_img=1000.0, max_start_epoch=max_start_epoch)
    assert_same(reference, mine, 1000.0)
    kinds = [kind for _, kind, _ in reference["decisions"]]
    assert "grow" in kinds and kinds[-2:] == ["fine_tune", "stop"]
    assert len(mine["starts"]) < 4000  # stopped by itself


def test_a_rise_is_tested_only_at_every_other_check_as_in_the_stm_code() -> None:
    rising = (1.0 + 0.01 * np.arange(40)).tolist()
    reference = reference_stm(rising, 40, lr_img=1000.0, max_start_epoch=5)
    assert [(iteration, kind) for iteration, kind, _ in reference["decisions"]][:1] == [(30, "grow")]
    mine = ours(rising, 40, lr_img=1000.0, max_start_epoch=5)
    assert_same(reference, mine, 1000.0)
    # n = 20 points of a rising series: the STM code only logs "[Pending]", so nothing grows at a 20th point.
    schedule = SelfAdaptiveSchedule(max_start_epoch=5, max_iterations=100, check_every=10)
    schedule.probe_series = rising[:19]
    assert schedule.observe(20, rising[19]) == []
