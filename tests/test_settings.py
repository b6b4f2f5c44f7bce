"""Every setting is described, and settings renamed since earlier versions are still read, with a warning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import pytest

from galaxy_distill.atomic_io import write_json, write_yaml
from galaxy_distill.data.settings import PrepareSettings
from galaxy_distill.distill.settings import DistillSettings
from galaxy_distill.evaluate.run import _network_inputs
from galaxy_distill.evaluate.settings import EvaluateSettings
from galaxy_distill.experts.settings import ArchitectureName, ExpertSettings
from galaxy_distill.models import MODELS
from galaxy_distill.rundir import RunDir
from galaxy_distill.settings import Settings, resolve_settings, settings_differences

COMMAND_SETTINGS = (PrepareSettings, ExpertSettings, DistillSettings, EvaluateSettings)


def _all_subclasses(kind: type) -> set[type]:
    found = set()
    for sub in kind.__subclasses__():
        found |= {sub} | _all_subclasses(sub)
    return found


def test_every_field_of_every_settings_class_has_a_description() -> None:
    classes = {kind for kind in _all_subclasses(Settings) if kind.__module__.startswith("galaxy_distill.")}
    assert set(COMMAND_SETTINGS) <= classes
    undescribed = [f"{kind.__name__}.{name}" for kind in classes for name, field in kind.model_fields.items()
                   if not (field.description and field.description.strip())]
    assert not undescribed, "settings without a description (their --help would be empty): " + ", ".join(undescribed)


def test_renamed_settings_point_at_fields_that_exist_and_names_in_use_are_not_renamed() -> None:
    for kind in COMMAND_SETTINGS:
        for old, new in kind.renamed.items():
            assert new in kind.model_fields and old not in kind.model_fields, (kind.__name__, old, new)
            assert old not in kind.retired


def test_the_architectures_the_settings_offer_are_the_ones_models_builds() -> None:
    assert set(get_args(ArchitectureName)) == set(MODELS)


def test_earlier_names_are_read_as_todays_with_a_warning_naming_the_new_one(capsys: pytest.CaptureFixture[str]) -> None:
    settings = DistillSettings.model_validate({"dataset": "d", "experts": "e", "eval_nets": 3, "stm_lambda": 2.0,
                                               "stm_rise": 1.5})
    assert (settings.eval_networks, settings.stm_lambda_decrease, settings.stm_lambda_increase) == (3, 2.0, 1.5)
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 3
    assert "'eval_nets' is now called 'eval_networks' (--eval-networks)" in warnings[0]
    assert EvaluateSettings(num_eval=4).networks == 4  # type: ignore[call-arg]
    assert ExpertSettings(dataset="d", model="vgg11").architecture == "vgg11"  # type: ignore[call-arg]


def test_a_yaml_file_with_an_earlier_name_works_and_a_flag_under_todays_name_overrides_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "evaluate.yaml"
    write_yaml(config, {"num_eval": 7, "epochs": 3})
    assert resolve_settings(EvaluateSettings, config, {"networks": None}).networks == 7
    assert f"{config}: setting 'num_eval' is now called 'networks'" in capsys.readouterr().err
    assert resolve_settings(EvaluateSettings, config, {"networks": "2"}).networks == 2


def test_a_run_stored_under_earlier_names_resumes_and_reads_back_with_todays(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    now = json.loads(DistillSettings(dataset="d", experts=tmp_path).model_dump_json())
    older = {{"eval_networks": "eval_nets", "stm_lambda_decrease": "stm_lambda", "stm_lambda_increase": "stm_rise"}.get(
        name, name): value for name, value in now.items()}
    assert settings_differences(DistillSettings, older, now) == []
    assert settings_differences(DistillSettings, {**older, "eval_nets": 9}, now) == ["eval_networks: 9 there, 2 now"]
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    write_json(run.settings, older)
    run.start(DistillSettings, now, write=False)  # no "other settings" error
    assert run.read_settings(DistillSettings) == now
    assert f"{run.settings}: setting 'stm_rise' is now called 'stm_lambda_increase'" in capsys.readouterr().err


def test_partial_evaluation_results_written_under_the_earlier_name_are_reused() -> None:
    settings = {"seed": 0, "epochs": 5}
    older = {"settings": {**settings, "num_eval": 5}}
    assert _network_inputs(older) == _network_inputs({"settings": {**settings, "networks": 3}})
