"""``--threads 1,2`` of ``adapt`` and ``search``: (arch, threads) searched jointly (docs/adapt.md).

Kept small for CI: the session's profiled macro-cifar10 LUT (1-thread rows, real measurements) plus
2-thread rows made from them at half the latency (as a device whose second core doubles the speed
would measure: the 2-thread rows are made, not measured, so the winner's thread count is known in
advance), ``--no-calibrate``, ``--budget 10``, ``--refine 0``. The winner's program is exported and
measured for real, with the runtime's thread pool at the winner's thread count.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import chamlab
from lut_factory import write

from chamlab.core.errors import InputError
from chamlab.host import api
from chamlab.host.luts.lut import Lut, make_row
from chamlab.host.prediction.predict import LatencyModel
from chamlab.host.workflows.threads import BestThreads, parse_threads

SPEEDUP_2T = 0.5  # the made 2-thread rows: this times the 1-thread samples


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a default luts/ folder would land in the test's own folder


@pytest.fixture
def two_thread_lut(tmp_path: Path, profiled_lut: tuple[Path, dict]) -> tuple[Path, float]:
    """The profiled LUT's rows plus 2-thread rows at :data:`SPEEDUP_2T` of their latency, and a limit:
    the median 1-thread prediction (so each thread count has archs under it, the 2-thread rows more)."""
    lut = Lut.read(profiled_lut[0])
    rows = []
    for mset in lut.combinations():
        for key, r in lut.select(mset).items():
            for threads, scale in ((1, 1.0), (2, SPEEDUP_2T)):
                rows.append(
                    make_row(
                        key,
                        device=mset.device,
                        backend=mset.backend,
                        dtype=mset.dtype,
                        threads=threads,
                        samples_ms=[scale * x for x in r["samples_ms"]],
                        run_id=f"{threads}t",
                        measured_at=r["measured_at"],
                        device_fingerprint=r["device_fingerprint"],
                    )
                )
    path = write(tmp_path / "two.parquet", rows)
    both = Lut.read(path)
    space = api.SPACES.get("macro-cifar10")
    model = LatencyModel(space, both, path, both.choose(path, threads=1))
    archs = space.sample(np.random.default_rng(0), 300)
    return path, float(np.median([model.predict(a).latency_ms for a in archs]))


def _one_line_exit_2(res: Any, *needles: str) -> None:
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    for needle in needles:
        assert needle in lines[0], res.stderr


def test_bad_thread_lists_are_exit_2_with_one_line(tmp_path: Path, fast_devices: Path) -> None:
    out = tmp_path / "run"
    adapt = ["adapt", "--target", "test-cpu", "--devices", fast_devices, "--space", "macro-cifar10"]
    adapt += ["--latency", "1", "--out", out]
    search = ["search", "--space", "macro-cifar10", "--latency", "1", "--target", "test-cpu", "--out", out]
    for base in (adapt, search):
        for bad, needle in (
            ("0", "integer from 1 to 256"),
            ("a,b", "'a' is not a thread count"),
            ("1,2,1", "names 1 more than once"),
            ("1,,2", "'' is not a thread count"),
            ("300", "integer from 1 to 256"),
        ):
            _one_line_exit_2(chamlab(*base, "--threads", bad), "--threads", needle)
            assert not out.exists()
    res = chamlab(*adapt, "--threads", "1,2", "--energy", "1")
    assert res.returncode == 2 and "--energy with several --threads" in res.stderr, res.stderr
    assert not out.exists()


def test_parse_threads_and_the_joint_cost() -> None:
    assert parse_threads(None) is None
    assert parse_threads(" 4, 1 ,2") == (4, 1, 2)
    with pytest.raises(InputError, match="more than once"):
        parse_threads("2,2")
    # the lowest ratio of prediction to limit; the first listed on a tie
    best = BestThreads({1: lambda a: 10.0 * a[0], 2: lambda a: 6.0 * a[0]}, {1: 10.0, 2: 5.0})
    assert best.threads_of((1,)) == 1 and best((1,)) == 1.0 and best.latency((1,)) == 10.0
    tie = BestThreads({4: lambda a: 2.0, 2: lambda a: 2.0})
    assert tie.threads_of((0,)) == 4 and set(tie.costs()) == {"latency_ms@4", "latency_ms@2"}


@pytest.mark.slow
def test_adapt_two_threads_measures_the_winner_at_its_thread_count(
    tmp_path: Path, fast_devices: Path, two_thread_lut: tuple[Path, float]
) -> None:
    lut, limit = two_thread_lut
    out = tmp_path / "run"
    args = ["adapt", "--target", "test-cpu", "--devices", fast_devices, "--space", "macro-cifar10"]
    args += ["--latency", f"{limit:.6f}", "--lut", lut, "--out", out, "--no-calibrate"]
    args += ["--budget", "10", "--refine", "0", "--threads", "1,2", "--json"]
    res = chamlab(*args)
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert r["threads_searched"] == [1, 2]
    per = {p["threads"]: p for p in r["per_threads"]}
    assert set(per) == {1, 2}
    for p in per.values():  # each thread count's best, under its own search limit
        assert p["arch"] is not None and p["predicted_latency_ms"] <= p["search_limit_ms"]
        assert p["profiled_ops"] == 0  # the LUT held both thread counts' rows: nothing profiled
    assert per[2]["search_limit_ms"] == pytest.approx(per[1]["search_limit_ms"])  # same limit, no calibration
    # the 2-thread rows predict half the latency: at least as accurate there, and more headroom
    assert per[2]["predicted_accuracy"] >= per[1]["predicted_accuracy"]
    assert r["threads"] == 2 and per[2]["chosen"] and not per[1]["chosen"]
    assert r["arch"] == per[2]["arch"]
    assert r["measured_threads"] == 2  # the runtime's thread pool while the winner was measured
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["runtime"]["threads"] == 2 and manifest["latency"]["threads"] == 2
    history = pq.read_table(out / "history.parquet").column_names
    assert {"limit_ratio", "latency_ms", "latency_ms@1", "latency_ms@2"} <= set(history)
    # another thread list into the same run folder is another run: exit 2
    res = chamlab(*[a if a != "1,2" else "2,1" for a in args])
    assert res.returncode == 2 and "threads" in res.stderr, res.stderr


def test_search_two_threads_reports_the_best_per_thread_count(
    tmp_path: Path, two_thread_lut: tuple[Path, float]
) -> None:
    lut, limit = two_thread_lut
    base = ["search", "--space", "macro-cifar10", "--lut", lut, "--latency", f"{limit:.6f}"]
    base += ["--budget", "12", "--json"]
    res = chamlab(*base, "--threads", "1,2", "--out", tmp_path / "two")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    per = {p["threads"]: p for p in r["per_threads"]}
    assert r["threads_searched"] == [1, 2] and set(per) == {1, 2}
    for p in per.values():
        assert p["arch"] is not None and p["predicted_latency_ms"] <= limit
    assert r["oracle_accuracy"] == max(p["oracle_accuracy"] for p in per.values())
    # the winner's thread count is where its predicted latency is lowest: the 2-thread rows
    assert r["threads"] == 2
    assert r["costs"]["latency_ms@2"] == pytest.approx(SPEEDUP_2T * r["costs"]["latency_ms@1"], rel=0.05)
    assert r["costs"]["latency_ms"] == r["costs"]["latency_ms@2"] <= limit
    history = pq.read_table(tmp_path / "two" / "history.parquet").column_names
    assert {"latency_ms@1", "latency_ms@2"} <= set(history)
    # one thread count: today's output, no thread keys
    res = chamlab(*base, "--threads", "1", "--out", tmp_path / "one")
    assert res.returncode == 0, res.stderr
    assert not {"threads", "per_threads", "threads_searched"} & set(json.loads(res.stdout))
