"""`galaxy-distill data prepare / show / list`, and how the command line reports bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from gz2_fixtures import make_hart16_root, standard_catalogue
from shared_paths import GZ1_ROOT
from typer.testing import CliRunner

from galaxy_distill import cli


pytestmark = pytest.mark.usefixtures("workspace")


def invoke(*args: str) -> str:
    result = CliRunner().invoke(cli.app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_list_before_anything_is_prepared(workspace: Path) -> None:
    output = invoke("data", "list")
    for name in ("gz1-sdss", "gz2", "simzoo", "cifar10", "cifar100", "folder"):
        assert any(line.startswith(name) for line in output.splitlines())
    assert f"prepared in {workspace / 'datasets'}: none" in output


def test_prepare_show_and_list_gz1(workspace: Path) -> None:
    output = invoke("data", "prepare", "gz1-sdss", "--root", str(GZ1_ROOT), "--per-class", "20", "--size", "32")
    assert f"prepared gz1-sdss in {workspace / 'datasets' / 'gz1-sdss'}" in output
    assert "  train     48 images  elliptical=16, spiral=16, edge-on=16" in output
    assert "  test       6 images  elliptical=2, spiral=2, edge-on=2" in output

    output = invoke("data", "show", "gz1-sdss")
    assert "images 32x32x3, ZCA off" in output
    assert any(line.split() == ["spiral", "16", "2", "2"] for line in output.splitlines())
    assert (workspace / "datasets" / "gz1-sdss" / "examples.png").stat().st_size > 1000

    assert "prepared in" in invoke("data", "list") and "gz1-sdss" in invoke("data", "list").splitlines()[-1]


def test_a_dataset_of_another_format_version_says_so_before_naming_missing_keys(workspace: Path) -> None:
    from galaxy_distill.data import load_prepared
    from galaxy_distill.errors import GalaxyDistillError

    directory = workspace / "datasets" / "old"
    directory.mkdir(parents=True)
    (directory / "meta.json").write_text('{"format_version": 0, "name": "old"}')
    with pytest.raises(GalaxyDistillError, match="format version 0 is not 1; prepare it again"):
        load_prepared("old")
    (directory / "meta.json").write_text('{"name": "old"}')
    with pytest.raises(GalaxyDistillError, match="missing key.*format_version"):
        load_prepared("old")


def test_prepare_gz2_from_a_hart16_layout(tmp_path: Path, workspace: Path) -> None:
    root = make_hart16_root(tmp_path / "gz2", standard_catalogue())
    output = invoke("data", "prepare", "gz2", "--root", str(root), "--per-class", "5", "--size", "16",
                    "--val-fraction", "0.25", "--gz2-source", "hart16")
    assert "  train     27 images  smooth-round=3, smooth-in-between=3" in output
    assert "  test       9 images" in output
    assert "note: 1 gz2_filename_mapping.csv row(s) repeat an earlier objid" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data", "prepare", "gz1-sdss", "--root", "{tmp}/nowhere"], "nowhere: directory not found; expected labels.csv"),
        (["data", "prepare", "gz1-sdss", "--root", str(GZ1_ROOT), "--per-class", "900"], "spiral has 850"),
        (["data", "prepare", "gz2", "--root", "{tmp}"], "no GZ2 catalogue found"),
        (["data", "prepare", "gz2"], "no data for 'gz2' found"),
        (["data", "prepare", "no-such-set"], "unknown dataset 'no-such-set'"),
        (["data", "prepare", "gz1-sdss", "--size", "4"], "--size 4: must be greater than or equal to 8"),
        (["data", "show", "never-prepared"], "dataset 'never-prepared' is not prepared"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_code_2(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # so no ./shared/data or ../shared/data default is found
    monkeypatch.setattr(sys, "argv", ["galaxy-distill", *[a.format(tmp=tmp_path) for a in args]])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1, errors
    assert errors[0].startswith("error: ") and message in errors[0]


def test_unreadable_image_error_is_alone_on_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = pd.read_csv(GZ1_ROOT / "labels.csv", dtype={"OBJID": str})
    chosen = labels[labels["CLASS"].isin([0, 1, 3])].groupby("CLASS").head(3)
    (tmp_path / "gz1" / "images").mkdir(parents=True)
    chosen.to_csv(tmp_path / "gz1" / "labels.csv", index=False)
    for objid in chosen["OBJID"]:
        (tmp_path / "gz1" / "images" / f"{objid}.jpeg").write_bytes((GZ1_ROOT / "images" / f"{objid}.jpeg").read_bytes())
    broken = tmp_path / "gz1" / "images" / f"{chosen['OBJID'].iloc[4]}.jpeg"
    broken.write_bytes(b"junk")
    monkeypatch.setattr(sys, "argv", ["galaxy-distill", "data", "prepare", "gz1-sdss", "--root", str(tmp_path / "gz1"),
                                      "--per-class", "3", "--size", "16"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: {broken}: not a readable image")


def test_installed_command_reports_bad_input_without_traceback(tmp_path: Path, workspace: Path) -> None:
    command = Path(sys.executable).with_name("galaxy-distill")
    result = subprocess.run(
        [str(command), "data", "prepare", "gz1-sdss", "--root", str(tmp_path / "nowhere")],
        check=False, capture_output=True, text=True, env={**os.environ, "GALAXY_DISTILL_HOME": str(workspace)}, timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nowhere'}: directory not found; expected labels.csv (columns OBJID,CLASS) and images/<OBJID>.jpeg"
    ]
    assert not workspace.exists()
