"""Hostile tables and histories through ``chamlab search`` (issue 24, item 3): each is exit 2 with one
error line naming the file and the column, row or query (plus the hint line), no traceback, and
nothing created or overwritten in ``--out``; a constant-accuracy table searches with one warning in
chamlab's words. ``chamlab adapt`` refuses a table space and checks a stored history as search does.

The library's side of each check is tests/chamnet/test_table_hostile.py.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import chamlab

from chamlab.chamnet.search.engine import Query
from chamlab.chamnet.search.problem import Problem, oracle_for
from chamlab.chamnet.search.run import HISTORY, write_history
from chamlab.core.errors import DataFileError
from chamlab.host import api
from chamlab.host.workflows import adapt as steps


def rows(n_width: int = 8) -> list[dict[str, object]]:
    return [
        {
            "width": w,
            "block": b,
            "accuracy": round(55 + 4 * np.log(w) + (1.5 if b == "mb" else 0.0), 3),
            "latency_ms": round(w * (1.4 if b == "mb" else 1.0), 3),
        }
        for w in range(1, n_width + 1)
        for b in ("conv", "mb")
    ]


def write(path: Path, table: list[dict[str, object]], header: list[str] | None = None) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header or list(table[0]))
        w.writerows([list(r.values()) for r in table])
    return path


def search(table: Path, out: Path, *extra: str) -> object:
    return chamlab(
        "search", "--space", f"table:{table}", "--latency", "6", "--init", "4", "--out", out, *extra,
        env={"COLUMNS": "300"},
    )  # fmt: skip


def refused(res: object, *needles: str) -> str:
    """Exit 2, one error line (and its hint) holding every needle, no traceback."""
    assert res.returncode == 2, res.stderr  # type: ignore[attr-defined]
    lines = res.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert lines[0].startswith("error: ") and len(lines) <= 2, res.stderr  # type: ignore[attr-defined]
    assert lines[1:] == [] or lines[1].startswith("  hint: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def snapshot(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())}


def test_hostile_tables_are_exit_2_naming_the_column_and_row(tmp_path: Path) -> None:
    base = rows()
    names = [{**r, "name": f"net-{i}"} for i, r in enumerate(base)]
    groups = [{**r, "_network": f"n{i}"} for i, r in enumerate(base)]
    groups[5]["_network"], groups[2]["accuracy"], groups[5]["accuracy"] = "n2", 51.0, 99.0
    cases = {
        # today: exit 1 and a 125-line BoTorch traceback (NaN after standardising 1e308s)
        "huge.csv": (
            [{**r, "accuracy": 1e308} for r in base],
            None,
            ("huge.csv", "'accuracy' is 1e+308 at row 0", "accuracy range [0, 100]"),
        ),
        "over.csv": (
            [{**r, "accuracy": 150.0 if i == 7 else r["accuracy"]} for i, r in enumerate(base)],
            None,
            ("over.csv", "'accuracy' is 150 at row 7"),
        ),
        "negative.csv": (
            [{**r, "latency_ms": -2.0 if i == 5 else r["latency_ms"]} for i, r in enumerate(base)],
            None,
            ("negative.csv", "'latency_ms' is negative (-2) at row 5"),
        ),
        # pandas renames the second `accuracy` to a dimension `accuracy.1`
        "twice.csv": (
            [{**r, "again": 1.0} for r in base],
            ["width", "block", "accuracy", "latency_ms", "accuracy"],
            ("twice.csv", "column 'accuracy' appears twice"),
        ),
        "names.csv": (
            names,
            None,
            ("names.csv", "column 'name' has a distinct text value in every one of its 16 rows"),
        ),
        "groups.csv": (
            groups,
            None,
            (
                "groups.csv",
                "rows 2 (width=2,block=conv) and 5 (width=3,block=mb) are one _network 'n2'",
                "51 and 99",
            ),
        ),
    }
    for name, (table, header, needles) in cases.items():
        res = search(write(tmp_path / name, table, header), tmp_path / "never")
        refused(res, *needles)
        assert "Traceback" not in res.stderr
    assert not (tmp_path / "never").exists()
    # a table whose accuracy is another score states its range
    res = search(tmp_path / "over.csv", tmp_path / "stated", "--accuracy-range", "0,200", "--budget", "5")
    assert res.returncode == 0, res.stderr


def test_a_constant_accuracy_table_searches_with_one_warning_in_chamlabs_words(tmp_path: Path) -> None:
    table = write(tmp_path / "flat.csv", [{**r, "accuracy": 70.0} for r in rows()])
    res = search(table, tmp_path / "run", "--budget", "8", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["oracle_accuracy"] == 70.0
    # today: BoTorch's InputDataWarning, with its site-packages path, after every fit
    assert "site-packages" not in res.stderr and "InputDataWarning" not in res.stderr, res.stderr
    said = [line for line in res.stderr.splitlines() if line.startswith("warning")]
    assert said == [
        f"warning: {table}: every row has accuracy 70: no architecture is more accurate than another, so "
        "the search can only return a feasible one"
    ]


def _edit_history(path: Path, edit: object) -> None:
    table = pq.read_table(path)
    df = edit(table.to_pandas())  # type: ignore[operator]
    pq.write_table(
        pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(table.schema.metadata), path
    )


def test_hostile_histories_and_an_edited_table_are_exit_2_and_overwrite_nothing(tmp_path: Path) -> None:
    table = write(tmp_path / "t.csv", rows())
    run = tmp_path / "run"
    res = search(table, run, "--budget", "6")
    assert res.returncode == 0, res.stderr

    def hostile(name: str, edit: object) -> Path:
        out = tmp_path / name
        out.mkdir()
        for f in run.iterdir():
            (out / f.name).write_bytes(f.read_bytes())
        _edit_history(out / HISTORY, edit)
        return out

    # today: exit 1, "Yeo-Johnson input must be finite" traceback
    nan = hostile("nan", lambda d: d.assign(accuracy=d.accuracy.where(d.index != 3, np.nan)))
    # today: exit 0 and "new_queries": -1
    dup = hostile("dup", lambda d: pd.concat([d, d.iloc[[4]]]).assign(query=range(1, len(d) + 2)))
    for out, needles in (
        (nan, (f"search history {nan / HISTORY}", "column 'accuracy' is nan at query 4")),
        (dup, (f"search history {dup / HISTORY}", "queries 5 and 7 are the same architecture")),
    ):
        before = snapshot(out)
        refused(search(table, out, "--budget", "6", "--json"), *needles)
        assert snapshot(out) == before
    # today: the old accuracies are silently reused
    asked = pd.read_parquet(run / HISTORY)
    edited = rows()
    i = next(k for k, r in enumerate(edited) if (r["width"], r["block"]) == (asked.width[0], asked.block[0]))
    edited[i]["accuracy"] = 99.0
    write(table, edited)
    before = snapshot(run)
    refused(
        search(table, run, "--budget", "8"),
        f"{run} holds a search of table:{table} as the table was before it was edited",
        f"query 1 (width={asked.width[0]},block={asked.block[0]}) has accuracy",
        "99 in the table now",
    )
    assert snapshot(run) == before


def test_adapt_refuses_a_table_space_and_checks_a_stored_history(tmp_path: Path, fast_devices: Path) -> None:
    table = write(tmp_path / "huge.csv", [{**r, "accuracy": 1e308} for r in rows()])
    res = chamlab(
        "adapt", "--target", "test-cpu", "--devices", fast_devices, "--space", f"table:{table}",
        "--latency", "5", "--out", tmp_path / "never",
    )  # fmt: skip
    refused(res, f"--space table:{table}: a table space has no networks to export and measure")
    assert not (tmp_path / "never").exists()
    # a network space's run folder holding a damaged history is refused before any work (no LUT
    # exists yet: the check comes before profiling)
    space = api.SPACES.get("macro-cifar10")
    spec = api.resolve_run(api.load_registry(fast_devices).get("test-cpu"))
    opts = api.AdaptOptions(
        latency_ms=0.3, budget=10, out=tmp_path / "run", lut_path=tmp_path / "lut.parquet"
    )
    ctx = steps.Context(spec, space, opts)
    ident = steps.check_inputs(ctx, None).ident
    oracle = oracle_for(space)
    archs = [space.parse(a) for a in ("01201201", "11111111", "22222222", "01201201")]
    queries = [Query(a, oracle([a])[0], {"latency_ms": 0.2}, "init") for a in archs]
    problem = Problem(space, oracle, {"latency_ms": lambda a: 0.2}, {"latency_ms": 0.3})
    (tmp_path / "run").mkdir()
    write_history(tmp_path / "run" / HISTORY, problem, queries, ident)
    with pytest.raises(DataFileError, match=r"queries 1 and 4 are the same architecture \(layer1=0,"):
        steps.check_inputs(ctx, None)
    write_history(
        tmp_path / "run" / HISTORY,
        problem,
        [*queries[:2], Query(archs[2], float("nan"), {"latency_ms": 0.2}, "bo")],
        ident,
    )
    with pytest.raises(DataFileError, match="column 'accuracy' is nan at query 3"):
        steps.check_inputs(ctx, None)
    assert not (tmp_path / "lut.parquet").exists()
