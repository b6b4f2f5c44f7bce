"""Resuming an evaluation reuses every finished network whose own inputs are unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from galaxy_distill.errors import GalaxyDistillError
from galaxy_distill.evaluate.run import PartialResults
from galaxy_distill.evaluate.train import Accuracy


def fingerprint(**changes: object) -> dict:
    settings = {"run": "/runs/a", "baselines": ["random", "class_average"], "architectures": ["convnet"], "networks": 5,
                "epochs": 1000, "lr": None, "seed": 0, "split": "test", **changes}
    return {"settings": settings, "dataset_sha256": "abc", "synthetic_sha256": "def", "run_model": None}


def test_asking_for_fewer_baselines_or_networks_reuses_the_finished_ones(tmp_path: Path) -> None:
    path = tmp_path / "evaluation.partial.json"
    first = PartialResults(path, fingerprint(), resume=False)
    first.record("convnet/stm/0", {"test": Accuracy(0.59, [0.5, 0.6], [[1, 0], [0, 1]])}, 12.0)
    narrower = PartialResults(path, fingerprint(baselines=["random"], networks=3, architectures=["convnet", "vgg11"]), resume=True)
    assert narrower.finished("convnet/stm/0")["test"].overall == 0.59


def test_a_change_that_alters_each_network_refuses_the_old_results(tmp_path: Path) -> None:
    path = tmp_path / "evaluation.partial.json"
    PartialResults(path, fingerprint(), resume=False).record("convnet/stm/0", {"test": Accuracy(0.5, [], [])}, 1.0)
    with pytest.raises(GalaxyDistillError, match="other settings or inputs"):
        PartialResults(path, fingerprint(epochs=500), resume=True)
