"""A newcomer's first hour (issue 25): help, errors, hints, small data, failed starts, progress in logs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from galaxy_distill import __version__, cli, progress
from galaxy_distill.cli_options import option_help
from galaxy_distill.data.registry import prepare
from galaxy_distill.demo import DemoScale, run_demo
from galaxy_distill.data.settings import PrepareSettings
from galaxy_distill.distill.early_warnings import MatchingLossWatch
from galaxy_distill.distill.fresh_start import removed_if_start_fails
from galaxy_distill.distill.settings import DistillSettings
from galaxy_distill.errors import GalaxyDistillError
from galaxy_distill.evaluate.settings import EvaluateSettings
from galaxy_distill.rundir import run_directories
from galaxy_distill.experts.settings import ExpertSettings, automatic_batch_size, few_steps_warning


@pytest.fixture(autouse=True)
def workspace(workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no ./shared/data default is found
    return workspace


def error_of(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    """The command's stderr, which must be one `error:` line and exit code 2."""
    monkeypatch.setattr(sys, "argv", ["galaxy-distill", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "Traceback" not in lines[0]
    return lines[0]


def test_small_data_gets_a_batch_size_with_enough_steps_and_a_warning_otherwise() -> None:
    assert ExpertSettings(dataset="x").batch_size is None
    assert automatic_batch_size(200) == 10 and automatic_batch_size(50_000) == 256 and automatic_batch_size(30) == 8
    warning = few_steps_warning(200, 256)
    assert warning is not None and "--batch-size 256 makes only 1 step(s) per epoch" in warning and "--batch-size 10" in warning
    assert few_steps_warning(200, automatic_batch_size(200)) is None
    watch = MatchingLossWatch(window=5)
    assert [watch.observe(i, 40.0) for i in range(1, 5)] == [None] * 4
    message = watch.observe(5, 35.0)
    assert message is not None and "stayed above 1" in message and "--batch-size" in message
    assert watch.observe(6, 35.0) is None, "warned once"
    calm = MatchingLossWatch(window=5)
    assert all(calm.observe(i, 0.8 if i % 4 == 0 else 2.0) is None for i in range(1, 20))


def test_version_and_help_that_does_not_import_torch() -> None:
    result = CliRunner().invoke(cli.app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"galaxy-distill {__version__}"
    code = ("import sys; sys.argv = ['galaxy-distill', '--help']\nfrom galaxy_distill import cli\n"
            "try:\n    cli.main()\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules, 'matplotlib' in sys.modules)")
    sources = str(Path(cli.__file__).parents[1])  # these sources, not whatever an installed copy points at
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                           env={**os.environ, "PYTHONPATH": sources})
    assert "experts" in shown.stdout and shown.stdout.strip().endswith("False False")


@pytest.mark.parametrize("settings_type", [PrepareSettings, ExpertSettings, DistillSettings, EvaluateSettings])
def test_every_flag_has_a_help_text_that_says_more_than_its_name(settings_type) -> None:
    for name, field in settings_type.model_fields.items():
        text = option_help(name, field)
        assert len(text.split()) >= 4 and text.lower().rstrip(".") != name.replace("_", " "), (name, text)
        if field.default is not None and not field.is_required():
            assert "[default: " in text, (name, text)
        else:
            assert "default" in text or field.is_required(), f"{name}: a None default must say what is used instead"


@pytest.mark.parametrize("command", [["data", "prepare"], ["experts"], ["distill"], ["evaluate"], ["report"], ["demo"],
                                     ["data", "show"]])
def test_help_shows_choices_and_real_defaults(command: list[str]) -> None:
    result = CliRunner().invoke(cli.app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    if command == ["distill"]:
        assert "[mtt|stm]" in text and "[default: stm]" in text and "[default: 20]" in text
    if command == ["data", "prepare"]:
        assert "128 for the others" in text and "default: None" not in text and "[auto|hart16|kaggle]" in text
    if command == ["evaluate"]:
        assert "one of random, class_average, full" in text


@pytest.mark.parametrize(("args", "message"), [
    (["distill", "--dataset", "x", "--experts", "e", "--ipc", "0"], "error: --ipc 0: must be greater than or equal to 1"),
    (["evaluate", "--baselines", "rand"], "error: --baselines rand: must be 'random', 'class_average' or 'full'"),
    (["experts"], "error: --dataset is required"),
    (["distill", "--dataset", "x", "--experts", "e", "--method", "xyz"], "error: --method xyz: must be 'mtt' or 'stm'"),
    (["distill", "--dataset", "x", "--experts", "e", "--ipc", "two"], "error: --ipc two: must be a valid integer"),
    (["experts", "--dataset", "galaxyzoo"], "error: --dataset 'galaxyzoo' is not prepared"),
])
def test_a_bad_value_names_the_flag_what_was_given_and_what_is_allowed(
        args: list[str], message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    line = error_of(args, monkeypatch, capsys)
    assert line.startswith(message) and "Settings" not in line


def test_a_bad_key_in_the_config_file_names_the_file(tmp_path: Path, monkeypatch, capsys) -> None:
    config = tmp_path / "distill.yaml"
    config.write_text("dataset: x\nexperts: e\nipcs: 2\n")
    line = error_of(["distill", "--config", str(config)], monkeypatch, capsys)
    assert f"{config}: unknown setting 'ipcs'" in line and "ipc" in line


def test_hints_lead_somewhere_offline(tmp_path: Path, monkeypatch, capsys) -> None:
    line = error_of(["experts", "--dataset", "galaxyzoo"], monkeypatch, capsys)
    assert "data prepare galaxyzoo" not in line and "galaxy-distill data prepare simzoo" in line
    line = error_of(["experts", "--dataset", "simzoo"], monkeypatch, capsys)
    assert "galaxy-distill data prepare simzoo` first" in line
    line = error_of(["evaluate", "--run", str(tmp_path / "no-such-run")], monkeypatch, capsys)
    assert f"--run {tmp_path / 'no-such-run'}: not found" in line


def test_a_failed_start_leaves_nothing_and_a_leftover_does_not_block(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "first"
    with pytest.raises(GalaxyDistillError), removed_if_start_fails(run):
        (run / "snapshots").mkdir(parents=True)
        (run / "settings.json").write_text("{}")
        raise GalaxyDistillError("class 'a' has 1 training images, fewer than ipc=2")
    assert not run.exists()
    # A directory an older version left behind after a failed start is cleared; one with other files is kept.
    (run / "snapshots").mkdir(parents=True)
    (run / "settings.json").write_text("{}")
    with removed_if_start_fails(run) as cleared:
        assert cleared and not run.exists()
    (run / "checkpoint.json").parent.mkdir(parents=True, exist_ok=True)
    (run / "settings.json").write_text("{}")
    (run / "checkpoint.json").write_text("{}")
    with pytest.raises(RuntimeError), removed_if_start_fails(run) as cleared:
        raise RuntimeError("late failure")
    assert not cleared and (run / "checkpoint.json").is_file()


def picture_tree(root: Path, counts: dict[str, int], broken: dict[str, int]) -> None:
    rng = np.random.default_rng(0)
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for k in range(count):
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / name / f"{k:02d}.png")
        for k in range(broken.get(name, 0)):
            (root / name / f"bad{k}.png").write_bytes(b"not a png")


def test_prepare_folder_keeps_an_existing_set_says_what_balancing_left_out_and_replaces_bad_images(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    picture_tree(root, {"a": 9, "b": 4}, broken={"b": 2})
    settings = PrepareSettings(dataset="folder", root=root, size=16, per_class=4, skip_bad_images=True,
                               test_fraction=0.25, val_fraction=0.0)
    prepared = prepare(settings)
    totals = np.sum([prepared.meta["counts"][split] for split in ("train", "val", "test")], axis=0).tolist()
    assert totals == [4, 4], "every unreadable image is replaced by a readable one of its class"
    notes = prepared.meta["notes"]
    assert any(note.startswith("balanced to 4 images per class: left out") for note in notes), notes
    with pytest.raises(GalaxyDistillError, match="already prepared there with other settings .*pass --name NEW"):
        prepare(settings.model_copy(update={"size": 8}))
    assert prepare(settings.model_copy(update={"size": 8}), force=True).image_shape == (3, 8, 8)


def test_an_unreadable_image_error_mentions_skip_bad_images(tmp_path: Path, monkeypatch, capsys) -> None:
    root = tmp_path / "tree"
    picture_tree(root, {"a": 3, "b": 3}, broken={"b": 1})
    line = error_of(["data", "prepare", "folder", "--root", str(root), "--size", "16"], monkeypatch, capsys)
    assert "not a readable image" in line and "--skip-bad-images" in line


def test_progress_off_a_terminal_is_plain_lines_every_few_seconds(monkeypatch, capsys) -> None:
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.0)
    bar = progress.progress(total=3, desc="experts", unit="ep")
    for _ in range(3):
        bar.update(1)
    progress.tqdm.write("warning: a message between two progress lines")
    bar.close()
    err = capsys.readouterr().err
    assert err.count("experts:") == 4, "a message does not make the log repeat the progress line"
    assert "\r" not in err and "experts: 100%" in err.splitlines()[-1]
    assert progress.LOG_INTERVAL_S == 0.0 and progress.progress(total=1, main_process=False).disable


@pytest.mark.slow  # the whole demo at a toy scale: about a minute on a busy 2-core machine
def test_the_demo_ends_by_writing_its_report_and_report_takes_the_demo_directory(tmp_path: Path, capsys) -> None:
    toy = DemoScale(size=16, per_class=6, width=8, experts=2, expert_epochs=3, expert_batch_size=8, iterations=4,
                    eval_every=4, eval_epochs=2, final_networks=1, final_epochs=2)
    run_dir = run_demo(tmp_path / "demo", toy)
    report = run_dir / "stm" / "report" / "index.html"
    assert report.is_file()
    assert f"report: {report}" in capsys.readouterr().out.splitlines()
    assert run_directories(run_dir) == [run_dir / "stm"], "`report` on the demo's directory reports its run"


def test_a_start_that_recorded_its_faults_keeps_them_until_the_retry(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(GalaxyDistillError), removed_if_start_fails(run):
        run.mkdir()
        (run / "settings.json").write_text("{}")
        (run / "stages.json").write_text('[{"kind": "fault"}]')
        raise GalaxyDistillError("iteration 1: 5 numerical faults in a row")
    assert (run / "stages.json").is_file(), "the record of the faults stays to be read"
    with removed_if_start_fails(run) as cleared:
        assert cleared and not run.exists(), "the retry starts afresh, with other settings if need be"
