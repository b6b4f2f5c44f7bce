"""STM's self-adaptive schedule on planted probe-loss series, and MTT's fixed one.

tests/test_stm_reference.py holds the decision-for-decision comparison with the STM code's rule.
"""

from __future__ import annotations

import numpy as np

from galaxy_distill.distill.schedule import FixedSchedule, SelfAdaptiveSchedule


def run(schedule: SelfAdaptiveSchedule, series, first_iteration: int = 1) -> list:
    events = []
    for iteration, value in enumerate(series, start=first_iteration):
        schedule.start_epoch(iteration - 1, np.random.default_rng(0))
        events += schedule.observe(iteration, value if schedule.probe_epoch() is not None else None)
    return events


def test_cap_grows_on_a_clearly_decreasing_probe_loss():
    rng = np.random.default_rng(0)
    schedule = SelfAdaptiveSchedule(max_start_epoch=5, max_iterations=10_000, patience=1000)
    decreasing = 1.0 - 0.01 * np.arange(60) + 0.01 * rng.standard_normal(60)
    events = run(schedule, decreasing)
    grows = [e for e in events if e.kind == "grow"]
    assert grows and grows[0].detail["reason"] == "probe loss decreasing"
    assert grows[0].iteration % 10 == 0 and grows[0].detail["r"] < -5 * grows[0].detail["spread"]
    assert schedule.cap == 1 + len(grows) and schedule.probe_series != decreasing.tolist()


def test_cap_grows_on_a_rising_probe_loss():
    schedule = SelfAdaptiveSchedule(max_start_epoch=5, max_iterations=10_000)
    events = run(schedule, 1.0 + 0.01 * np.arange(40))
    assert events and events[0].detail["reason"] == "probe loss rising"


def test_flat_probe_loss_never_grows_and_falls_back_to_fine_tuning():
    rng = np.random.default_rng(1)
    schedule = SelfAdaptiveSchedule(max_start_epoch=5, max_iterations=10_000, patience=200, decay_every=50,
                                    stop_factor=0.5)
    flat = 1.0 + 0.01 * rng.standard_normal(600)
    events = run(schedule, flat[:209])
    assert events == [] and schedule.cap == 1 and schedule.pixel_lr_factor() == 1.0
    # More than `patience` points at a check (the 210th point) starts fine-tuning; probes stop.
    events = run(schedule, flat[209:210], first_iteration=210)
    assert [e.kind for e in events] == ["fine_tune"]
    assert schedule.probe_epoch() is None
    assert schedule.observe(250, None) == [] and schedule.pixel_lr_factor() == 1.0
    schedule.observe(251, None)  # 0-based iteration 250: a multiple of decay_every
    assert schedule.pixel_lr_factor() == 0.8 and not schedule.finished(251)
    for iteration in (301, 351, 401):
        events = schedule.observe(iteration, None)
    assert schedule.pixel_lr_factor() < 0.5 and schedule.finished(401) and [e.kind for e in events] == ["stop"]


def test_start_epochs_cycle_with_the_iteration_and_state_round_trips():
    schedule = SelfAdaptiveSchedule(max_start_epoch=4, max_iterations=100, cap=3)
    rng = np.random.default_rng(0)
    assert [schedule.start_epoch(i, rng) for i in range(7, 13)] == [1, 2, 0, 1, 2, 0]
    copy = SelfAdaptiveSchedule(max_start_epoch=4, max_iterations=100)
    copy.load_state_dict(schedule.state_dict())
    assert copy == schedule


def test_at_the_max_start_epoch_the_series_only_restarts():
    schedule = SelfAdaptiveSchedule(max_start_epoch=2, max_iterations=10_000)
    events = run(schedule, 1.0 - 0.01 * np.arange(300))
    assert schedule.cap == 2 and schedule.probe_epoch() == 2
    assert [e.kind for e in events][:2] == ["grow", "restart"] and {e.kind for e in events[1:]} == {"restart"}


def test_fixed_schedule_draws_uniform_start_epochs():
    schedule = FixedSchedule(max_start_epoch=3, iterations=10)
    rng = np.random.default_rng(0)
    draws = {schedule.start_epoch(i, rng) for i in range(100)}
    assert draws == {0, 1, 2} and schedule.probe_epoch() is None and schedule.finished(10)
