"""The distillation engine end to end on real galaxies: it helps, and it resumes exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from shared_paths import GZ1_ROOT

from galaxy_distill.settings import settings_differences
from galaxy_distill.data import PrepareSettings, prepare
from galaxy_distill.distill.matching import InnerLoop
from galaxy_distill.distill.run import distill
from galaxy_distill.rundir import load_synthetic
from galaxy_distill.distill.settings import DistillSettings
from galaxy_distill.evaluate.baselines import baseline_set
from galaxy_distill.evaluate.train import TrainingProtocol, evaluate_image_set
from galaxy_distill.experts import ExpertSettings, ExpertStore, train_experts


@pytest.fixture(scope="module")
def galaxies(tmp_path_factory):
    """Real SDSS galaxies, 3 classes at 16 px, 300 images each (a test split in which accuracies a few points apart
    differ by more than a few images), and a few short experts trained on them."""
    root = tmp_path_factory.mktemp("engine")
    dataset = prepare(PrepareSettings(dataset="gz1-sdss", root=GZ1_ROOT, size=16, per_class=300, seed=0), out_dir=root / "data")
    settings = ExpertSettings(dataset=dataset.name, width=32, num_experts=3, epochs=8, batch_size=32, parallel=3,
                              device="cpu")
    train_experts(settings, dataset, root / "experts")
    return root, dataset, ExpertStore(root / "experts")


def distill_settings(root, **overrides) -> DistillSettings:
    values = dict(dataset="gz1-sdss", experts=root / "experts", method="mtt", ipc=1, syn_steps=8, max_start_epoch=4,
                  iterations=60, lr_img=100.0, checkpoint_every=20, snapshot_every=1000, device="cpu")
    return DistillSettings(**{**values, **overrides})


RANDOM_DRAWS = 6
"""Draws of random real images the distilled set is compared with: with one image per class the test accuracy moves by
several points from one draw to the next, so the baseline is their mean."""


def test_distilled_set_beats_random_real_images_of_the_same_size(galaxies):
    root, dataset, store = galaxies
    settings = distill_settings(root, iterations=200)
    distill(settings, dataset, store, root / "run-mtt")
    images, labels, step_size, _ = load_synthetic(root / "run-mtt")
    test = {"test": dataset.tensors("test")}

    def accuracy(train_images, train_labels, lr):
        summary = evaluate_image_set(store.model_spec, (train_images, train_labels), test,
                                     TrainingProtocol(epochs=200, lr=lr), 5, 0, torch.device("cpu"))
        return summary["test"].mean

    distilled = accuracy(images, labels, step_size)
    random_real = [accuracy(*baseline_set("random", dataset, 1, seed=draw), 0.01) for draw in range(RANDOM_DRAWS)]
    # The run's own starting images are one more such draw: compared alone, a lucky or unlucky start would decide.
    assert distilled > np.mean(random_real) + 0.02, (distilled, random_real)


def test_interrupted_run_resumes_to_identical_images(galaxies, monkeypatch):
    root, dataset, store = galaxies
    settings = distill_settings(root, method="stm", iterations=10, checkpoint_every=3, stm_patience=4, stm_decay_every=2,
                                stm_stop_factor=0.5)
    distill(settings, dataset, store, root / "straight")

    calls = {"count": 0}
    original = InnerLoop.loss_and_gradients

    def interrupted(self, *args, **kwargs):
        calls["count"] += 1
        if calls["count"] == 5:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(InnerLoop, "loss_and_gradients", interrupted)
    with pytest.raises(KeyboardInterrupt):
        distill(settings, dataset, store, root / "resumed")
    monkeypatch.setattr(InnerLoop, "loss_and_gradients", original)
    result = distill(settings, dataset, store, root / "resumed", resume=True)
    straight, resumed = load_synthetic(root / "straight"), load_synthetic(root / "resumed")
    assert result.iterations == 10
    assert torch.equal(straight[0], resumed[0]) and straight[2] == resumed[2]
    assert (root / "straight" / "metrics.csv").read_text().count("\n") == (root / "resumed" / "metrics.csv").read_text().count("\n")


def test_a_stored_run_differs_only_where_a_setting_really_changed(tmp_path):
    now = json.loads(DistillSettings(dataset="d", experts=tmp_path).model_dump_json())
    older_version = {name: value for name, value in now.items() if name != "precision"}
    assert settings_differences(DistillSettings, older_version, now) == []
    assert settings_differences(DistillSettings, {**now, "lr_img": 1000.0}, now) == ["lr_img: 1000.0 there, 100.0 now"]
    assert settings_differences(DistillSettings, {**older_version, "retired": 1}, now) == ["retired: unknown setting there"]
    bf16 = json.loads(DistillSettings(dataset="d", experts=tmp_path, precision="bf16").model_dump_json())
    assert settings_differences(DistillSettings, older_version, bf16) == ["precision: 'fp32' there, 'bf16' now"]


def test_a_time_limit_stops_the_run_and_resume_finishes_it_identically(galaxies):
    from galaxy_distill.evaluate.settings import EvaluateSettings
    from galaxy_distill.pipeline import evaluate_stage

    root, dataset, store = galaxies
    settings = distill_settings(root, iterations=6, checkpoint_every=4)
    straight = distill(settings, dataset, store, root / "limit-straight")
    limited = distill(settings.model_copy(update={"time_limit": 1e-6}), dataset, store, root / "limited")
    assert limited.stopped_at_time_limit and limited.iterations == 1 and not straight.stopped_at_time_limit
    assert limited.final_path.is_file() and (root / "limited" / "checkpoint.json").is_file()

    resumed = distill(settings, dataset, store, root / "limited", resume=True)  # no limit now: the setting may change
    assert resumed.iterations == 6 and not resumed.stopped_at_time_limit
    for final in (False, True):
        assert torch.equal(load_synthetic(root / "limited", final)[0], load_synthetic(root / "limit-straight", final)[0])
    longer = distill(settings.model_copy(update={"iterations": 8}), dataset, store, root / "limited", resume=True)
    assert longer.iterations == 8

    outcome = evaluate_stage(EvaluateSettings(run=root / "limited", selection="final", networks=1, epochs=2, device="cpu"),
                             dataset=dataset)
    assert outcome.output == root / "limited" / "evaluation-final.json"
    assert [entry["selection"] for entry in outcome.results] == ["final"]
