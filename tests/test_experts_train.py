"""Expert steps: every way of running them computes the same gradients, and a store made before a setting existed resumes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from compile_support import CAN_COMPILE_ON_CPU
from shared_paths import GZ1_ROOT

import galaxy_distill.experts.train as training
from galaxy_distill.data.augment import DiffAugment
from galaxy_distill.data.settings import PrepareSettings
from galaxy_distill.data.registry import prepare
from galaxy_distill.errors import GalaxyDistillError
from galaxy_distill.experts import ExpertSettings, ExpertStore, train_experts
from galaxy_distill.experts.train import ExpertStep, _epoch_draws
from galaxy_distill.models.convnet import ConvNet
from galaxy_distill.models.functional import FlatParams
from galaxy_distill.atomic_io import read_json, write_json


def stacked_problem(experts: int = 3, batch: int = 8):
    flat_view = FlatParams(ConvNet(channels=3, num_classes=4, image_size=16, depth=2, width=16, norm="instancenorm"))
    generator = torch.Generator().manual_seed(0)
    flats = torch.stack([flat_view.init_flat(generator) for _ in range(experts)])
    images = torch.randn(experts, batch, 3, 16, 16, generator=generator)
    labels = torch.randint(0, 4, (experts, batch), generator=generator)
    return flat_view, flats, images, labels


def test_each_expert_gets_the_gradient_of_its_own_batch_alone():
    flat_view, flats, images, labels = stacked_problem()
    step = ExpertStep(flat_view)
    stacked, loss = step(flats, images, labels)
    assert stacked.shape == flats.shape and torch.isfinite(loss)
    alone, _ = step(flats[1:2], images[1:2], labels[1:2])
    torch.testing.assert_close(stacked[1:2], alone)


def test_bf16_expert_gradients_follow_fp32():
    """Stated tolerance of bf16 expert steps: cosine >= 0.99 with the fp32 gradient of each expert, loss within 2 %."""
    flat_view, flats, images, labels = stacked_problem()
    exact, exact_loss = ExpertStep(flat_view)(flats, images, labels)
    approximate, approximate_loss = ExpertStep(flat_view, precision="bf16-full")(flats, images, labels)
    assert approximate.dtype == torch.float32 and approximate_loss.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(approximate, exact, dim=1).min() >= 0.99
    torch.testing.assert_close(approximate_loss, exact_loss, rtol=2e-2, atol=0)


@pytest.mark.skipif(not CAN_COMPILE_ON_CPU, reason="torch.compile on CPU needs a C++ compiler and Python's headers")
def test_compiled_expert_steps_give_the_eager_gradients():
    flat_view, flats, images, labels = stacked_problem()
    eager, eager_loss = ExpertStep(flat_view)(flats, images, labels)
    compiled = ExpertStep(flat_view, compile=True)
    for _ in range(2):  # the second call replays the compiled graph
        gradient, loss = compiled(flats, images, labels)
        torch.testing.assert_close(gradient, eager, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(loss, eager_loss)
    scored = images[0], labels[0]
    torch.testing.assert_close(compiled.accuracy(flats, *scored, chunk=4), ExpertStep(flat_view).accuracy(flats, *scored, chunk=4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("precision", ["fp32", "bf16-full"])
@pytest.mark.usefixtures("fresh_torch_compile", "plain_fp32_products")
def test_cuda_graph_expert_steps_give_the_eager_gradients(precision):
    """Compiled steps replayed as one CUDA graph each, the networks on streams of their own, at the full and at a
    shorter (epoch's last) batch, step after step."""
    flat_view, flats, images, labels = stacked_problem()
    flat_view = FlatParams(flat_view.module.cuda())
    flats, images, labels = flats.cuda(), images.cuda(), labels.cuda()
    eager = ExpertStep(flat_view, precision)
    compiled = ExpertStep(flat_view, precision, compile=True)
    for batch in (slice(None), slice(None), slice(0, 5), slice(None)):
        expected, expected_loss = eager(flats, images[:, batch], labels[:, batch])
        gradient, loss = compiled(flats, images[:, batch], labels[:, batch])
        if precision == "fp32":
            torch.testing.assert_close(gradient, expected, rtol=1e-3, atol=1e-5)
            torch.testing.assert_close(loss, expected_loss, rtol=1e-4, atol=0)
        else:  # fused kernels round bf16 at other places than eager ones: the bf16 tolerance above
            assert torch.nn.functional.cosine_similarity(gradient, expected, dim=1).min() >= 0.99
            torch.testing.assert_close(loss, expected_loss, rtol=2e-2, atol=0)
        flats = flats - 0.1 * gradient


def test_expert_accuracy_counts_each_networks_correct_predictions():
    flat_view, flats, images, labels = stacked_problem()
    shared_images, shared_labels = images[0], labels[0]
    accuracy = ExpertStep(flat_view).accuracy(flats, shared_images, shared_labels, chunk=3)
    with torch.no_grad():
        expected = torch.stack([(flat_view.forward(flat, shared_images).argmax(-1) == shared_labels).float().mean()
                                for flat in flats])
    torch.testing.assert_close(accuracy, expected)


def test_an_epoch_drawn_at_once_equals_one_draw_per_step():
    augment = DiffAugment()
    at_once = _epoch_draws(augment, 3, 45, 16, 32, torch.Generator().manual_seed(5), torch.device("cpu"))
    generator = torch.Generator().manual_seed(5)
    per_step = [augment.draw(3 * size, 32, generator, "cpu") for size in (16, 16, 13)]
    assert len(at_once) == 3
    for mine, theirs in zip(at_once, per_step, strict=True):
        assert mine.ops == theirs.ops
        torch.testing.assert_close(mine.params, theirs.params, rtol=0, atol=0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory):
    """Real SDSS galaxies, 16 px, 12 per class, prepared once for the tests that train whole expert stores."""
    return prepare(PrepareSettings(dataset="gz1-sdss", root=GZ1_ROOT, size=16, per_class=12),
                   out_dir=tmp_path_factory.mktemp("gz1") / "data")


def test_a_store_from_before_the_new_or_retired_settings_resumes_and_other_settings_are_named(dataset, tmp_path):
    settings = ExpertSettings(dataset=dataset.name, width=8, depth=2, epochs=2, batch_size=16, num_experts=2, parallel=2,
                              device="cpu")
    manifest_path = train_experts(settings, dataset, tmp_path / "experts")
    manifest = read_json(manifest_path)
    for added_since in ("precision", "compile", "test_every"):
        del manifest["settings"][added_since]
    manifest["settings"].update(stacking="vmap", channels_last=True)  # retired since: they never changed a trajectory
    write_json(manifest_path, manifest)
    train_experts(settings, dataset, tmp_path / "experts")
    assert read_json(manifest_path)["experts"] == manifest["experts"]  # nothing trained again
    with pytest.raises(GalaxyDistillError, match="precision: 'fp32' there, 'bf16-full' now"):
        train_experts(settings.model_copy(update={"precision": "bf16-full"}), dataset, tmp_path / "experts")


def test_groups_are_written_while_the_next_trains_and_a_failing_group_keeps_the_finished_ones(dataset, tmp_path, monkeypatch):
    settings = ExpertSettings(dataset=dataset.name, width=8, depth=2, epochs=1, batch_size=16, num_experts=3, parallel=1,
                              device="cpu")
    seen = []
    manifest_path = train_experts(settings, dataset, tmp_path / "whole", on_round=lambda manifest: seen.append(
        [entry["id"] for entry in manifest["experts"]]))
    assert seen == [[0], [0, 1], [0, 1, 2]]

    def untimed(path: Path) -> list[dict]:
        return [{key: value for key, value in entry.items() if key != "group_seconds"} for entry in read_json(path)["experts"]]

    whole = untimed(manifest_path)
    train_group = training._train_group
    calls = []

    def fails_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise GalaxyDistillError("expert training diverged")
        return train_group(*args, **kwargs)

    monkeypatch.setattr(training, "_train_group", fails_third)
    with pytest.raises(GalaxyDistillError, match="diverged"):
        train_experts(settings, dataset, tmp_path / "broken")
    assert untimed(tmp_path / "broken" / "experts.json") == whole[:2]  # both finished groups kept
    monkeypatch.setattr(training, "_train_group", train_group)
    assert untimed(train_experts(settings, dataset, tmp_path / "broken")) == whole


def test_test_every_scores_the_named_epochs_and_the_last_and_leaves_the_trajectories_alone(dataset, tmp_path):
    settings = ExpertSettings(dataset=dataset.name, width=8, depth=2, epochs=5, batch_size=16, num_experts=2, parallel=2,
                              device="cpu")
    every = read_json(train_experts(settings, dataset, tmp_path / "every"))["experts"]
    sparse = read_json(train_experts(settings.model_copy(update={"test_every": 2}), dataset, tmp_path / "sparse"))["experts"]
    for scored_each, scored_some in zip(every, sparse, strict=True):
        assert scored_some["sha256"] == scored_each["sha256"]  # scoring changes no trajectory
        assert scored_some["test_accuracy"] == [None, scored_each["test_accuracy"][1], None, scored_each["test_accuracy"][3],
                                                scored_each["test_accuracy"][4]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compiled GPU way needs a GPU")
@pytest.mark.usefixtures("fresh_torch_compile")
def test_compiled_gpu_experts_follow_the_eager_gpu_experts(dataset, tmp_path, monkeypatch):
    """--compile on a GPU (one graph a step, a stream per expert, pinned shuffles, compiled scoring, files written
    while the next group trains) trains the experts that the uncompiled loop trains, to float rounding."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    settings = ExpertSettings(dataset=dataset.name, width=8, depth=2, epochs=2, batch_size=8, num_experts=4, parallel=2,
                              device="cuda")
    eager = ExpertStore(train_experts(settings, dataset, tmp_path / "eager").parent)
    compiled = ExpertStore(train_experts(settings.model_copy(update={"compile": True}), dataset, tmp_path / "compiled").parent)
    for index in range(4):
        for epoch in (1, 2):
            torch.testing.assert_close(compiled.parameters_at(index, epoch), eager.parameters_at(index, epoch), rtol=1e-3,
                                       atol=1e-5)
    one_image = 1 / len(dataset.tensors("test")[1])
    for mine, theirs in zip(compiled.test_accuracy(), eager.test_accuracy(), strict=True):
        assert mine == pytest.approx(theirs, abs=one_image)  # at most one test image scored otherwise
