"""Table spaces: parsing CSV/Parquet, dimension types, --dims, and every bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chamlab.chamnet.spaces.table import TableSpace
from chamlab.core.errors import ArchError, DataFileError


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "depth": [1, 2, 3, 1, 2, 3],
            "op": ["conv", "conv", "conv", "mbconv", "mbconv", "mbconv"],
            "se": [True, False, True, False, True, False],
            "accuracy": [70.0, 72.0, 75.0, 71.0, 73.5, 76.0],
            "latency_ms": [1.0, 2.0, 3.0, 1.5, 2.5, 3.5],
            "_note": ["a", "b", "c", "d", "e", "f"],
        }
    )


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_reads_dimensions_and_types(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"t{suffix}"
    df = frame()
    df.to_csv(path, index=False) if suffix == ".csv" else df.to_parquet(path)
    sp = TableSpace.read(path)
    assert sp.name == f"table:{path}" and sp.size == 6
    assert [(d.name, d.categorical) for d in sp.dimensions] == [("depth", False), ("op", True), ("se", True)]
    assert sp.dimensions[0].values == (1, 2, 3) and sp.dimensions[1].values == ("conv", "mbconv")
    assert sp.dimensions[2].values == (False, True)
    arch = (2, "mbconv", True)
    assert sp.accuracy_of(arch) == 73.5 and sp.cost_of(arch, "latency_ms") == 2.5
    assert sp.parse(sp.format(arch)) == arch and sp.format(arch) == "depth=2,op=mbconv,se=True"
    assert next(iter(sp.enumerate())) == (1, "conv", True)
    assert all(a in sp.rows for a in sp.sample(np.random.default_rng(0), 20))
    with pytest.raises(ArchError, match="not a row"):
        sp.validate((2, "conv", True))
    with pytest.raises(ArchError, match="must name every dimension"):
        sp.parse("depth=2")


def test_dims_override(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    frame().drop(columns=["se"]).to_csv(path, index=False)
    sp = TableSpace.read(path, dims=["op", "depth"])
    assert [d.name for d in sp.dimensions] == ["op", "depth"]
    for dims, msg in (
        (["nope"], "names 'nope', which is not a column"),
        (["accuracy"], "oracle or a cost column"),
        (["op", "op"], "repeats"),
    ):
        with pytest.raises(DataFileError, match=msg):
            TableSpace.read(path, dims=dims)
    with pytest.raises(DataFileError, match="rows 0 and 3 are the same architecture"):
        TableSpace.read(path, dims=["depth"])


@pytest.mark.parametrize(
    ("edit", "msg"),
    [
        (lambda d: d.drop(columns=["accuracy"]), "no 'accuracy' column"),
        (lambda d: d.assign(accuracy=[1.0, np.nan, 2, 3, 4, 5]), "'accuracy' has 1 missing value.*row 1"),
        (lambda d: d.assign(depth=[1, 2, np.nan, 1, 2, 3]), "'depth' has 1 missing value.*row 2"),
        (lambda d: d.assign(latency_ms=[1.0, 2, 3, 4, 5, np.inf]), "'latency_ms' holds an infinite"),
        (lambda d: d.assign(accuracy=list("abcdef")), "'accuracy' must be numeric"),
        (lambda d: d.assign(depth=[1, 1, 3, 1, 2, 3], se=True), "rows 0 and 1 are the same architecture"),
        (lambda d: d.iloc[:0], "has no rows"),
        (lambda d: d[["accuracy", "latency_ms", "_note"]], "no dimension columns"),
    ],
)
def test_bad_tables(tmp_path: Path, edit: object, msg: str) -> None:
    path = tmp_path / "bad.csv"
    edit(frame()).to_csv(path, index=False)  # type: ignore[operator]
    with pytest.raises(DataFileError, match=msg):
        TableSpace.read(path)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="does not exist"):
        TableSpace.read(tmp_path / "missing.csv")
    (tmp_path / "t.txt").write_text("x")
    with pytest.raises(DataFileError, match=r"unknown format '\.txt'"):
        TableSpace.read(tmp_path / "t.txt")
    (tmp_path / "t.parquet").write_text("not parquet")
    with pytest.raises(DataFileError, match="cannot be read"):
        TableSpace.read(tmp_path / "t.parquet")
    sp = TableSpace.from_frame(frame().drop(columns=["latency_ms"]))
    with pytest.raises(DataFileError, match="no 'latency_ms' column"):
        sp.cost_of(sp.rows[0], "latency_ms")


def test_network_column_names_rows_that_are_one_network(tmp_path: Path) -> None:
    """``_network``: rows with one value are one network; the search asks one row of each."""
    from chamlab.chamnet.search import BayesOptEngine, EngineConfig, table_problem

    rows = []
    for w in range(1, 7):
        for op in ("a", "b"):
            # below w = 4 the op choice is not part of the network (as an identity's position is not)
            net = f"w{w}" if w < 4 else f"w{w}{op}"
            rows.append({"w": w, "op": op, "_network": net, "accuracy": 70.0 + w, "latency_ms": float(w)})
    path = tmp_path / "t.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    sp = TableSpace.read(path)
    assert [d.name for d in sp.dimensions] == ["w", "op"]  # _network is no dimension
    assert "12 architectures" in sp.description and "9 networks" in sp.description
    assert sp.equivalence_key((1, "a")) == sp.equivalence_key((1, "b")) != sp.equivalence_key((4, "a"))
    state = BayesOptEngine(EngineConfig(n_init=3)).run(
        table_problem(sp, {"latency_ms": 10.0}), 20, np.random.default_rng(0)
    )
    keys = [sp.equivalence_key(q.arch) for q in state.queries]
    assert len(keys) == len(set(keys)) == 9  # every network once, then no candidate is left
    plain = TableSpace.from_frame(pd.DataFrame(rows).drop(columns="_network"))
    assert plain.equivalence_key((1, "a")) != plain.equivalence_key((1, "b"))
    bad = pd.DataFrame(rows)
    bad.loc[5, "_network"] = None
    with pytest.raises(DataFileError, match=r"_network.*row 5"):
        TableSpace.from_frame(bad)
