"""Final training (issue 22): named schedules, a checkpoint per epoch that a killed training resumes
from to the same weights, the training device (CPU here; the CUDA test is marked ``gpu``), and Ray's GPU
request. Tiny: macro-cifar10 ``00000001`` on scikit-learn's digits, a few hundred images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from chamlab.chamnet.spaces import SPACES
from chamlab.chamnet.training import Schedule, load_dataset
from chamlab.chamnet.training import device as devices
from chamlab.chamnet.training.final import (
    CHECKPOINT_META,
    DEFAULT_FINAL,
    FINAL_SCHEDULES,
    check_final_schedule,
    resolve_final_schedule,
    train_final,
)
from chamlab.chamnet.training.oracle import ray_gpus_per_trial
from chamlab.core.errors import InputError

SPACE = SPACES.get("macro-cifar10")
ARCH = SPACE.parse("00000001")
PROXY = Schedule(epochs=1, max_train=128, max_val=96, lr=0.05)


class Killed(Exception):
    """Stands in for a kill after an epoch's checkpoint was written."""


def test_named_schedules_keep_the_oracles_split_and_bad_names_list_the_choices() -> None:
    assert check_final_schedule("none") is None and check_final_schedule(None) is None
    assert check_final_schedule(DEFAULT_FINAL) == DEFAULT_FINAL and set(FINAL_SCHEDULES) >= {"standard"}
    proxy = Schedule(seed=3, val_fraction=0.25, max_val=500)
    final = resolve_final_schedule("standard", proxy, threads=2)
    assert (final.seed, final.val_fraction, final.max_val) == (3, 0.25, 500) and final.threads == 2
    assert final.epochs == FINAL_SCHEDULES["standard"]["epochs"] and final.max_train > proxy.max_train
    over = resolve_final_schedule("epochs=1,max_train=256", proxy, threads=1)
    assert (over.epochs, over.max_train, over.lr) == (1, 256, FINAL_SCHEDULES["standard"]["lr"])
    with pytest.raises(
        InputError, match=r"'bogus': unknown schedule; choose one of standard, short, long, none"
    ):
        check_final_schedule("bogus")
    with pytest.raises(InputError, match="seed defines the validation split"):
        check_final_schedule("epochs=1,seed=4")
    with pytest.raises(InputError, match=r"--final-schedule 'epochs=x'"):
        check_final_schedule("epochs=x")


def test_a_killed_final_training_resumes_from_its_last_epoch_to_the_same_weights(tmp_path: Path) -> None:
    data = load_dataset("digits")
    schedule = resolve_final_schedule("epochs=2,max_train=256", PROXY, threads=1)
    whole = train_final(SPACE, ARCH, data, schedule, name="t", root=tmp_path / "a", device="cpu")
    assert not whole.cached and whole.resumed_from == 0 and whole.device == "cpu"
    assert not (whole.folder / CHECKPOINT_META).exists()  # a finished training keeps its weights only

    def kill_after_first(epoch: int, epochs: int, loss: float) -> None:
        if epoch == 0:
            raise Killed

    with pytest.raises(Killed):
        train_final(SPACE, ARCH, data, schedule, name="t", root=tmp_path / "b", on_epoch=kill_after_first)
    [folder] = (tmp_path / "b").iterdir()
    assert (folder / CHECKPOINT_META).is_file() and not (folder / "weights.npz").exists()
    resumed_at: list[int] = []
    epochs_run: list[int] = []
    again = train_final(
        SPACE, ARCH, data, schedule, name="t", root=tmp_path / "b", on_resume=resumed_at.append,
        on_epoch=lambda e, n, loss: epochs_run.append(e),
    )  # fmt: skip
    assert resumed_at == [1] and epochs_run == [1] and again.resumed_from == 1
    assert again.accuracy == whole.accuracy
    for k, v in whole.state.items():  # bit for bit the uninterrupted training's weights
        np.testing.assert_array_equal(again.state[k], v, err_msg=k)
    # finished: found, nothing trained; the int8 accuracy of a recipe is added from the stored weights
    found = train_final(
        SPACE, ARCH, data, schedule, name="t", root=tmp_path / "b", quant_recipe="xnnpack-int8-pc-v1"
    )
    assert found.cached and found.train_seconds == 0 and found.accuracy_int8 is not None


def test_a_warm_start_is_part_of_the_key_and_changes_the_training(tmp_path: Path) -> None:
    data = load_dataset("digits")
    schedule = resolve_final_schedule("epochs=1,max_train=256", PROXY, threads=1)
    cold = train_final(SPACE, ARCH, data, schedule, name="t", root=tmp_path)
    warm = train_final(
        SPACE, ARCH, data, schedule, name="t", root=tmp_path, init_state=cold.state, warm_start="k1"
    )
    assert warm.key != cold.key and warm.warm_start == "k1"
    assert any(not np.array_equal(warm.state[k], cold.state[k]) for k in cold.state)


def test_training_falls_back_to_the_cpu_and_a_forced_device_is_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(devices.DEVICE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.train_device() == "cpu"
    monkeypatch.setenv(devices.DEVICE_ENV, "cuda")
    with pytest.raises(InputError, match="CHAMLAB_TRAIN_DEVICE=cuda, but torch sees no CUDA device"):
        devices.train_device()
    monkeypatch.setenv(devices.DEVICE_ENV, "tpu")
    with pytest.raises(InputError, match="choose one of cpu, cuda"):
        devices.train_device()
    monkeypatch.setenv(devices.DEVICE_ENV, "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.train_device() == "cpu"  # forced: a machine with a GPU trains on its CPU
    monkeypatch.delenv(devices.DEVICE_ENV)
    assert devices.train_device() == "cuda"


def test_ray_trials_request_a_gpu_share_only_where_the_cluster_has_gpus() -> None:
    assert ray_gpus_per_trial({"CPU": 16.0}) == 0.0
    assert ray_gpus_per_trial({"CPU": 16.0, "GPU": 0.0}) == 0.0
    assert 0 < ray_gpus_per_trial({"CPU": 16.0, "GPU": 1.0}) <= 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_final_training_on_the_gpu_trains_and_matches_the_cpu_closely(tmp_path: Path) -> None:
    data = load_dataset("digits")
    schedule = resolve_final_schedule("epochs=2,max_train=512", PROXY, threads=1)
    cpu = train_final(SPACE, ARCH, data, schedule, name="t", root=tmp_path / "cpu", device="cpu")
    gpu = train_final(SPACE, ARCH, data, schedule, name="t", root=tmp_path / "gpu", device="cuda")
    assert gpu.device == "cuda" and gpu.accuracy > 30  # trained: far above chance (10 %)
    assert abs(gpu.accuracy - cpu.accuracy) <= 15  # bfloat16 autocast: close, not bit-identical
