"""Hostile and broken inputs, each run through the real CLI: one clear error line, exit code 2, no traceback.

Every case builds a bad dataset, file, store or config from small real data, runs `galaxy-distill`
through cli.main() and checks that stderr holds exactly one line, `error: ...`, naming the problem.
Cases that hide code in data files (pickles, YAML tags) also check that the code did not run.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from compile_support import CAN_COMPILE_ON_CPU
from PIL import Image
from reliability_helpers import (
    DATASET,
    TinyWorkspace,
    copy_workspace,
    record,
    run_installed,
    run_main,
)
from shared_paths import GZ1_ROOT

from galaxy_distill.atomic_io import read_json, save_tensors, sha256_file, write_json


class RunsCode:
    """Unpickling this would run a shell command that creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch '{self.marker}'",)


@dataclass
class Scene:
    """The tmp directory of one case, with builders for the inputs it spoils."""

    tmp: Path
    tiny: TinyWorkspace
    monkeypatch: pytest.MonkeyPatch

    @property
    def marker(self) -> Path:
        return self.tmp / "code-ran"

    def workspace(self) -> TinyWorkspace:
        return copy_workspace(self.tiny, self.tmp / "home", self.monkeypatch)

    def gz1_root(self) -> Path:
        """A gz1_sdss layout holding 3 real galaxies of each kept class."""
        labels = pd.read_csv(GZ1_ROOT / "labels.csv", dtype={"OBJID": str})
        chosen = labels[labels["CLASS"].isin([0, 1, 3])].groupby("CLASS").head(3)
        root = self.tmp / "gz1"
        (root / "images").mkdir(parents=True)
        for objid in chosen["OBJID"]:
            shutil.copy(GZ1_ROOT / "images" / f"{objid}.jpeg", root / "images")
        chosen.to_csv(root / "labels.csv", index=False)
        return root

    def gz1_image(self, root: Path, row: int = 4) -> Path:
        objid = pd.read_csv(root / "labels.csv", dtype={"OBJID": str})["OBJID"][row]
        return root / "images" / f"{objid}.jpeg"

    def cifar_root(self) -> Path:
        """A valid cifar-10-batches-py layout of 10 images per batch, one per class."""
        folder = self.tmp / "c10" / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            batch = {"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8), "labels": list(range(10))}
            (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        meta = {"label_names": [f"class{k}" for k in range(10)]}
        (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
        return folder.parent

    def config(self, text: str | bytes) -> Path:
        path = self.tmp / "settings.yaml"
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        return path

    def synthetic_run(self, **tensors: torch.Tensor) -> Path:
        """A distillation run directory whose synthetic set holds `tensors` (over a valid IPC-1 set)."""
        workspace = self.workspace()
        run = self.tmp / "run"
        valid = {"images": torch.zeros(3, 3, 16, 16), "labels": torch.arange(3), "step_size": torch.tensor(0.01)}
        save_tensors(run / "synthetic.safetensors", {key: value for key, value in {**valid, **tensors}.items() if value is not None},
                     metadata={"class_names": json.dumps(["elliptical", "spiral", "edge-on"]), "dataset": DATASET})
        write_json(run / "settings.json", {"dataset": DATASET, "experts": str(workspace.experts), "method": "mtt"})
        return run

    def store_with(self, change: Callable[[dict, Path], None]) -> list[str]:
        """`distill` arguments over a copy of the tiny expert store, after `change(manifest, store_dir)`."""
        workspace = self.workspace()
        manifest_path = workspace.experts / "experts.json"
        manifest = read_json(manifest_path)
        change(manifest, workspace.experts)
        write_json(manifest_path, manifest)
        return distill_args(workspace.experts)

    def rewrite_expert(self, manifest: dict, store: Path, tensors: dict[str, torch.Tensor]) -> None:
        entry = manifest["experts"][0]
        entry["sha256"] = save_tensors(store / entry["file"], tensors)


def distill_args(experts: Path, *extra: str) -> list[str]:
    return ["distill", "--dataset", DATASET, "--experts", str(experts), "--method", "mtt", "--iterations", "2",
            "--syn-steps", "2", "--max-start-epoch", "1", "--device", "cpu", *extra]


def evaluate_args(run: Path) -> list[str]:
    return ["evaluate", "--run", str(run), "--networks", "1", "--epochs", "1", "--device", "cpu"]


def prepare_gz1(root: Path) -> list[str]:
    return ["data", "prepare", "gz1-sdss", "--root", str(root), "--size", "16"]


def spoiled_gz1_image(write: Callable[[Path], None]) -> Callable[[Scene], list[str]]:
    def build(scene: Scene) -> list[str]:
        root = scene.gz1_root()
        image = scene.gz1_image(root)
        image.unlink()
        write(image)
        return prepare_gz1(root)

    return build


def jpeg_claiming(width: int, height: int) -> Callable[[Path], None]:
    """A real JPEG whose frame header claims width x height pixels."""

    def write(path: Path) -> None:
        data = next(iter(sorted((GZ1_ROOT / "images").iterdir()))).read_bytes()
        frame = data.find(b"\xff\xc0")
        path.write_bytes(data[: frame + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + data[frame + 9 :])

    return write


def spoiled_catalogue(edit: Callable[[pd.DataFrame], pd.DataFrame | str | bytes]) -> Callable[[Scene], list[str]]:
    def build(scene: Scene) -> list[str]:
        root = scene.gz1_root()
        table = pd.read_csv(root / "labels.csv", dtype={"OBJID": str})
        result = edit(table)
        if isinstance(result, pd.DataFrame):
            result.to_csv(root / "labels.csv", index=False)
        else:
            (root / "labels.csv").write_bytes(result.encode() if isinstance(result, str) else result)
        return prepare_gz1(root)

    return build


def with_row(table: pd.DataFrame, row: int, **values: object) -> pd.DataFrame:
    table = table.astype(object)
    for column, value in values.items():
        table.loc[row, column] = value
    return table


def spoiled_cifar(file: str, payload: Callable[[Scene], bytes]) -> Callable[[Scene], list[str]]:
    def build(scene: Scene) -> list[str]:
        root = scene.cifar_root()
        (root / "cifar-10-batches-py" / file).write_bytes(payload(scene))
        return ["data", "prepare", "cifar10", "--root", str(root)]

    return build


def cifar_batch(**entry: object) -> Callable[[Scene], bytes]:
    return lambda scene: pickle.dumps(entry, protocol=2)


def spoiled_prepared(spoil: Callable[[Path], None]) -> Callable[[Scene], list[str]]:
    def build(scene: Scene) -> list[str]:
        workspace = scene.workspace()
        spoil(workspace.home / "datasets" / DATASET)
        return ["data", "show", DATASET]

    return build


def flip_byte(path: Path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def with_config(text: str | bytes, command: str = "experts") -> Callable[[Scene], list[str]]:
    def build(scene: Scene) -> list[str]:
        scene.workspace()
        return [command, "--config", str(scene.config(text.replace("MARKER", str(scene.marker)) if isinstance(text, str) else text))]

    return build


def manifest_change(change: Callable[[dict, Path, Scene], None], *extra: str) -> Callable[[Scene], list[str]]:
    def build(scene: Scene) -> list[str]:
        return scene.store_with(lambda manifest, store: change(manifest, store, scene)) + list(extra)

    return build


def pickled_expert(manifest: dict, store: Path, scene: Scene) -> None:
    entry = manifest["experts"][0]
    torch.save(RunsCode(scene.marker), store / entry["file"])
    entry["sha256"] = sha256_file(store / entry["file"])


def store_without_manifest(scene: Scene) -> list[str]:
    workspace = scene.workspace()
    (workspace.experts / "experts.json").unlink()
    return distill_args(workspace.experts)


def synthetic_of_random_bytes(scene: Scene) -> list[str]:
    run = scene.synthetic_run()
    (run / "synthetic.safetensors").write_bytes(os.urandom(500))
    return evaluate_args(run)


def synthetic_as_torch_pickle(scene: Scene) -> list[str]:
    run = scene.synthetic_run()
    torch.save(RunsCode(scene.marker), run / "synthetic.safetensors")
    return evaluate_args(run)


def damaged_checkpoints(scene: Scene) -> list[str]:
    workspace = scene.workspace()
    run = scene.tmp / "run"
    args = distill_args(workspace.experts, "--out", str(run), "--checkpoint-every", "1", "--eval-every", "100",
                        "--eval-epochs", "1")
    finished = run_installed(args, workspace.home)
    assert finished.returncode == 0, finished.stderr
    for checkpoint in run.glob("checkpoint-*.safetensors"):
        truncate(checkpoint)
    return [*args, "--resume"]


def partial_of_other_evaluation(scene: Scene) -> list[str]:
    run = scene.synthetic_run()
    write_json(run / "evaluation.partial.json", {"fingerprint": {"settings": "another evaluation"}, "networks": {}})
    return [*evaluate_args(run), "--resume"]


def unicode_missing_root(scene: Scene) -> list[str]:
    return ["data", "prepare", "gz1-sdss", "--root", str(scene.tmp / "dir with spaces" / "星系 ü" / "nowhere")]


@dataclass(frozen=True)
class Case:
    id: str
    section: str
    build: Callable[[Scene], list[str]]
    expected: str


CASES = [
    # Image files of a gz1-sdss layout.
    Case("image random bytes", "images", spoiled_gz1_image(lambda p: p.write_bytes(os.urandom(3000))), "not a readable image"),
    Case("image truncated", "images", spoiled_gz1_image(lambda p: p.write_bytes((GZ1_ROOT / "images" / p.name).read_bytes()[:4000])),
         "not a readable image"),
    Case("image zero bytes", "images", spoiled_gz1_image(lambda p: p.write_bytes(b"")), "not a readable image"),
    Case("image claims 10000x10000 px", "images", spoiled_gz1_image(jpeg_claiming(10000, 10000)), "larger than the 50000000 allowed"),
    Case("image claims 60000x60000 px (bomb)", "images", spoiled_gz1_image(jpeg_claiming(60000, 60000)), "DecompressionBombError"),
    Case("image is a text file", "images", spoiled_gz1_image(lambda p: p.write_text("OBJID,CLASS\n1,0\n")), "not a readable image"),
    Case("image is a directory", "images", spoiled_gz1_image(lambda p: p.mkdir()), "not a readable image"),
    Case("image missing", "images", spoiled_gz1_image(lambda p: None), "image file not found"),
    Case("image 1x1 px", "images", spoiled_gz1_image(lambda p: Image.new("RGB", (1, 1)).save(p, "JPEG")),
         "too small to crop"),
    # The gz1-sdss catalogue.
    Case("catalogue without CLASS column", "catalogues", spoiled_catalogue(lambda t: t.drop(columns="CLASS")), "missing column(s) CLASS"),
    Case("catalogue CLASS is NaN", "catalogues", spoiled_catalogue(lambda t: with_row(t, 2, CLASS=np.nan)),
         "CLASS must be an integer 0-5; bad value on line(s) 4"),
    Case("catalogue CLASS out of range", "catalogues", spoiled_catalogue(lambda t: with_row(t, 0, CLASS=9)), "bad value on line(s) 2"),
    Case("catalogue CLASS not a number", "catalogues", spoiled_catalogue(lambda t: with_row(t, 1, CLASS="spiral")),
         "bad value on line(s) 3"),
    Case("catalogue duplicated OBJID", "catalogues", spoiled_catalogue(lambda t: with_row(t, 1, OBJID=t["OBJID"][0])),
         "duplicated OBJID(s)"),
    Case("catalogue empty OBJID", "catalogues", spoiled_catalogue(lambda t: with_row(t, 3, OBJID="")), "missing or unusable on line(s) 5"),
    Case("catalogue OBJID escapes the folder", "catalogues", spoiled_catalogue(lambda t: with_row(t, 3, OBJID="../../etc/passwd")),
         "OBJID must be a plain name"),
    Case("catalogue with an empty class", "catalogues", spoiled_catalogue(lambda t: t[t["CLASS"] != 3]), "no images for class(es) edge-on"),
    Case("catalogue header only", "catalogues", spoiled_catalogue(lambda t: "OBJID,CLASS\n"), "no images for class(es)"),
    Case("catalogue zero bytes", "catalogues", spoiled_catalogue(lambda t: b""), "not a readable CSV table"),
    Case("catalogue is binary", "catalogues", spoiled_catalogue(lambda t: bytes(range(128, 256)) * 4), "labels.csv"),
    # CIFAR python-format batches (pickles, read by a restricted unpickler).
    Case("CIFAR batch is a code-running pickle", "cifar", spoiled_cifar("data_batch_1", lambda s: pickle.dumps(RunsCode(s.marker))),
         "refusing to load posix.system"),
    Case("CIFAR meta is a code-running pickle", "cifar", spoiled_cifar("batches.meta", lambda s: pickle.dumps(RunsCode(s.marker))),
         "refusing to load posix.system"),
    Case("CIFAR batch truncated", "cifar", spoiled_cifar("data_batch_2", lambda s: cifar_batch(data=np.zeros((10, 3072), np.uint8),
         labels=list(range(10)))(s)[:500]), "not a valid CIFAR batch file"),
    Case("CIFAR batch zero bytes", "cifar", spoiled_cifar("test_batch", lambda s: b""), "not a valid CIFAR batch file"),
    Case("CIFAR one channel (N x 1024)", "cifar", spoiled_cifar("data_batch_3", cifar_batch(data=np.zeros((10, 1024), np.uint8),
         labels=list(range(10)))), "'data' must be N x 3072 uint8"),
    Case("CIFAR label out of range", "cifar", spoiled_cifar("data_batch_4", cifar_batch(data=np.zeros((10, 3072), np.uint8),
         labels=[0] * 9 + [10])), "labels must lie in 0..9"),
    Case("CIFAR labels are strings", "cifar", spoiled_cifar("data_batch_5", cifar_batch(data=np.zeros((10, 3072), np.uint8),
         labels=["cat"] * 10)), "a list of integer labels"),
    Case("CIFAR labels and images differ in number", "cifar", spoiled_cifar("data_batch_1", cifar_batch(
         data=np.zeros((10, 3072), np.uint8), labels=[1, 2])), "10 images but 2 labels"),
    Case("CIFAR batch is a list", "cifar", spoiled_cifar("data_batch_1", lambda s: pickle.dumps([1, 2, 3], protocol=2)),
         "expected a dict, got list"),
    Case("CIFAR meta without class names", "cifar", spoiled_cifar("batches.meta", cifar_batch(names=["a"])), "expected 'label_names'"),
    # A prepared dataset in the workspace.
    Case("prepared images corrupted", "prepared", spoiled_prepared(lambda d: flip_byte(d / "images.safetensors")), "checksum mismatch"),
    Case("prepared images truncated", "prepared", spoiled_prepared(lambda d: truncate(d / "images.safetensors")), "checksum mismatch"),
    Case("prepared meta.json truncated", "prepared", spoiled_prepared(lambda d: truncate(d / "meta.json")), "not valid JSON"),
    # Expert stores given to `distill`.
    Case("store without experts.json", "expert stores", store_without_manifest, "no experts.json"),
    Case("store manifest without model", "expert stores", manifest_change(lambda m, s, _: m.pop("model")),
         "not a valid expert manifest (missing model)"),
    Case("store manifest with a bad model", "expert stores", manifest_change(lambda m, s, _: m["model"].update(channels="three")),
         "model: channels: Input should be a valid integer"),
    Case("store lists no experts", "expert stores", manifest_change(lambda m, s, _: m.update(experts=[])), "lists no finished experts"),
    Case("store expert file missing", "expert stores", manifest_change(lambda m, s, _: (s / m["experts"][0]["file"]).unlink()),
         "is missing"),
    Case("store expert file truncated", "expert stores", manifest_change(lambda m, s, _: truncate(s / m["experts"][0]["file"])),
         "checksum mismatch"),
    Case("store expert file is a code-running torch pickle", "expert stores", manifest_change(pickled_expert),
         "not a readable expert file"),
    Case("store trajectory of wrong width", "expert stores", manifest_change(
         lambda m, s, scene: scene.rewrite_expert(m, s, {"trajectory": torch.zeros(4, m["param_count"] + 1)})), "trajectory has shape"),
    Case("store trajectory missing an epoch", "expert stores", manifest_change(
         lambda m, s, scene: scene.rewrite_expert(m, s, {"trajectory": torch.zeros(3, m["param_count"])})),
         "expected [4, "),
    Case("store trajectory in float64", "expert stores", manifest_change(
         lambda m, s, scene: scene.rewrite_expert(m, s, {"trajectory": torch.zeros(4, m["param_count"], dtype=torch.float64)})),
         "holds F64 values"),
    Case("store trajectory under another name", "expert stores", manifest_change(
         lambda m, s, scene: scene.rewrite_expert(m, s, {"weights": torch.zeros(4, m["param_count"])})), "not a readable expert file"),
    Case("store file name escapes the store", "expert stores", manifest_change(
         lambda m, s, _: m["experts"][0].update(file="../../datasets/gz1-sdss/images.safetensors")), "must be a file name inside the store"),
    Case("store of another dataset", "expert stores", manifest_change(lambda m, s, _: m["dataset"].update(images_sha256="0" * 64)),
         "experts were trained on dataset"),
    Case("store model does not match its parameters", "expert stores", manifest_change(lambda m, s, _: m["model"].update(width=9)),
         "parameters per network, but its model"),
    Case("store has too few epochs for the schedule", "expert stores", manifest_change(lambda m, s, _: None, "--max-start-epoch", "3"),
         "exceeds the 3 epochs stored"),
    # Distillation runs.
    Case("distill resume with every checkpoint damaged", "runs", damaged_checkpoints, "no intact checkpoint to resume from"),
    Case("distill lr_init not positive", "runs", lambda s: distill_args(s.workspace().experts, "--lr-init", "0"),
         "--lr-init 0: must be greater than 0"),
    Case("distill ipc above the class size", "runs", lambda s: distill_args(s.workspace().experts, "--ipc", "500"),
         "fewer than ipc=500"),
    # Synthetic sets given to `evaluate`.
    Case("synthetic set is random bytes", "synthetic sets", synthetic_of_random_bytes, "not a readable synthetic set"),
    Case("synthetic set is a code-running torch pickle", "synthetic sets", synthetic_as_torch_pickle, "not a readable synthetic set"),
    Case("synthetic images hold NaN", "synthetic sets", lambda s: evaluate_args(s.synthetic_run(
         images=torch.full((3, 3, 16, 16), float("nan")))), "images contain NaN or infinite values"),
    Case("synthetic images with one channel", "synthetic sets", lambda s: evaluate_args(s.synthetic_run(
         images=torch.zeros(3, 1, 16, 16))), "synthetic images are [1, 16, 16]"),
    Case("synthetic labels out of range", "synthetic sets", lambda s: evaluate_args(s.synthetic_run(labels=torch.tensor([0, 1, 7]))),
         "synthetic labels must lie in 0..2"),
    Case("synthetic labels of wrong length", "synthetic sets", lambda s: evaluate_args(s.synthetic_run(labels=torch.tensor([0, 1]))),
         "labels must be 3 integers"),
    Case("synthetic step size negative", "synthetic sets", lambda s: evaluate_args(s.synthetic_run(step_size=torch.tensor(-1.0))),
         "step_size must be one positive finite number"),
    Case("synthetic set without labels", "synthetic sets", lambda s: evaluate_args(s.synthetic_run(labels=None)),
         "missing tensor(s) labels"),
    Case("evaluate resume over another evaluation's results", "synthetic sets", partial_of_other_evaluation,
         "partial results of an evaluation with other settings"),
    # Config files.
    Case("config with an unknown key", "configs", with_config(f"dataset: {DATASET}\nlearning_rate: 0.1\n"),
         "unknown setting 'learning_rate'"),
    Case("config value out of range", "configs", with_config(f"dataset: {DATASET}\nepochs: 0\n"), "epochs: 0: must be greater than"),
    Case("config value NaN", "configs", with_config(f"dataset: {DATASET}\nlr: .nan\n"), "lr: nan: must be a finite number"),
    Case("config value infinite", "configs", with_config(f"dataset: {DATASET}\nexperts: x\nlr_img: .inf\n", "distill"),
         "lr_img: inf: must be a finite number"),
    Case("config value of wrong type", "configs", with_config(f"dataset: {DATASET}\nepochs: many\n"), "epochs: 'many': must be a valid integer"),
    Case("config is a list", "configs", with_config("- dataset\n- epochs\n"), "expected a mapping of settings, got list"),
    Case("config YAML syntax error", "configs", with_config("dataset: [gz1\n"), "not valid YAML"),
    Case("config YAML with a code-running tag", "configs", with_config("dataset: !!python/object/apply:os.system ['touch MARKER']\n"),
         "not valid YAML"),
    Case("config is binary", "configs", with_config(bytes(range(128, 256))), "config file is not UTF-8 text"),
    Case("config is a directory", "configs", lambda s: ["experts", "--config", str(s.tmp)], "cannot read the config file"),
    Case("config missing", "configs", lambda s: ["experts", "--config", str(s.tmp / "nowhere.yaml")], "config file not found"),
    # Paths.
    Case("root with spaces and unicode missing", "paths", unicode_missing_root, "dir with spaces/星系 ü/nowhere: directory not found"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_ends_in_one_error_line(case: Case, tiny: TinyWorkspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GALAXY_DISTILL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GALAXY_DISTILL_DATA", raising=False)
    scene = Scene(tmp_path, tiny, monkeypatch)
    args = case.build(scene)
    result = run_main(args, monkeypatch, capsys)
    message = result.error_lines[0] if result.error_lines else ""
    record("hostile inputs", case.id, message, group=case.section, exit_code=result.exit_code)
    assert "Traceback" not in result.stderr
    assert len(result.error_lines) == 1, result.error_lines
    assert result.exit_code == 2
    assert message.startswith("error: ") and case.expected in message, message
    assert not scene.marker.exists(), "a data file ran code"


def test_installed_command_refuses_a_code_running_pickle_without_traceback(tiny: TinyWorkspace, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    scene = Scene(tmp_path, tiny, monkeypatch)
    args = spoiled_cifar("data_batch_1", lambda s: pickle.dumps(RunsCode(s.marker)))(scene)
    result = run_installed(args, tmp_path / "home", timeout=120)
    record("hostile inputs", "CIFAR code-running pickle, installed command", result.stderr.strip(), group="cifar",
           exit_code=result.returncode)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "refusing to load posix.system" in result.stderr
    assert not scene.marker.exists()


def test_paths_with_spaces_and_unicode_work(tiny: TinyWorkspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    odd = tmp_path / "dir with spaces" / "星系 ü"
    scene = Scene(odd, tiny, monkeypatch)
    odd.mkdir(parents=True)
    monkeypatch.setenv("GALAXY_DISTILL_HOME", str(odd / "home ü"))
    result = run_main(prepare_gz1(scene.gz1_root()) + ["--val-fraction", "0", "--test-fraction", "0.34"], monkeypatch, capsys)
    record("hostile inputs", "paths with spaces and unicode (prepare)", "ok" if result.exit_code == 0 else result.stderr,
           group="paths", exit_code=result.exit_code)
    assert result.exit_code == 0, result.stderr
    assert (odd / "home ü" / "datasets" / "gz1-sdss" / "meta.json").is_file()


@pytest.mark.parametrize(("command", "error", "knob"), [
    ("distill", "torch.cuda.OutOfMemoryError", "--batch-chunk"),
    ("experts", "torch.cuda.OutOfMemoryError", "--parallel"),
    ("evaluate", "torch.cuda.OutOfMemoryError", "--batch-size"),
    ("distill", "cpu-allocator", "--syn-steps"),
])
def test_out_of_memory_is_one_line_naming_the_knobs(command: str, error: str, knob: str, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    def exhausted(*args: object, **kwargs: object) -> None:
        if error == "cpu-allocator":
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                               "you tried to allocate 81920000000 bytes.")
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of "
                                          "79.10 GiB of which 1.2 GiB is free.\nSee documentation for Memory Management")

    monkeypatch.setattr("galaxy_distill.data.load_prepared", exhausted)  # the commands load their dataset
    monkeypatch.setattr("galaxy_distill.pipeline.load_prepared", exhausted)  # evaluate's is named by its run
    args = {"distill": ["distill", "--dataset", "x", "--experts", "y"], "experts": ["experts", "--dataset", "x"],
            "evaluate": ["evaluate", "--dataset", "x"]}[command]
    result = run_main(args, monkeypatch, capsys)
    record("out of memory", f"{command}: {error}", result.stderr.strip(), exit_code=result.exit_code)
    assert result.exit_code == 3
    assert len(result.error_lines) == 1 and "Traceback" not in result.stderr
    assert result.error_lines[0].startswith("error: out of memory (") and knob in result.error_lines[0]


def test_other_runtime_errors_are_not_mistaken_for_out_of_memory(monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr("galaxy_distill.data.load_prepared", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_main(["experts", "--dataset", "x"], monkeypatch, capsys)


@pytest.mark.skipif(not CAN_COMPILE_ON_CPU, reason="the failure checked is the compiler's, after torch.compile has started")
def test_compile_without_a_working_compiler_is_one_line(tiny: TinyWorkspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace = copy_workspace(tiny, tmp_path / "home", monkeypatch)
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))  # nothing compiled before to reuse
    result = run_installed(["experts", "--dataset", DATASET, "--width", "8", "--depth", "2", "--epochs", "1", "--num-experts", "1",
                            "--compile", "--device", "cpu", "--out", str(tmp_path / "experts")], workspace.home)
    lines = result.stderr.strip().splitlines()
    record("hostile inputs", "experts --compile without a working C++ compiler", lines[-1] if lines else "", group="environment",
           exit_code=result.returncode)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert lines[-1].startswith("error: torch.compile could not build the kernels") and "without --compile" in lines[-1]


def test_prepared_meta_without_class_names(tiny: TinyWorkspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    workspace = copy_workspace(tiny, tmp_path / "home", monkeypatch)
    meta_path = workspace.home / "datasets" / DATASET / "meta.json"
    meta = read_json(meta_path)
    del meta["class_names"]
    write_json(meta_path, meta)
    result = run_main(["data", "show", DATASET], monkeypatch, capsys)
    record("hostile inputs", "prepared meta.json without class_names", result.error_lines[0] if result.error_lines else "", group="prepared",
           exit_code=result.exit_code)
    assert result.exit_code == 2 and len(result.error_lines) == 1 and "class_names" in result.error_lines[0]


def test_run_settings_that_are_not_an_object(tiny: TinyWorkspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    copy_workspace(tiny, tmp_path / "home", monkeypatch)
    run = tmp_path / "odd run"
    run.mkdir()
    (run / "settings.json").write_text("[1, 2, 3]")
    result = run_main(["evaluate", "--run", str(run)], monkeypatch, capsys)
    record("hostile inputs", "run settings.json that is a list", result.error_lines[0] if result.error_lines else "",
           group="runs", exit_code=result.exit_code)
    assert result.exit_code == 2 and len(result.error_lines) == 1 and "settings.json" in result.error_lines[0]


def test_no_loader_unpickles_or_torch_loads_files() -> None:
    source = Path(__file__).resolve().parents[1] / "src" / "galaxy_distill"
    found = [f"{path.name}: {needle}" for path in source.rglob("*.py") for needle in ("torch.load(", "pickle.load(", "pickle.loads(",
             "allow_pickle=True", "yaml.load(", "yaml.unsafe_load") if needle in path.read_text()]
    assert found == []
    cifar = (source / "data" / "cifar.py").read_text()
    assert "_DataOnlyUnpickler(io.BytesIO" in cifar
    record("hostile inputs", "source scan: no torch.load / pickle.load / yaml.load", "none found", group="code")
