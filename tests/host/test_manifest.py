"""``model.json``: built from a dataset's split and a program file, written atomically, read back equal,
and every invalid field named when it is read. The input mapping it records is the oracle's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from chamlab.chamnet.training import Schedule, load_dataset
from chamlab.chamnet.training.data import Normalisation, to_input
from chamlab.chamnet.training.schedule import split
from chamlab.core.errors import DataFileError, InputError
from chamlab.host.workflows.manifest import (
    FORMAT,
    PIXEL_SCALE,
    Accuracy,
    AccuracyFigure,
    ArchSpec,
    InputSpec,
    Latency,
    Manifest,
    RuntimeSpec,
    Split,
    build_manifest,
    find_manifest,
    input_spec,
    manifest_path,
    normalisation_of,
    oracle_input_spec,
    read_manifest,
    write_manifest,
)

SCHEDULE = Schedule(max_train=300)


@pytest.fixture()
def program(tmp_path: Path) -> Path:
    pte = tmp_path / "model.pte"
    pte.write_bytes(b"\0\0\0\0ET12 stand-in bytes: the manifest hashes the file, it does not load it")
    return pte


def full(pte: Path) -> Manifest:
    ds = load_dataset("digits")
    split_rec = Split.of(ds, SCHEDULE)
    return build_manifest(
        pte,
        input=input_spec(ds, SCHEDULE, (1, 3, 32, 32)),
        num_outputs=12,
        classes=ds.classes,
        dtype="int8",
        quant_recipe="xnnpack-int8-pc-v1",
        weights="trained",
        arch=ArchSpec(space="macro-cifar10", arch="00000001", values={"layer1": 0}),
        accuracy=Accuracy(
            split=split_rec,
            figures=[
                AccuracyFigure(runtime="pytorch", dtype="fp32", top1_pct=91.5, n=359),
                AccuracyFigure(runtime="pytorch", dtype="int8", top1_pct=90.0, n=359),
                AccuracyFigure(
                    runtime="executorch", runtime_version="1.5.1", dtype="int8", top1_pct=90.3, n=359
                ),
            ],
        ),
        latency=Latency(
            device="local-cpu",
            backend="xnnpack",
            dtype="int8",
            threads=2,
            batch=1,
            measured_ms=0.41,
            runs_ms=[0.4, 0.41, 0.43],
        ),
        runtime=RuntimeSpec(version="1.5.1", backend="xnnpack", threads=2),
    )


def test_build_write_read_round_trip(program: Path) -> None:
    m = full(program)
    path = write_manifest(manifest_path(program), m)
    assert path == program.parent / "model.json"
    body = json.loads(path.read_text())
    assert body["format"] == FORMAT and body["schema_version"] == 1 and body["chamlab_version"]
    assert body["program"]["file"] == "model.pte" and len(body["program"]["sha256"]) == 64
    assert body["input"]["shape"] == [1, 3, 32, 32] and body["input"]["scale"] == PIXEL_SCALE
    assert body["input"]["color"] == "grey" and len(body["input"]["mean"]) == 1
    assert body["output"]["shape"] == [1, 12]
    assert body["labels"] == [str(i) for i in range(10)] + [None, None]  # outputs no class maps to
    assert body["accuracy"]["split"]["max_train"] == 300 and body["latency"]["threads"] == 2
    back = read_manifest(path)
    assert back == m and back.accuracy is not None
    assert back.accuracy.of("executorch", "int8") == 90.3 and back.accuracy.of("executorch", "fp32") is None
    assert back.accuracy.split.schedule().max_train == 300
    found, why = find_manifest(program)
    assert found == m and why is None
    # unknown figures are null, not invented
    bare = build_manifest(program, input=m.input, num_outputs=10, classes=[str(i) for i in range(10)])
    assert bare.accuracy is None and bare.latency is None and bare.arch is None
    assert read_manifest(write_manifest(tmp := program.parent / "bare.json", bare)) == bare and tmp.is_file()
    # a program with chamlab's seeded weights: its shape, no data mapping, no class names
    skeleton = build_manifest(
        program, input=InputSpec.without_data((1, 3, 32, 32)), num_outputs=10, classes=[]
    )
    assert skeleton.input.mean is None and not skeleton.input.known and skeleton.labels == [None] * 10
    assert read_manifest(write_manifest(program.parent / "skeleton.json", skeleton)) == skeleton
    with pytest.raises(InputError, match="records no normalisation"):
        normalisation_of(skeleton.input)


def test_input_spec_is_the_oracles_mapping() -> None:
    ds = load_dataset("digits")
    train_idx, _ = split(len(ds), SCHEDULE)
    spec = input_spec(ds, SCHEDULE, (1, 3, 16, 16))
    norm = Normalisation.of(ds.images[train_idx])
    assert normalisation_of(spec) == norm
    # the same numbers through the scale written out as 1.0 and mean/std in pixel units
    scaled = spec.model_copy(update={"scale": 1.0, "mean": [norm.mean[0] * 255], "std": [norm.std[0] * 255]})
    a = to_input(ds.images[:4], (4, 3, 16, 16), norm)
    b = to_input(ds.images[:4], (4, 3, 16, 16), normalisation_of(scaled))
    torch.testing.assert_close(a, b)
    # the recipe docs/manifest.md gives an app, step by step, computes the oracle's input
    img = ds.images[5, 0].astype(np.float64)  # 8x8 grey
    x = (img * spec.scale - spec.mean[0]) / spec.std[0]
    x = torch.nn.functional.interpolate(torch.tensor(x)[None, None], size=(16, 16), mode="bilinear",
                                        align_corners=False)  # fmt: skip
    x = x.expand(1, 3, 16, 16).float()
    torch.testing.assert_close(x, to_input(ds.images[5:6], (1, 3, 16, 16), norm), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b["input"].pop("mean"), r"field 'input.mean' is missing"),
        (
            lambda b: b["input"].update(std=[0.2, 0.2, 0.2]),
            r"field 'input': std must have 1 value\(s\) for color 'grey'",
        ),
        (
            lambda b: b["input"].update(std=[-1.0]),
            r"field 'input.std': every standard deviation must be positive",
        ),
        (lambda b: b["input"].update(shape=[3, 32, 32]), r"field 'input.shape': must be four positive sizes"),
        (lambda b: b["input"].update(color="bgr"), r"field 'input.color': Input should be 'grey' or 'rgb'"),
        (lambda b: b.update(labels=["a"]), r"labels has 1 entries but the output has 12 classes"),
        (lambda b: b.update(colour="rgb"), r"field 'colour' is unknown"),
        (lambda b: b["program"].update(sha256="xyz"), r"field 'program.sha256'"),
        (lambda b: b["latency"].update(threads=0), r"field 'latency.threads'"),
        (lambda b: b.update(schema_version=2), r"schema_version 2; this chamlab .* reads 1"),
        (lambda b: b.pop("format"), r"field 'format' is missing"),
        (lambda b: b["input"].update(mean=None), r"field 'input': mean, std and color are null together"),
    ],
)
def test_read_names_the_bad_field(program: Path, change, message: str) -> None:  # type: ignore[no-untyped-def]
    path = write_manifest(manifest_path(program), full(program))
    body = json.loads(path.read_text())
    change(body)
    path.write_text(json.dumps(body))
    with pytest.raises(DataFileError, match=message) as info:
        read_manifest(path)
    assert str(path) in info.value.message


def test_unreadable_manifests_and_atomic_writes(program: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"manifest .*nope.json does not exist"):
        read_manifest(tmp_path / "nope.json")
    path = manifest_path(program)
    path.write_text("{not json")
    with pytest.raises(DataFileError, match="is not JSON"):
        read_manifest(path)
    path.write_text("[1, 2]")
    with pytest.raises(DataFileError, match="must hold a JSON object, not list"):
        read_manifest(path)
    # an invalid manifest is never written, and what was there stays
    good = write_manifest(path, full(program))
    before = good.read_bytes()
    bad = full(program).to_json()
    bad["input"]["mean"] = []
    with pytest.raises(DataFileError, match=r"field 'input': mean must have 1 value"):
        write_manifest(path, bad)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.pte"]
    # more classes than outputs is refused when building
    with pytest.raises(InputError, match="11 classes do not fit the program's 10 outputs"):
        build_manifest(
            program, input=full(program).input, num_outputs=10, classes=[str(i) for i in range(11)]
        )


def test_find_manifest_skips_other_json(program: Path) -> None:
    assert find_manifest(program) == (None, None)
    manifest_path(program).write_text(json.dumps({"lengthscales": [1.0]}))
    found, why = find_manifest(program)
    assert found is None and why is not None and "not a chamlab model manifest" in why
    body = full(program).to_json()
    body["labels"] = []
    manifest_path(program).write_text(json.dumps(body))
    with pytest.raises(DataFileError, match="labels has 0 entries"):  # says it is one, but is invalid
        find_manifest(program)


def test_rgb_specs_need_three_values_and_map_to_one_or_three_channels(tmp_path: Path) -> None:
    from PIL import Image

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.new("RGB", (4, 4), (200, 10 * i, 10)).save(tmp_path / name / f"{i}.png")
    ds = load_dataset(tmp_path, image_size=4)
    spec = input_spec(ds, Schedule(val_fraction=0.5), (1, 3, 8, 8))
    assert spec.color == "rgb" and len(spec.mean) == 3 and spec.resize.prescale_side == 8
    assert (
        input_spec(ds, Schedule(val_fraction=0.5), (1, 3, 8, 8), prescale_side=32).resize.prescale_side == 32
    )
    assert input_spec(ds, Schedule(val_fraction=0.5), (1, 1, 8, 8)).color == "rgb"
    with pytest.raises(InputError, match=r"cannot be mapped onto an input of shape \[1, 4, 8, 8\]"):
        input_spec(ds, Schedule(val_fraction=0.5), (1, 4, 8, 8))


def test_the_oracles_input_spec() -> None:
    from chamlab.chamnet.spaces import SPACES
    from chamlab.chamnet.training import TrainingOracle

    schedule = Schedule(max_train=100, seed=3)
    with TrainingOracle(SPACES.get("macro-cifar10"), "digits", schedule=schedule) as oracle:
        spec = oracle_input_spec(oracle, (1, 3, 32, 32))
    ds = load_dataset("digits")
    train_idx, _ = split(len(ds), schedule)
    assert normalisation_of(spec) == Normalisation.of(ds.images[train_idx])
    assert spec.resize.prescale_side is None  # digits are used at their own size
