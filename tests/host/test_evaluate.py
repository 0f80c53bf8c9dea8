"""`chamlab evaluate`: an exported program's accuracy through the ExecuTorch runtime on the training
oracle's validation split. A macro-cifar10 network is trained on scikit-learn's digits in this
process (a small seeded schedule) and exported with those weights; its ExecuTorch accuracy must be the
PyTorch accuracy of the same weights on the same split, image by image. Bad input: one line, exit 2."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import chamlab
from peers import AdbPeer, Sshd
from PIL import Image

from chamlab.chamnet.spaces import SPACES
from chamlab.chamnet.training import ClassCountError, Schedule, load_dataset
from chamlab.chamnet.training.data import Normalisation, to_input
from chamlab.chamnet.training.schedule import Trained, split, train
from chamlab.core.errors import DataFileError, InputError
from chamlab.host import api
from chamlab.host.measurement.networks import network_item
from chamlab.host.workflows.manifest import (
    Accuracy,
    AccuracyFigure,
    ArchSpec,
    InputSpec,
    Split,
    input_spec,
    manifest_path,
)
from chamlab.operators.export import ExportItem, export_program

SPACE = SPACES.get("macro-cifar10")
ARCH = SPACE.parse("00000001")
#: learns digits to ~75% in seconds: a figure far from chance, so a wrong mapping shows
SCHEDULE = Schedule(epochs=2, batch_size=32, max_train=512, lr=0.05, optimizer="sgd")
SHAPE = (1, 3, 32, 32)


@dataclasses.dataclass(frozen=True)
class Exported:
    pte: Path
    trained: Trained


def export(folder: Path, trained: Trained, batch: int = 1) -> Path:
    item = network_item(SPACE, ARCH, batch)
    pte = folder / "model.pte"
    state = {k: torch.from_numpy(v.copy()) for k, v in trained.state.items()}
    export_program(ExportItem(item.name, item.op_keys, batch), "xnnpack", pte, pte.with_suffix(".etrecord"),
                   state_dict=state)  # fmt: skip
    return pte


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    trained = train(SPACE, ARCH, load_dataset("digits"), SCHEDULE)
    return Exported(export(tmp_path_factory.mktemp("program"), trained), trained)


@pytest.fixture(scope="module")
def baseline(exported: Exported) -> api.EvaluationReport:
    """The program evaluated on the schedule's split (no manifest): the oracle's mapping."""
    t0 = time.perf_counter()
    rep = api.evaluate_program(exported.pte, "digits", schedule=SCHEDULE)
    print(
        f"\nevaluate: {time.perf_counter() - t0:.1f} s wall, child {rep.run_seconds:.2f} s for {rep.n} images"
    )
    return rep


def pytorch_predictions(trained: Trained, indices: np.ndarray, norm: Normalisation) -> np.ndarray:
    """The trained module's predicted class of each example (the oracle's mapping and model)."""
    ds = load_dataset("digits")
    model = SPACE.build(ARCH)
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in trained.state.items()})
    model.eval()
    with torch.no_grad():
        return model(to_input(ds.images[indices], SHAPE, norm)).argmax(dim=1).numpy()


def copy_program(src: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, folder / "model.pte")
    return folder / "model.pte"


def write_folder(root: Path, classes: list[str], mode: str = "L", per_class: int = 2) -> Path:
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            shape = (8, 8) if mode == "L" else (8, 8, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(
                root / name / f"{i}.png"
            )
    return root


# -- agreement with PyTorch ------------------------------------------------------------------------------
def test_executorch_accuracy_is_the_pytorch_accuracy_on_the_oracle_split(
    exported: Exported, baseline: api.EvaluationReport
) -> None:
    rep = baseline
    ds = load_dataset("digits")
    train_idx, val_idx = split(len(ds), SCHEDULE)
    # exactly the oracle's validation split and normalisation
    assert list(rep.indices) == val_idx.tolist() and rep.n == rep.n_split == exported.trained.val_examples
    norm = Normalisation.of(ds.images[train_idx])
    assert rep.mapping == "oracle" and rep.manifest is None
    assert rep.input.mean == list(norm.mean) and rep.input.std == list(norm.std) and rep.input.color == "grey"
    # the same figure as the oracle's PyTorch accuracy of these weights (within one image) ...
    assert abs(rep.accuracy_pct - exported.trained.accuracy) <= 100.0 / rep.n + 1e-9
    assert rep.accuracy_pct > 50  # far from chance (10%): a wrong mapping could not reach it
    # ... image by image
    torch_preds = pytorch_predictions(exported.trained, val_idx, norm)
    agree = int((np.array(rep.predictions) == torch_preds).sum())
    assert agree >= rep.n - 1
    assert rep.runtime == "executorch" and rep.runtime_version and rep.batch == 1
    print(
        f"\nexecutorch {rep.accuracy_pct:.2f}% vs pytorch {exported.trained.accuracy:.2f}% on {rep.n} "
        f"images; {agree}/{rep.n} predictions agree"
    )

    # the split follows the seed: another seed evaluates other images
    other = api.evaluate_program(exported.pte, "digits", schedule=SCHEDULE, seed=1, limit=20)
    assert list(other.indices) == split(len(ds), dataclasses.replace(SCHEDULE, seed=1))[1][:20].tolist()
    assert other.n == 20 and other.n_split == rep.n_split

    # --mean/--std replace the training split's normalisation
    wrong = api.evaluate_program(exported.pte, "digits", schedule=SCHEDULE, mean=(0.0,), std=(1.0,))
    assert wrong.input.mean == [0.0] and wrong.predictions != rep.predictions


def test_a_program_at_batch_4_pads_its_last_batch(
    exported: Exported, baseline: api.EvaluationReport, tmp_path: Path
) -> None:
    pte = export(tmp_path, exported.trained, batch=4)
    rep = api.evaluate_program(pte, "digits", schedule=SCHEDULE)
    assert rep.batch == 4 and rep.input.shape == [4, 3, 32, 32] and rep.n % 4 != 0  # a partial last batch
    assert sum(a != b for a, b in zip(rep.predictions, baseline.predictions, strict=True)) <= 1


# -- the manifest ----------------------------------------------------------------------------------------
def manifest_for(pte: Path, trained: Trained, **changes: object) -> api.Manifest:
    ds = load_dataset("digits")
    spec = input_spec(ds, SCHEDULE, SHAPE)
    if changes:
        spec = spec.model_copy(update=changes)
    accuracy = Accuracy(
        split=Split.of(ds, SCHEDULE),
        figures=[
            AccuracyFigure(runtime="pytorch", dtype="fp32", top1_pct=trained.accuracy, n=trained.val_examples)
        ],
    )
    arch = ArchSpec(space=SPACE.name, arch=SPACE.format(ARCH))
    return api.build_manifest(
        pte, input=spec, num_outputs=10, classes=ds.classes, weights="trained", arch=arch, accuracy=accuracy
    )


def test_the_manifest_beside_the_program_gives_mapping_and_split(
    exported: Exported, baseline: api.EvaluationReport, tmp_path: Path
) -> None:
    pte = copy_program(exported.pte, tmp_path / "run")
    api.write_manifest(manifest_path(pte), manifest_for(pte, exported.trained))
    res = chamlab("evaluate", "--pte", pte, "--data", "digits", "--json")
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)
    # the split (max_train=512) and mapping come from model.json: the oracle's figure again
    assert rep["mapping"] == "manifest" and rep["manifest"] == str(manifest_path(pte))
    assert rep["split"]["max_train"] == SCHEDULE.max_train and rep["n"] == exported.trained.val_examples
    assert abs(rep["accuracy_pct"] - exported.trained.accuracy) <= 100.0 / rep["n"] + 1e-9
    assert rep["recorded"] == [{"runtime": "pytorch", "dtype": "fp32", "top1_pct": exported.trained.accuracy}]
    text = chamlab("evaluate", "--pte", pte, "--data", "digits", "--limit", "30")
    assert text.returncode == 0, text.stderr
    assert "30 of" in text.stdout and "top-1" in text.stdout and "recorded" not in text.stdout  # a subset

    # the manifest's normalisation is what is fed: another mean/std in it changes the predictions
    base = baseline
    api.write_manifest(manifest_path(pte), manifest_for(pte, exported.trained, mean=[0.0], std=[1.0]))
    shifted = api.evaluate_program(pte, "digits")
    assert shifted.input.mean == [0.0] and shifted.predictions != base.predictions
    # ... and its scale: pixels * 1.0 with mean and std in 0..255 units is the same mapping as / 255
    m = manifest_for(pte, exported.trained)
    scaled = m.input.model_copy(
        update={"scale": 1.0, "mean": [m.input.mean[0] * 255], "std": [m.input.std[0] * 255]}
    )
    api.write_manifest(manifest_path(pte), m.model_copy(update={"input": scaled}))
    assert api.evaluate_program(pte, "digits").predictions == base.predictions
    # --no-manifest: the oracle's mapping with the default split
    bare = api.evaluate_program(pte, "digits", use_manifest=False, limit=5)
    assert bare.mapping == "oracle" and bare.split.max_train == Schedule().max_train


def test_another_tools_json_beside_the_program_is_not_a_manifest(
    exported: Exported, baseline: api.EvaluationReport, tmp_path: Path
) -> None:
    pte = copy_program(exported.pte, tmp_path / "run")
    manifest_path(pte).write_text(json.dumps({"lengthscales": [1.0, 2.0]}))  # e.g. the search's GP model.json
    rep = api.evaluate_program(pte, "digits", schedule=SCHEDULE, limit=10)
    assert rep.mapping == "oracle" and rep.notes and "not a chamlab model manifest" in rep.notes[0]
    # a manifest of a program with seeded weights (no dataset): evaluated with the oracle's mapping
    skeleton = api.build_manifest(pte, input=InputSpec.without_data(SHAPE), num_outputs=10, classes=[])
    api.write_manifest(manifest_path(pte), skeleton)
    rep = api.evaluate_program(pte, "digits", schedule=SCHEDULE, limit=10)
    assert rep.mapping == "oracle" and rep.manifest is not None and "no input normalisation" in rep.notes[0]
    assert rep.predictions == baseline.predictions[:10]


# -- bad input ---------------------------------------------------------------------------------------------
def test_bad_input_is_one_line_and_exit_2(exported: Exported, tmp_path: Path) -> None:
    env = {"COLUMNS": "400"}
    res = chamlab("evaluate", "--pte", tmp_path / "nope.pte", "--data", "digits", env=env)
    assert res.returncode == 2 and f"program {tmp_path / 'nope.pte'} does not exist" in res.stderr
    res = chamlab("evaluate", "--pte", exported.pte, "--data", tmp_path / "no-data", env=env)
    assert res.returncode == 2 and f"dataset {tmp_path / 'no-data'} does not exist" in res.stderr
    (tmp_path / "text.pte").write_text("not a program\n")
    res = chamlab("evaluate", "--pte", tmp_path / "text.pte", "--data", "digits", env=env)
    assert res.returncode == 2 and "is not an ExecuTorch program" in res.stderr
    # 11 classes, 10 outputs
    eleven = write_folder(tmp_path / "eleven", [f"c{i:02d}" for i in range(11)])
    res = chamlab("evaluate", "--pte", exported.pte, "--data", eleven, env=env)
    assert res.returncode == 2, res.stderr
    assert "class count mismatch" in res.stderr and "11 classes" in res.stderr and "10 outputs" in res.stderr
    assert res.stderr.count("error:") == 1 and "Traceback" not in res.stderr
    res = chamlab("evaluate", "--pte", exported.pte, "--data", "digits", "--mean", "0.5", env=env)
    assert res.returncode == 2 and "--mean and --std together" in res.stderr
    res = chamlab("evaluate", "--pte", exported.pte, "--data", "digits", "--mean", "a", "--std", "1", env=env)
    assert res.returncode == 2 and "--mean 'a' is not a comma-separated list" in res.stderr


def test_bad_input_through_the_library(exported: Exported, tmp_path: Path) -> None:
    with pytest.raises(ClassCountError, match="class count mismatch"):
        api.evaluate_program(
            exported.pte, write_folder(tmp_path / "eleven", [f"c{i:02d}" for i in range(11)])
        )
    # rgb images for a program whose manifest says grey
    pte = copy_program(exported.pte, tmp_path / "run")
    api.write_manifest(manifest_path(pte), manifest_for(pte, exported.trained))
    rgb = write_folder(tmp_path / "rgb", [str(i) for i in range(10)], mode="RGB")
    with pytest.raises(InputError, match=r"has 3-channel images but .* takes grey images"):
        api.evaluate_program(pte, rgb)
    # class names that are not the manifest's labels
    letters = write_folder(tmp_path / "letters", list("abcdefghij"))
    with pytest.raises(InputError, match=r"classes a, b, .* are not .*labels 0, 1"):
        api.evaluate_program(pte, letters)
    # a manifest of another program, or invalid
    body = json.loads(manifest_path(pte).read_text())
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({**body, "program": {**body["program"], "sha256": "0" * 64}}))
    with pytest.raises(InputError, match="describes another program"):
        api.evaluate_program(pte, "digits", manifest=elsewhere)
    body["input"]["std"] = [0.0]
    manifest_path(pte).write_text(json.dumps(body))
    with pytest.raises(DataFileError, match=r"model.json: field 'input.std': .*positive"):
        api.evaluate_program(pte, "digits")
    with pytest.raises(InputError, match="--mean/--std need 1 value"):
        api.evaluate_program(exported.pte, "digits", mean=(0.5, 0.5, 0.5), std=(1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="--limit must be at least 1"):
        api.evaluate_program(exported.pte, "digits", limit=0)


def tiny_program(path: Path, module: torch.nn.Module, example: torch.Tensor) -> Path:
    from executorch.exir import to_edge

    prog = to_edge(torch.export.export(module.eval(), (example,))).to_executorch()
    path.write_bytes(prog.buffer)
    return path


def test_an_input_the_dataset_cannot_map_to(tmp_path: Path) -> None:
    flat = tiny_program(tmp_path / "flat.pte", torch.nn.Linear(64, 10), torch.zeros(1, 64))
    with pytest.raises(InputError, match=r"takes a 2-D input 1x64; images map onto a 4-D input"):
        api.evaluate_program(flat, "digits")
    two = torch.nn.Sequential(torch.nn.Conv2d(2, 10, 8), torch.nn.Flatten())
    prog = tiny_program(tmp_path / "two.pte", two, torch.zeros(1, 2, 8, 8))
    rgb = write_folder(tmp_path / "rgb", [str(i) for i in range(10)], mode="RGB")
    with pytest.raises(
        InputError, match=r"cannot be mapped onto an input of shape \[1, 2, 8, 8\].*1 or 3 channels"
    ):
        api.evaluate_program(prog, rgb)
    # grey images replicate onto any channel count: this one runs (its 2 outputs per class are its own)
    rep = api.evaluate_program(prog, "digits", limit=8)
    assert rep.n == 8 and rep.input.shape == [1, 2, 8, 8]


def test_a_program_the_runtime_cannot_load_or_a_deadline_fails_the_child_not_chamlab(
    exported: Exported, tmp_path: Path
) -> None:
    cut = tmp_path / "cut.pte"
    cut.write_bytes(exported.pte.read_bytes()[:400])  # the ExecuTorch identifier, then nothing
    with pytest.raises(DataFileError, match=r"cut.pte is not a loadable ExecuTorch program: "):
        api.evaluate_program(cut, "digits")
    res = chamlab("evaluate", "--pte", cut, "--data", "digits", env={"COLUMNS": "400"})
    assert res.returncode == 2 and "is not a loadable ExecuTorch program" in res.stderr, res.stderr
    # the child is stopped at its deadline and the evaluation fails with exit 1's error
    with pytest.raises(api.EvaluationError, match=r"took over 0 s; it was stopped"):
        api.evaluate_program(exported.pte, "digits", timeout_s=0.01)


# -- on a device: the host maps the images, the device's python runs the agent's evaluation ------------
def test_a_local_device_evaluates_image_by_image_as_the_host_does(
    exported: Exported, baseline: api.EvaluationReport, tmp_path: Path
) -> None:
    from chamlab.host.devices.transports.local import LocalConfig

    workdir = tmp_path / "runs"
    dev = LocalConfig(name="here", workdir=str(workdir))
    steps: list[str] = []
    rep = api.evaluate_program(exported.pte, "digits", schedule=SCHEDULE, device=dev, progress=steps.append)
    assert rep.device == "here" and baseline.device == "host" and rep.to_json()["device"] == "here"
    assert rep.predictions == baseline.predictions and rep.indices == baseline.indices
    assert rep.accuracy_pct == baseline.accuracy_pct and rep.runtime_version == baseline.runtime_version
    assert any("pushing model.pte and" in s for s in steps), steps
    assert workdir.is_dir() and not any(workdir.iterdir())  # the pushed folder is removed


def test_evaluate_over_ssh_runs_on_the_remote_side(
    exported: Exported, baseline: api.EvaluationReport, tmp_path: Path, sshd: Sshd
) -> None:
    devices = tmp_path / "devices.toml"
    devices.write_text(sshd.devices_toml("box"))
    res = chamlab(
        "evaluate", "--pte", exported.pte, "--data", "digits", "--schedule", "max_train=512",
        "--target", "box", "--devices", devices, "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["device"] == "box" and out["accuracy_pct"] == baseline.accuracy_pct and out["n"] == baseline.n
    assert not any((sshd.dir / "remote-runs").glob("evaluate-*"))


def test_evaluate_through_adb_on_the_peer(
    exported: Exported, baseline: api.EvaluationReport, tmp_path: Path, adb_peer: AdbPeer
) -> None:
    devices = tmp_path / "devices.toml"
    devices.write_text(adb_peer.devices_toml("phone"))
    res = chamlab(
        "evaluate", "--pte", exported.pte, "--data", "digits", "--schedule", "max_train=512",
        "--serial", adb_peer.serial, "--devices", devices, "--limit", "40",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "on phone (" in res.stdout, res.stdout
    correct = sum(
        p == label for p, label in zip(baseline.predictions[:40], _labels(baseline)[:40], strict=True)
    )
    assert f"({correct}/40)" in res.stdout, res.stdout


def _labels(rep: api.EvaluationReport) -> list[int]:
    ds = load_dataset("digits")
    return [int(ds.labels[i]) for i in rep.indices]


def test_a_device_that_cannot_run_the_shim_is_exit_2_before_any_work(
    exported: Exported, tmp_path: Path
) -> None:
    devices = tmp_path / "devices.toml"
    devices.write_text(
        '[devices.native]\ntransport = "local"\nrunner = "/opt/executor_runner"\n'
        '[devices.nopython]\ntransport = "ssh"\nhost = "127.0.0.1"\nuser = "root"\n'
    )
    res = chamlab(
        "evaluate", "--pte", exported.pte, "--data", "digits", "--target", "native", "--devices", devices
    )
    assert res.returncode == 2 and "native" in res.stderr and "cannot evaluate" in res.stderr, res.stderr
    res = chamlab(
        "evaluate", "--pte", exported.pte, "--data", "digits", "--target", "nopython", "--devices", devices
    )
    assert res.returncode == 2 and "needs the target's python" in res.stderr, res.stderr
    out = tmp_path / "adapt"
    res = chamlab(
        "adapt", "--target", "native", "--devices", devices, "--space", "macro-cifar10", "--latency", "1",
        "--oracle", "train", "--data", "digits", "--evaluate-on", "target", "--out", out,
    )  # fmt: skip
    assert res.returncode == 2 and "cannot evaluate" in res.stderr and not out.exists(), res.stderr
    res = chamlab("adapt", "--target", "native", "--devices", devices, "--space", "macro-cifar10",
                  "--latency", "1", "--evaluate-on", "phone", "--out", out)  # fmt: skip
    assert res.returncode == 2 and "--evaluate-on must be host or target" in res.stderr, res.stderr
