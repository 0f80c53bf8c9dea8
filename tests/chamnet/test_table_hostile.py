"""Hostile tables as the library sees them (issue 24, item 3): a repeated column header, accuracies
outside the table's range, negative costs, a column that names the rows (in bounded memory), rows of
one ``_network`` with different accuracies, a constant accuracy (said once, in chamlab's words), and
a table edited in place under a stored history (its content digest is part of the run's identity).

The command line's side (exit 2, nothing written) is tests/host/test_search_hostile.py.
"""

from __future__ import annotations

import json
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from chamlab.chamnet.search import BayesOptEngine, EngineConfig, search, table_problem
from chamlab.chamnet.search.run import ARGS_KEY, HISTORY, TABLE_DIGEST
from chamlab.chamnet.spaces.table import TableSpace, TableWarning
from chamlab.core.errors import DataFileError, InputError


def frame(n_width: int = 6) -> pd.DataFrame:
    rows = [
        {
            "width": w,
            "op": op,
            "accuracy": 60.0 + 3 * w + (1.0 if op == "b" else 0.0),
            "latency_ms": w * (1.3 if op == "b" else 1.0),
        }
        for w in range(1, n_width + 1)
        for op in ("a", "b")
    ]
    return pd.DataFrame(rows)


def test_a_column_named_twice_is_refused_in_csv_and_parquet(tmp_path: Path) -> None:
    """pandas reads ``accuracy,accuracy`` as ``accuracy`` and a dimension ``accuracy.1``."""
    df = frame()
    csv = tmp_path / "t.csv"
    header = "width,op,accuracy,accuracy,latency_ms\n"
    csv.write_text(
        header + "".join(f"{r.width},{r.op},{r.accuracy},1.0,{r.latency_ms}\n" for r in df.itertuples())
    )
    with pytest.raises(DataFileError, match=r"t\.csv: column 'accuracy' appears twice \(columns 3 and 4"):
        TableSpace.read(csv)
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.append_column("width", pa.array(np.arange(len(df))))
    pq.write_table(table, tmp_path / "t.parquet")
    with pytest.raises(DataFileError, match=r"t\.parquet: column 'width' appears twice"):
        TableSpace.read(tmp_path / "t.parquet")


@pytest.mark.parametrize(
    ("edit", "msg"),
    [
        (lambda d: d.assign(accuracy=1e308), r"'accuracy' is 1e\+308 at row 0, outside .* \[0, 100\]"),
        (lambda d: d.assign(accuracy=d.accuracy.where(d.index != 7, 150.0)), r"'accuracy' is 150 at row 7"),
        (lambda d: d.assign(accuracy=d.accuracy.where(d.index != 3, -0.5)), r"'accuracy' is -0.5 at row 3"),
        (
            lambda d: d.assign(latency_ms=d.latency_ms.where(d.index != 5, -2.0)),
            r"'latency_ms' is negative .* row 5",
        ),
        (
            lambda d: d.assign(energy_mj=np.where(d.index == 2, -1.0, 1.0)),
            r"'energy_mj' is negative .* row 2",
        ),
    ],
)
def test_values_outside_their_range_are_refused_naming_the_row(edit: object, msg: str) -> None:
    with pytest.raises(DataFileError, match=msg):
        TableSpace.from_frame(edit(frame()), what="t.csv")  # type: ignore[operator]


def test_a_table_states_another_accuracy_range() -> None:
    fractions = frame().assign(accuracy=lambda d: d.accuracy / 100)
    assert TableSpace.from_frame(fractions).accuracy.max() < 1  # a fraction lies in the default range
    scores = frame().assign(accuracy=lambda d: d.accuracy * 10)  # e.g. a score out of 1000
    with pytest.raises(DataFileError, match="outside the table's accuracy range"):
        TableSpace.from_frame(scores)
    assert TableSpace.from_frame(scores, accuracy_range=(0, 1000)).size == len(scores)
    for bad in ((1.0, 0.0), (0.0, float("inf")), (0.0, 1e308)):
        with pytest.raises(InputError, match="accuracy-range"):
            TableSpace.from_frame(frame(), accuracy_range=bad)


def test_a_column_naming_the_rows_is_no_dimension() -> None:
    named = frame(10).assign(name=lambda d: [f"net-{i}" for i in range(len(d))])
    with pytest.raises(
        DataFileError, match=r"column 'name' has a distinct text value in every one of its 20 rows"
    ):
        TableSpace.from_frame(named)
    # said to be an identifier (`_name`) or left out of --dims, the table loads
    assert [d.name for d in TableSpace.from_frame(named.rename(columns={"name": "_name"})).dimensions] == [
        "width",
        "op",
    ]
    assert TableSpace.from_frame(named, dims=["width", "op"]).size == 20


def test_a_name_column_of_30000_rows_is_refused_in_bounded_memory() -> None:
    """One-hot encoding a distinct value per row took 1.77 GB at 8,000 rows and ended in MemoryError at
    30,000: the check counts the values (memory in proportion to the rows) and refuses."""
    n = 30_000
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "width": rng.integers(0, 64, n),
            "depth": np.arange(n) % 9,
            "name": [f"net-{i}" for i in range(n)],
            "accuracy": rng.uniform(50, 90, n),
            "latency_ms": rng.uniform(1, 10, n),
        }
    )
    tracemalloc.start()
    try:
        with pytest.raises(DataFileError, match="every one of its 30000 rows"):
            TableSpace.from_frame(df)
        many = df.assign(name=[f"op{i % 5000}" for i in range(n)])  # not an identifier, still 5,000 features
        with pytest.raises(DataFileError, match="'name' has 5000 distinct text values"):
            TableSpace.from_frame(many)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MiB"  # one-hot would be 30,000 x 30,000 x 8 bytes


def test_rows_of_one_network_with_different_accuracies_are_refused() -> None:
    df = frame().assign(_network=lambda d: [f"n{i}" for i in range(len(d))])
    df.loc[5, "_network"] = "n2"  # rows 2 and 5 are said to be one network
    df.loc[2, "accuracy"], df.loc[5, "accuracy"] = 51.0, 99.0
    with pytest.raises(
        DataFileError,
        match=r"rows 2 \(width=2,op=a\) and 5 \(width=3,op=b\) are one _network 'n2'.*51 and 99",
    ):
        TableSpace.from_frame(df)
    df.loc[5, "accuracy"] = 51.0  # agreeing rows are one network
    assert TableSpace.from_frame(df).equivalence_key((2, "a")) == TableSpace.from_frame(df).equivalence_key(
        (3, "b")
    )


def test_a_constant_accuracy_is_said_once_and_the_search_runs_without_library_warnings() -> None:
    df = frame().assign(accuracy=70.0)
    with pytest.warns(TableWarning, match="every row has accuracy 70") as said:
        space = TableSpace.from_frame(df, what="t.csv")
    assert len(said) == 1
    with warnings.catch_warnings(record=True) as heard:
        warnings.simplefilter("always")
        state = BayesOptEngine(EngineConfig(n_init=3)).run(
            table_problem(space, {"latency_ms": 5.0}), 8, np.random.default_rng(0)
        )
    # BoTorch's InputDataWarning ("outcome observations not standardized") reached users with its path
    library = [
        f"{w.category.__name__}: {w.message}"
        for w in heard
        if "botorch" in w.filename or "gpytorch" in w.filename
    ]
    assert library == []
    assert len(state.queries) == 8 and {q.accuracy for q in state.queries} == {70.0}


def _set_args(path: Path, edit: object) -> None:
    table = pq.read_table(path)
    meta = dict(table.schema.metadata)
    args = json.loads(meta[ARGS_KEY.encode()])
    edit(args)  # type: ignore[operator]
    meta[ARGS_KEY.encode()] = json.dumps(args).encode()
    pq.write_table(table.replace_schema_metadata(meta), path)


def test_a_table_edited_under_its_history_is_another_run(tmp_path: Path) -> None:
    csv, out = tmp_path / "t.csv", tmp_path / "run"

    def table(row: int | None = None, accuracy: float = 0.0) -> TableSpace:
        """The table as written to ``csv``: row ``row``'s accuracy edited in place."""
        df = frame()
        if row is not None:
            df.loc[row, "accuracy"] = accuracy
        df.to_csv(csv, index=False)
        return TableSpace.read(csv)

    def run(space: TableSpace, budget: int) -> object:
        problem = table_problem(space, {"latency_ms": 5.0})
        return search(problem, budget=budget, config=EngineConfig(n_init=3), out=out, plot=False)

    space = table()
    run(space, 6)
    stored = json.loads(pq.read_schema(out / HISTORY).metadata[ARGS_KEY.encode()])
    assert stored[TABLE_DIGEST] == space.digest
    asked = pd.read_parquet(out / HISTORY)
    first = space.row((int(asked.width[0]), str(asked.op[0])))
    text = f"width={asked.width[0]},op={asked.op[0]}"
    unqueried = next(
        i for i in range(space.size) if space.rows[i] not in set(zip(asked.width, asked.op, strict=True))
    )
    # a queried row's accuracy changed: named
    with pytest.raises(
        InputError, match=rf"before it was edited: query 1 \({text}\) has accuracy .* 99 in the table"
    ):
        run(table(first, 99.0), 8)
    # a row no query asked changed: still another table
    with pytest.raises(InputError, match="rows this run has not queried were added, removed or edited"):
        run(table(unqueried, 98.0), 8)
    # a history stored before the digest was recorded resumes when its queried rows agree ...
    _set_args(out / HISTORY, lambda a: a.pop(TABLE_DIGEST))
    res = run(table(unqueried, 98.0), 8)
    assert res.queries == 8 and res.new_queries == 2  # type: ignore[attr-defined]
    assert json.loads(pq.read_schema(out / HISTORY).metadata[ARGS_KEY.encode()])[TABLE_DIGEST]
    # ... and is refused when one of them changed
    _set_args(out / HISTORY, lambda a: a.pop(TABLE_DIGEST))
    with pytest.raises(InputError, match=r"query 1 .* 99 in the table now"):
        run(table(first, 99.0), 9)
