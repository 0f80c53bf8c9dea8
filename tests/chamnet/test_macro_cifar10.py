from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from chamlab.chamnet.spaces import SPACES
from chamlab.chamnet.spaces.macro_cifar10 import accuracy_table, convert_source_json
from chamlab.core.errors import ArchError, DataFileError
from chamlab.operators import ConvBNAct, InvertedResidual, PoolLinear

SPACE = SPACES.get("macro-cifar10")


def test_all_6561_networks_match_the_benchmark_params_and_flops() -> None:
    table = accuracy_table()
    assert len(table) == 6561 == SPACE.size
    mismatches = []
    for row in table.itertuples(index=False):
        arch = SPACE.parse(row.arch)
        if (SPACE.params(arch), SPACE.macs(arch)) != (row.params, row.macs):
            mismatches.append((row.arch, SPACE.params(arch), row.params, SPACE.macs(arch), row.macs))
    assert mismatches == []
    assert set(table["arch"]) == {SPACE.format(a) for a in SPACE.enumerate()}


def test_accuracy_table_columns() -> None:
    t = accuracy_table()
    assert list(t.columns) == [
        "arch",
        "acc_seed0",
        "acc_seed1",
        "acc_seed2",
        "mean_acc",
        "std_acc",
        "params",
        "macs",
    ]
    assert t["arch"].is_unique
    seeds = t[["acc_seed0", "acc_seed1", "acc_seed2"]]
    assert ((seeds > 10) & (seeds < 100)).all().all()
    assert (seeds.mean(axis=1) - t["mean_acc"]).abs().max() < 1e-6


def test_layer_choices_become_the_right_ops() -> None:
    ops = SPACE.ops(SPACE.parse("00000000"))
    assert [type(o) for o in ops] == [ConvBNAct, ConvBNAct, ConvBNAct, ConvBNAct, ConvBNAct, PoolLinear]
    assert [o.stride for o in ops[1:4]] == [2, 2, 2] and all(o.act == "none" for o in ops[1:4])  # type: ignore[attr-defined]
    ops = SPACE.ops(SPACE.parse("21111112"))
    irs = [o for o in ops if isinstance(o, InvertedResidual)]
    assert len(irs) == 8
    assert (irs[0].kernel, irs[0].expand, irs[0].stride, irs[0].cin, irs[0].cout) == (5, 6, 2, 32, 64)
    assert (irs[-1].kernel, irs[-1].in_h, irs[-1].cin) == (5, 4, 256)


@pytest.mark.parametrize("text", ["0120120", "012012012", "01201203", "abcdefgh", ""])
def test_bad_arch_strings(text: str) -> None:
    with pytest.raises(ArchError, match="8 digits from 0-2"):
        SPACE.parse(text)


def _source(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "src.json"
    path.write_text(json.dumps(data))
    return path


def test_converter_writes_the_shipped_format(tmp_path: Path) -> None:
    entry = {"test_acc": [90.0, 91.0, 92.0], "mean_acc": 91.0, "std": 0.8, "params": 10, "flops": 20}
    src = _source(tmp_path, {"22222222": entry, "00000000": {**entry, "params": 5}})
    assert convert_source_json(src, tmp_path / "t.parquet") == 2
    t = pd.read_parquet(tmp_path / "t.parquet")
    assert list(t["arch"]) == ["00000000", "22222222"]
    assert list(t["params"]) == [5, 10] and list(t["macs"]) == [20, 20]
    assert list(t.columns) == list(accuracy_table().columns)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"0123": {}}, "key '0123' is not an 8-digit"),
        ({"00000000": {"test_acc": [1, 2, 3]}}, "entry '00000000' is malformed"),
        ({"00000000": {"test_acc": [1], "mean_acc": 1, "std": 0, "params": 1, "flops": 1}}, "3 seeds"),
    ],
)
def test_converter_names_the_bad_entry(tmp_path: Path, data: dict, message: str) -> None:
    with pytest.raises(DataFileError, match=message):
        convert_source_json(_source(tmp_path, data), tmp_path / "t.parquet")
    assert not (tmp_path / "t.parquet").exists()


def test_converter_rejects_non_json(tmp_path: Path) -> None:
    src = tmp_path / "src.json"
    src.write_text("{not json")
    with pytest.raises(DataFileError, match="cannot read NAS-Bench-Macro JSON"):
        convert_source_json(src, tmp_path / "t.parquet")


def test_equivalent_archs_are_the_tables_duplicate_rows() -> None:
    """An identity inside a stage is no layer, wherever it sits: 6,561 arch strings build 3,969
    networks (``equivalence_key``), and the benchmark's table agrees: archs of one network share
    their accuracy row (all three seeds), params and MACs, archs of different networks never do."""
    sp = SPACES.get("macro-cifar10")
    assert sp.equivalence_key(sp.parse("11111201")) == sp.equivalence_key(sp.parse("11111210"))
    assert sp.equivalence_key(sp.parse("01111111")) != sp.equivalence_key(sp.parse("10111111"))  # stride
    t = accuracy_table()
    t["network"] = [repr(sp.equivalence_key(sp.parse(a))) for a in t["arch"]]
    row = ["acc_seed0", "acc_seed1", "acc_seed2", "params", "macs"]
    assert t["network"].nunique() == 3969
    assert (t.groupby("network")[row].nunique() == 1).all().all()
    assert t.groupby(row).ngroups == 3969
