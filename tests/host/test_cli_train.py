"""`chamlab search --oracle train`: choosing the oracle, bad input, and a real (tiny) training search."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, chamlab
from PIL import Image

from chamlab.chamnet.search import TableOracle
from chamlab.chamnet.spaces import SPACES
from chamlab.chamnet.training import Schedule, TrainingCache, TrainingOracle
from chamlab.core.errors import InputError
from chamlab.host.workflows.oracles import choose_oracle, oracle_identity

LUT = REPO / "bench" / "data" / "macro-cifar10-local-cpu.parquet"
SCHEDULE = "epochs=1,batch_size=32,max_train=96,max_val=64"


def test_choose_oracle() -> None:
    space = SPACES.get("macro-cifar10")
    table = choose_oracle(space)
    assert isinstance(table, TableOracle) and oracle_identity(table) is None
    trained = choose_oracle(space, "train", data="digits", schedule="epochs=1", workers=2)
    assert isinstance(trained, TrainingOracle) and trained.schedule == Schedule(epochs=1)
    ident = oracle_identity(trained)
    assert ident is not None and ident["kind"] == "train" and ident["data"] == "digits"
    assert ident["schedule"]["epochs"] == 1 and len(ident["data_digest"]) == 24
    with pytest.raises(InputError, match="--data, --workers apply to --oracle train only"):
        choose_oracle(space, "table", data="digits", workers=2)
    with pytest.raises(InputError, match="--oracle train needs --data"):
        choose_oracle(space, "train")
    with pytest.raises(InputError, match="unknown oracle 'magic'; known: table, train"):
        choose_oracle(space, "magic")
    # the accuracy dtype: --accuracy, else the run's dtype; a table has fp32 only
    assert trained.accuracy_dtype == "fp32"
    assert choose_oracle(space, "train", data="digits", dtype="int8").accuracy_dtype == "int8"  # type: ignore[attr-defined]
    fp32 = choose_oracle(space, "train", data="digits", dtype="int8", accuracy="fp32")
    assert fp32.accuracy_dtype == "fp32"  # type: ignore[attr-defined]
    assert choose_oracle(space, "table", dtype="int8").accuracy_dtype == "fp32"  # type: ignore[attr-defined]
    with pytest.raises(InputError, match="--accuracy int8: the table oracle holds fp32 accuracy only"):
        choose_oracle(space, "table", accuracy="int8")
    with pytest.raises(InputError, match="--accuracy 'fp16': choose one of fp32, int8"):
        choose_oracle(space, "train", data="digits", accuracy="fp16")


def test_search_bad_training_inputs(tmp_path: Path) -> None:
    eleven = tmp_path / "eleven"
    for c in range(11):
        (eleven / f"c{c:02d}").mkdir(parents=True)
        Image.fromarray(np.full((4, 4), c, dtype=np.uint8)).save(eleven / f"c{c:02d}" / "x.png")
    base = [
        "search",
        "--space",
        "macro-cifar10",
        "--latency",
        "0.3",
        "--lut",
        LUT,
        "--out",
        tmp_path / "never",
    ]
    cases = [
        (["--oracle", "train", "--data", tmp_path / "nowhere"], "nowhere does not exist"),
        (["--oracle", "train", "--data", eleven], "class count mismatch: dataset"),
    ]
    table = tmp_path / "bench.csv"
    table.write_text("width,accuracy,latency_ms\n1,50,1\n2,60,2\n")
    for args, msg in cases:
        res = chamlab(*base, *args, env={"COLUMNS": "300"})
        assert res.returncode == 2 and msg in res.stderr, (args, res.stderr)
    for args, msg in [
        (["--data", "digits"], "--data apply to --oracle train only"),
        (["--oracle", "train", "--data", "digits"], "--oracle train needs a network space"),
    ]:
        res = chamlab("search", "--space", f"table:{table}", "--latency", "5", "--out", tmp_path / "never",
                      *args, env={"COLUMNS": "300"})  # fmt: skip
        assert res.returncode == 2 and msg in res.stderr, (args, res.stderr)
    assert not (tmp_path / "never").exists()


def test_search_with_the_training_oracle(tmp_path: Path, isolated_cache: Path) -> None:
    out = tmp_path / "run"
    args = ["search", "--space", "macro-cifar10", "--latency", "0.3", "--lut", LUT, "--budget", "2",
            "--init", "2", "--parallel", "2", "--oracle", "train", "--data", "digits", "--workers", "2",
            "--out", out, "--json"]  # fmt: skip
    res = chamlab(*args, "--schedule", SCHEDULE)
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    assert result["queries"] == 2 and 0 <= result["oracle_accuracy"] <= 100
    hist = pd.read_parquet(out / "history.parquet")
    space = SPACES.get("macro-cifar10")
    oracle = TrainingOracle(space, "digits", schedule=Schedule.parse(SCHEDULE), cache=TrainingCache())
    for row in hist.itertuples(index=False):
        arch = tuple(int(getattr(row, f"layer{i}")) for i in range(1, 9))
        rec = oracle.record(arch)  # trained by the CLI's workers, kept in the shared cache
        assert rec is not None and rec.accuracy == row.accuracy == row.accuracy_fp32
        assert rec.accuracy_int8 == row.accuracy_int8 and oracle.state_dict(arch) is not None
    assert result["accuracy_dtype"] == "fp32" and result["accuracy_note"] is None  # the LUT's rows: fp32
    assert set(result["oracle_accuracies"]) == {"fp32", "int8"}

    # --accuracy int8 into another folder: the cache holds both accuracies, nothing is trained again
    res = chamlab(*[a if a != out else tmp_path / "int8" for a in args], "--schedule", SCHEDULE,
                  "--accuracy", "int8")  # fmt: skip
    assert res.returncode == 0, res.stderr
    r8 = json.loads(res.stdout)
    assert r8["accuracy_dtype"] == "int8" and r8["oracle_accuracy"] == r8["oracle_accuracies"]["int8"]
    h8 = pd.read_parquet(tmp_path / "int8" / "history.parquet")
    assert (h8["accuracy"] == h8["accuracy_int8"]).all() and h8["accuracy_fp32"].notna().all()
    res = chamlab(*args, "--schedule", SCHEDULE, "--accuracy", "int8", env={"COLUMNS": "300"})
    assert res.returncode == 2 and "accuracy_dtype: 'fp32' there, 'int8' now" in res.stderr

    # resuming with another schedule is another oracle (the oracle's cache is tested in tests/chamnet)
    res = chamlab(*args, "--schedule", "epochs=2", env={"COLUMNS": "300"})
    assert res.returncode == 2 and "other arguments" in res.stderr and "oracle" in res.stderr
    # the hint gives the stored schedule's fields that differ (e.g. after the defaults changed)
    assert "--schedule epochs=1,max_train=96,max_val=64: the training schedule it was made with" in res.stderr
