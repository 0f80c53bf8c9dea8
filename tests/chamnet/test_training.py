"""The training oracle: datasets and their mapping, the seeded proxy schedule, the on-disk cache, and
training in real worker processes and as tasks on a real one-node Ray cluster (scikit-learn's digits,
tiny schedules: these check behaviour and determinism, not accuracy worth reporting)."""

from __future__ import annotations

import gzip
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from chamlab.chamnet.spaces import SPACES
from chamlab.chamnet.training import (
    ClassCountError,
    Schedule,
    TrainingCache,
    TrainingOracle,
    TrainRecord,
    load_dataset,
)
from chamlab.chamnet.training.data import Normalisation, to_input
from chamlab.chamnet.training.oracle import train_task
from chamlab.chamnet.training.schedule import Trained, calibration_indices, evaluate, split, train
from chamlab.core.errors import DataFileError, InputError
from chamlab.operators.quant import DEFAULT_RECIPE

SPACE = SPACES.get("macro-cifar10")
A = SPACE.parse("00000001")
B = SPACE.parse("10000000")
TINY = Schedule(epochs=2, batch_size=32, max_train=256, max_val=128)


@pytest.fixture(scope="module")
def trained_a() -> Trained:
    """Arch A trained (and quantized) in this process: the reference every executor must reproduce
    exactly."""
    return train(SPACE, A, load_dataset("digits"), TINY, quant_recipe=DEFAULT_RECIPE)


@pytest.fixture(scope="module")
def digits_a(trained_a: Trained) -> float:
    return trained_a.accuracy


# -- datasets -------------------------------------------------------------------------------------------
def write_idx(folder: Path, images: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    img = struct.pack(">HBB3I", 0, 8, 3, n, h, w) + images.astype(np.uint8).tobytes()
    lab = struct.pack(">HBBI", 0, 8, 1, len(labels)) + labels.astype(np.uint8).tobytes()
    for name, raw in (("train-images-idx3-ubyte", img), ("train-labels-idx1-ubyte", lab)):
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)


def test_digits_and_idx_files_plain_or_gzipped(tmp_path: Path) -> None:
    d = load_dataset("digits")
    assert d.images.shape == (1797, 1, 8, 8) and d.images.dtype == np.uint8 and d.images.max() == 255
    assert d.num_classes == 10 and d.digest == load_dataset("digits").digest
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (12, 5, 4)), np.arange(12) % 3
    write_idx(tmp_path / "plain", images, labels, gz=False)
    write_idx(tmp_path / "gz", images, labels, gz=True)  # the layout Debian's dataset-fashion-mnist has
    plain, packed = load_dataset(tmp_path / "plain"), load_dataset(tmp_path / "gz")
    assert plain.images.shape == (12, 1, 5, 4) and (plain.images[:, 0] == images).all()
    assert plain.labels.tolist() == labels.tolist() and plain.classes == ("0", "1", "2")
    assert plain.digest == packed.digest != d.digest

    bad = tmp_path / "bad" / "train-images-idx3-ubyte"
    write_idx(bad.parent, images, labels, gz=False)
    bad.write_bytes(bad.read_bytes()[:-7])
    with pytest.raises(DataFileError, match=r"train-images-idx3-ubyte is truncated or corrupt"):
        load_dataset(bad.parent)
    bad.write_bytes(b"\x00\x00\x0d\x03" + bytes(40))
    with pytest.raises(DataFileError, match="not an IDX file of unsigned bytes"):
        load_dataset(bad.parent)
    write_idx(tmp_path / "short", images, labels[:5], gz=True)
    with pytest.raises(DataFileError, match="12 images but 5 labels"):
        load_dataset(tmp_path / "short")


def test_image_folder(tmp_path: Path) -> None:
    root = tmp_path / "pics"
    rng = np.random.default_rng(1)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)).save(root / cls / "a.png")
        Image.fromarray(rng.integers(0, 256, (9, 9), dtype=np.uint8)).save(root / cls / "b.jpg")
    d = load_dataset(root, image_size=16)
    assert d.images.shape == (4, 3, 16, 16) and d.classes == ("cat", "dog")
    assert d.labels.tolist() == [0, 0, 1, 1]
    (root / "dog" / "c.png").write_bytes(b"not an image")
    with pytest.raises(DataFileError, match=r"cannot read image .*dog/c\.png"):
        load_dataset(root)
    (root / "dog" / "c.png").unlink()
    (root / "empty").mkdir()
    with pytest.raises(DataFileError, match="class directory 'empty' holds no images"):
        load_dataset(root)


def test_bad_dataset_arguments(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"dataset .*nowhere does not exist"):
        load_dataset(tmp_path / "nowhere")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(InputError, match="is a file; unknown format"):
        load_dataset(tmp_path / "x.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="unknown format"):
        load_dataset(tmp_path / "empty")
    eleven = tmp_path / "eleven"
    for c in range(11):
        (eleven / f"c{c:02d}").mkdir(parents=True)
        Image.fromarray(np.full((4, 4), c, dtype=np.uint8)).save(eleven / f"c{c:02d}" / "x.png")
    with pytest.raises(ClassCountError, match=r"dataset .* has 11 classes but .*macro-cifar10.* 10 outputs"):
        TrainingOracle(SPACE, eleven, cache=TrainingCache(tmp_path / "cache"))
    with pytest.raises(InputError, match="unknown executor 'dask'; choose one of process, ray"):
        TrainingOracle(SPACE, "digits", executor="dask")
    with pytest.raises(InputError, match="--address is for --executor ray only"):
        TrainingOracle(SPACE, "digits", address="127.0.0.1:6379")


def test_mapping_onto_the_input() -> None:
    d = load_dataset("digits")
    norm = Normalisation.of(d.images)
    x = to_input(d.images[:5], (1, 3, 32, 32), norm)
    assert x.shape == (5, 3, 32, 32) and torch.equal(x[:, 0], x[:, 2])  # grey replicated
    full = to_input(d.images, (1, 1, 8, 8), norm)
    assert abs(float(full.mean())) < 1e-4 and abs(float(full.std()) - 1.0) < 1e-2  # normalised


def test_schedule_parse_and_checks() -> None:
    s = Schedule.parse("epochs=1, lr=0.1,max_train=64")
    assert (s.epochs, s.lr, s.max_train, s.batch_size) == (1, 0.1, 64, Schedule().batch_size)
    assert Schedule.parse(None) == Schedule() == Schedule.from_json(Schedule().to_json())
    with pytest.raises(InputError, match="'epoch=1' is not NAME=VALUE with a known name; known: epochs"):
        Schedule.parse("epoch=1")
    with pytest.raises(InputError, match="epochs must be a number, got 'two'"):
        Schedule.parse("epochs=two")
    with pytest.raises(InputError, match="val_fraction must be in"):
        Schedule(val_fraction=1.0)
    train_idx, val_idx = split(100, Schedule(val_fraction=0.25, max_train=50))
    assert len(train_idx) == 50 and len(val_idx) == 25 and not set(train_idx) & set(val_idx)


def test_training_is_seeded_and_learns(digits_a: float) -> None:
    d = load_dataset("digits")
    again = train(SPACE, A, d, TINY)
    assert again.accuracy == digits_a  # bit for bit on a CPU
    assert digits_a > 25.0 and again.final_loss < np.log(10)  # chance is 10% and ln(10)
    other_seed = train(SPACE, A, d, Schedule(**{**TINY.to_json(), "seed": 1}))
    assert other_seed.accuracy != digits_a


# -- the oracle ------------------------------------------------------------------------------------------
def test_int8_accuracy_is_seeded_and_calibrated_on_the_training_split(trained_a: Trained) -> None:
    assert trained_a.quant_recipe == DEFAULT_RECIPE and trained_a.accuracy_int8 is not None
    assert abs(trained_a.accuracy_int8 - trained_a.accuracy) < 15.0  # quantized, not broken
    train_idx, val_idx = split(len(load_dataset("digits")), TINY)
    batches = calibration_indices(train_idx, TINY, 8)
    flat = np.concatenate(batches)
    assert len(flat) == len(set(flat)) == 256 and set(flat) <= set(train_idx)
    assert not set(flat) & set(val_idx)  # never a validation image
    assert [len(b) for b in batches] == [32] * 8
    assert all((a == b).all() for a, b in zip(batches, calibration_indices(train_idx, TINY, 8), strict=True))
    other = calibration_indices(train_idx, Schedule(**{**TINY.to_json(), "seed": 1}), 8)
    assert not (np.concatenate(other) == flat).all()


def test_oracle_trains_in_worker_processes_caches_and_keeps_weights(
    tmp_path: Path, trained_a: Trained, digits_a: float
) -> None:
    cache = TrainingCache(tmp_path / "cache")
    seen: list[TrainRecord] = []
    with TrainingOracle(
        SPACE, "digits", schedule=TINY, workers=1, cache=cache, on_result=lambda a, r: seen.append(r)
    ) as oracle:
        assert oracle([A, A]) == [digits_a, digits_a]  # a worker process gives what this process gives
        key = oracle.key(A)
        assert oracle.accuracies(A) == {"fp32": digits_a, "int8": trained_a.accuracy_int8}  # bit for bit
    assert [r.arch for r in seen] == ["00000001"] and not seen[0].cached
    meta = json.loads((cache.root / f"{key}.json").read_text())
    assert meta["accuracy"] == digits_a and meta["schedule"] == TINY.to_json() and meta["space"] == SPACE.name
    assert meta["int8"][DEFAULT_RECIPE]["accuracy"] == trained_a.accuracy_int8
    assert sorted(os.listdir(cache.root)) == [f"{key}.json", f"{key}.npz"]  # nothing half-written left

    resumed = TrainingOracle(
        SPACE, "digits", schedule=TINY, cache=cache, on_result=lambda a, r: seen.append(r)
    )
    assert resumed([A]) == [digits_a] and seen[-1].cached and resumed._pool is None  # no training
    weights = resumed.state_dict(A)
    assert weights is not None and resumed.state_dict(B) is None
    model = SPACE.build(A)
    model.load_state_dict(weights)  # strict: exactly the deployed network's keys
    d = load_dataset("digits")
    train_idx, val_idx = split(len(d), TINY)
    shape = SPACE.input_shape(A)
    assert evaluate(model, d, val_idx, shape, Normalisation.of(d.images[train_idx]), 64) == digits_a
    longer = TrainingOracle(SPACE, "digits", schedule=Schedule(epochs=3), cache=cache)
    assert longer.key(A) != key and longer.record(A) is None  # another schedule: another entry


def test_int8_oracle_answers_int8_and_quantizes_an_old_entry_without_training(
    tmp_path: Path, trained_a: Trained
) -> None:
    cache = TrainingCache(tmp_path / "cache")
    # an entry as the oracle wrote it before int8 accuracy: weights and fp32 figures only
    oracle = TrainingOracle(SPACE, "digits", schedule=TINY, cache=cache, accuracy_dtype="int8")
    key = oracle.key(A)
    meta, weights = cache.paths(key)
    from chamlab.chamnet.training.oracle import write_weights

    write_weights(weights, trained_a.state)
    old = {"key": key, "arch": "00000001", "accuracy": trained_a.accuracy, "train_seconds": 1.5,
           "final_loss": 0.5, "train_examples": 256, "val_examples": 128}  # fmt: skip
    meta.write_text(json.dumps(old))
    stamp = weights.stat().st_mtime_ns
    with oracle:
        assert oracle([A]) == [trained_a.accuracy_int8]
    rec = json.loads(meta.read_text())
    assert rec["train_seconds"] == 1.5 and weights.stat().st_mtime_ns == stamp  # not trained again
    assert rec["int8"][DEFAULT_RECIPE]["accuracy"] == trained_a.accuracy_int8
    assert "accuracy_dtype" not in oracle.describe() and oracle.describe()["quant_recipe"] == DEFAULT_RECIPE
    with pytest.raises(InputError, match="unknown accuracy dtype 'int4'"):
        TrainingOracle(SPACE, "digits", schedule=TINY, cache=cache, accuracy_dtype="int4")

    # an int8 program of the trained weights calibrated on the oracle's batches (what adapt exports)
    # scores what the oracle measured, give or take a rounding difference on an image or two
    from executorch.extension.pybindings import _C as rt

    from chamlab.operators.export import lower

    calibration = oracle.calibration(A)
    assert len(calibration) == 8 and calibration[0].shape == (32, *SPACE.input_shape(A)[1:])
    pte = tmp_path / "a.pte"
    keys = [op.key for op in SPACE.ops(A)]
    state = oracle.state_dict(A)
    lower(keys, "xnnpack", pte, tmp_path / "a.etrecord", 1, state, dtype="int8", recipe=DEFAULT_RECIPE,
          calibration=calibration)  # fmt: skip
    method = rt._load_program(str(pte)).load_method("forward")
    d = load_dataset("digits")
    train_idx, val_idx = split(len(d), TINY)
    norm = Normalisation.of(d.images[train_idx])
    x = to_input(d.images[val_idx], SPACE.input_shape(A), norm)
    pred = np.array([int(method.call([x[i : i + 1]])[0].argmax()) for i in range(len(val_idx))])
    accuracy = 100.0 * float((pred == d.labels[val_idx]).mean())
    assert abs(accuracy - trained_a.accuracy_int8) <= 100.0 * 2 / len(val_idx), accuracy


def test_a_dataset_that_changed_under_the_search_fails_the_training(tmp_path: Path) -> None:
    from chamlab.chamnet.training.oracle import DataSpec

    with pytest.raises(DataFileError, match="changed while the search ran"):
        train_task(SPACE, A, DataSpec("digits", 32), "0" * 24, TINY, str(tmp_path / "w.npz"))
    assert not (tmp_path / "w.npz").exists()


@pytest.mark.usefixtures("ray_turn")  # one Ray cluster at a time under `make unit` (xdist)
def test_oracle_trains_as_ray_tasks_on_a_real_cluster(
    tmp_path: Path, trained_a: Trained, digits_a: float
) -> None:
    import ray
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        with TrainingOracle(
            SPACE, "digits", schedule=TINY, executor="ray", address=cluster.address,
            cache=TrainingCache(tmp_path / "cache"),
        ) as oracle:  # fmt: skip
            assert oracle([A]) == [digits_a]  # a Ray worker gives what this process gives
            assert oracle.accuracies(A)["int8"] == trained_a.accuracy_int8
            assert ray.is_initialized()
            assert oracle.state_dict(A) is not None
        assert not ray.is_initialized()  # the oracle disconnected what it connected
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
