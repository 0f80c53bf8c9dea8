"""LUT merge: conflict policies, provenance and metadata carried, device identity, upgrade on read, and
(hypothesis) merging is associative, commutative and idempotent."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lut_factory import FP_PIXEL, OPS_POOL, lut_file, row, run_lut, write

from chamlab.core.errors import InputError, LutError, OutputPathError
from chamlab.host.luts import lut as lutmod
from chamlab.host.luts.lifecycle import (
    Fingerprint,
    LutFile,
    Policy,
    check_table,
    merge_files,
    merge_luts,
    read_lut_file,
    write_lut_file,
)
from chamlab.host.luts.lut import ROW_KEY, Lut, make_row

# CI runs the property tests derandomized (the same examples every run); locally they explore.
settings.register_profile("ci", derandomize=True, database=None, deadline=None, max_examples=60)
settings.register_profile("dev", deadline=None, max_examples=60)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def content(lf: LutFile) -> tuple[list[dict[str, Any]], list[str]]:
    """Equality of LUTs: row content sorted by row key, and the provenance as a set."""
    t = lf.lut.table.sort_by([(k, "ascending") for k in ROW_KEY])
    return t.to_pylist(), sorted(json.dumps(p, sort_keys=True) for p in lf.lut.provenance)


def merged(*files: LutFile, policy: Policy = Policy.NEWEST) -> LutFile:
    return merge_luts(files, policy)[0]


# -- policies ---------------------------------------------------------------------------------------------
def test_newest_wins_and_rows_of_one_input_only_are_kept() -> None:
    old = lut_file(run_lut("run-old", 0, 1.0))
    new = lut_file(run_lut("run-new", 5, 2.0, ops=OPS_POOL[:2]))
    out, conflicts = merge_luts([old, new])
    assert conflicts == 2 and len(out.lut) == 4
    by_key = {r["op_key"]: r for r in out.lut.table.to_pylist()}
    assert [by_key[k]["run_id"] for k in OPS_POOL] == ["run-new", "run-new", "run-old", "run-old"]
    assert out.lut.table.equals(merged(new, old).lut.table)  # order of inputs does not matter
    assert {p["run_id"] for p in out.lut.provenance} == {"run-old", "run-new"}


def test_pooled_concatenates_samples_and_rederives_stats() -> None:
    a = lut_file([row(OPS_POOL[0], [1.0, 2.0, 3.0], run_id="run-a", when=0)])
    b = lut_file([row(OPS_POOL[0], [10.0, 20.0], run_id="run-b", when=1, runtime_version="1.6")])
    out = merged(a, b, policy=Policy.POOLED).lut.table.to_pylist()
    assert len(out) == 1
    r = out[0]
    assert r["samples_ms"] == [1.0, 2.0, 3.0, 10.0, 20.0] and r["n_samples"] == 5
    assert r["p50_ms"] == pytest.approx(3.0) and r["mean_ms"] == pytest.approx(7.2)
    assert r["p90_ms"] == pytest.approx(np.percentile([1, 2, 3, 10, 20], 90))
    assert r["run_id"] == "run-a+run-b" and r["runtime_version"] == "1.6"  # the rest from the newest
    # pooling a pooled row with one of its own runs again counts that run once
    again = merged(merged(a, b, policy=Policy.POOLED), a, policy=Policy.POOLED)
    assert again.lut.table.to_pylist()[0]["samples_ms"] == r["samples_ms"]


def test_pooled_refuses_overlapping_run_sets() -> None:
    a = lut_file([row(OPS_POOL[0], [1.0], run_id="r1+r2")])
    b = lut_file([row(OPS_POOL[0], [2.0], run_id="r2+r3", when=1)])
    with pytest.raises(InputError, match="share run"):
        merge_luts([a, b], Policy.POOLED)


def test_fail_policy_lists_the_conflicts_but_allows_identical_copies() -> None:
    a = lut_file(run_lut("run-a", 0, 1.0))
    b = lut_file(run_lut("run-b", 1, 1.0, ops=OPS_POOL[1:2]))
    with pytest.raises(InputError, match=r"1 row key\(s\) measured by different runs: conv_bn_act:cin=16"):
        merge_luts([a, b], Policy.FAIL)
    assert content(merged(a, a, policy=Policy.FAIL)) == content(merged(a))


# -- metadata ---------------------------------------------------------------------------------------------
def test_provenance_and_calibrations_are_carried() -> None:
    cal_a = {"pixel/xnnpack/fp32/1": {"overhead_ms": 0.01, "created_at": "2026-01-01"}}
    cal_b = {
        "pixel/xnnpack/fp32/1": {"overhead_ms": 0.02, "created_at": "2026-02-01"},
        "pixel/xnnpack/fp32/2": {"overhead_ms": 0.03, "created_at": "2026-02-01"},
    }
    a = lut_file(run_lut("run-a", 0, 1.0), {"chamlab.calibrations": cal_a, "chamlab.notes": ["a"]})
    b = lut_file(run_lut("run-b", 1, 1.0), {"chamlab.calibrations": cal_b, "chamlab.notes": ["b", "a"]})
    out = merged(a, b)
    assert out.meta["chamlab.calibrations"] == cal_b  # the later calibration of a set wins
    assert out.meta["chamlab.notes"] == ["a", "b"]
    assert [p["run_id"] for p in out.lut.provenance] == ["run-a", "run-b"]
    assert len(merged(out, a).lut.provenance) == 2  # deduplicated


def test_metadata_that_cannot_merge_is_an_error() -> None:
    a = lut_file(run_lut("run-a", 0, 1.0), {"chamlab.space": "macro-cifar10"})
    b = lut_file(run_lut("run-b", 1, 1.0), {"chamlab.space": "chamnet-mbv2"})
    with pytest.raises(InputError, match=r"metadata chamlab.space differs"):
        merge_luts([a, b])


def test_merge_writes_every_carried_key(tmp_path: Path) -> None:
    a = write(tmp_path / "a.parquet", run_lut("run-a", 0, 1.0), {"chamlab.calibrations": {"x": {"v": 1}}})
    b = write(tmp_path / "b.parquet", run_lut("run-b", 1, 1.0))
    report = merge_files([a, b], tmp_path / "m.parquet")
    assert report.rows_in == 8 and report.rows_out == 4 and report.conflicts == 4 and report.runs == 2
    meta = pq.read_schema(tmp_path / "m.parquet").metadata
    assert json.loads(meta[b"chamlab.calibrations"]) == {"x": {"v": 1}}
    assert len(json.loads(meta[b"chamlab.provenance"])) == 2
    assert read_lut_file(tmp_path / "m.parquet").meta["chamlab.calibrations"] == {"x": {"v": 1}}


# -- device identity --------------------------------------------------------------------------------------
def test_fingerprint_identity_ignores_host_and_os_release() -> None:
    fp = Fingerprint.parse(FP_PIXEL)
    assert fp.host == "lab-host-1" and fp.cpu_model == "Qualcomm Technologies, Inc SM8450"
    assert (fp.system, fp.release, fp.machine) == ("Linux", "5.10.101-android12", "aarch64")
    updated = Fingerprint.parse("renamed|Qualcomm Technologies, Inc SM8450|Linux 5.15.78-android14 aarch64")
    assert updated.identity == fp.identity
    assert Fingerprint.parse("h|Google Tensor G2|Linux 5.10 aarch64").identity != fp.identity


def test_same_phone_after_os_update_merges_other_hardware_is_refused() -> None:
    a = lut_file(run_lut("run-a", 0, 1.0))
    updated = FP_PIXEL.replace("5.10.101-android12", "6.1.25-android14")
    b = lut_file([row(OPS_POOL[0], [1.0, 1.1], run_id="run-b", when=1, fingerprint=updated)])
    assert len(merged(a, b).lut) == 4
    other = lut_file(
        [row(OPS_POOL[0], [1.0], run_id="run-c", when=2, fingerprint="h|Google Tensor G2|Linux 5 aarch64")]
    )
    with pytest.raises(InputError, match=r"'pixel' is Qualcomm .* but Google Tensor G2 .*different hardware"):
        merge_luts([a, other])
    assert check_table(merged(a, b).lut.table) == []  # one device across the OS update
    mixed = pa.concat_tables([a.lut.table.slice(1), other.lut.table])
    assert any("'pixel' has rows from 2 different devices" in p for p in check_table(mixed))


# -- files --------------------------------------------------------------------------------------------------
def test_bad_inputs_write_nothing(tmp_path: Path) -> None:
    good = write(tmp_path / "good.parquet", run_lut("run-a", 0, 1.0))
    out = tmp_path / "out.parquet"
    out.write_bytes(b"previous")
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"x": [1]}), foreign)
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(good.read_bytes()[:200])
    newer = tmp_path / "newer.parquet"
    table = read_lut_file(good).lut.table
    pq.write_table(
        table.replace_schema_metadata({b"chamlab.kind": b"latency-lut", b"chamlab.schema_version": b"7"}),
        newer,
    )
    cases = {
        foreign: "not a chamlab LUT",
        corrupt: "not a readable Parquet file",
        tmp_path / "missing.parquet": "does not exist",
        newer: "schema version 7, newer than",
    }
    for bad, msg in cases.items():
        with pytest.raises(LutError, match=msg) as info:
            merge_files([good, bad], out)
        assert str(bad) in info.value.message
        assert out.read_bytes() == b"previous"
    with pytest.raises(OutputPathError, match="does not exist"):
        merge_files([good], tmp_path / "nope" / "out.parquet")
    with pytest.raises(OutputPathError, match="is a directory"):
        merge_files([good], tmp_path)
    # (the output's lock file, .out.parquet.lock, is held while merging and stays, like add_rows's)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == sorted(
        ["good.parquet", "out.parquet", "foreign.parquet", "corrupt.parquet", "newer.parquet"]
    )


def test_merge_into_one_of_the_inputs(tmp_path: Path) -> None:
    a = write(tmp_path / "a.parquet", run_lut("run-a", 0, 1.0, ops=OPS_POOL[:2]))
    b = write(tmp_path / "b.parquet", run_lut("run-b", 1, 1.0, ops=OPS_POOL[2:]))
    assert merge_files([a, b], a).rows_out == 4
    assert len(read_lut_file(a).lut) == 4 and (tmp_path / ".a.parquet.lock").exists()


def test_older_schema_versions_are_upgraded_on_read(tmp_path: Path) -> None:
    """A v1 file (no batch column) goes through the store's registered v1 -> v2 upgrader, and the
    merged output is written as the current version."""
    v2_only = {"batch", "idle_power_w", "power_reader", "charging", "quant_recipe", "delegated"}
    v1 = tmp_path / "v1.parquet"
    table = pa.Table.from_pylist(run_lut("run-a", 0, 1.0), schema=lutmod.SCHEMA).drop_columns(sorted(v2_only))
    meta = {b"chamlab.kind": b"latency-lut", b"chamlab.schema_version": b"1", b"chamlab.provenance": b"[]"}
    pq.write_table(table.replace_schema_metadata(meta), v1)
    v1b = write(tmp_path / "v1b.parquet", run_lut("run-b", 1, 1.0, ops=OPS_POOL[3:]))
    report = merge_files([v1, v1b], tmp_path / "v2.parquet")
    assert report.rows_out == 4
    meta_out = pq.read_schema(tmp_path / "v2.parquet").metadata
    assert meta_out[b"chamlab.schema_version"] == str(lutmod.KIND.version).encode()
    assert set(pq.read_table(tmp_path / "v2.parquet")["batch"].to_pylist()) == {1}
    assert read_lut_file(v1).read_version == 1


def test_a_v2_lut_without_window_columns_merges_with_heat_rows(tmp_path: Path) -> None:
    """v2 files (before the heat columns) read with those columns null and merge with v3 rows that
    carry them; the output is v3."""
    v2 = tmp_path / "v2.parquet"
    table = pa.Table.from_pylist(run_lut("run-a", 0, 1.0, ops=OPS_POOL[:2]), schema=lutmod.SCHEMA)
    table = table.drop_columns(list(lutmod.V3_ADDED))
    meta = {b"chamlab.kind": b"latency-lut", b"chamlab.schema_version": b"2", b"chamlab.provenance": b"[]"}
    pq.write_table(table.replace_schema_metadata(meta), v2)
    hot = run_lut("run-b", 1, 1.0, ops=OPS_POOL[2:4])
    for r in hot:
        r |= {"windows": 2, "throttled": False, "throttled_windows": 1, "window_temps_c": [71.5, 44.0]}
        r["cool_wait_s"] = 12.5
    v3 = write(tmp_path / "v3.parquet", hot)
    assert merge_files([v2, v3], tmp_path / "out.parquet").rows_out == 4
    assert pq.read_schema(tmp_path / "out.parquet").metadata[b"chamlab.schema_version"] == b"3"
    rows = {r["op_key"]: r for r in pq.read_table(tmp_path / "out.parquet").to_pylist()}
    for key in OPS_POOL[:2]:
        assert all(rows[key][c] is None for c in lutmod.V3_ADDED)
    for key in OPS_POOL[2:4]:
        assert rows[key]["throttled_windows"] == 1 and rows[key]["window_temps_c"] == [71.5, 44.0]
        assert (
            rows[key]["windows"] == 2 and rows[key]["throttled"] is False and rows[key]["cool_wait_s"] == 12.5
        )
    assert read_lut_file(v2).read_version == 2


# -- property: associative, commutative, idempotent -------------------------------------------------------
RUNS = ["run-a", "run-b", "run-c", "run-d"]


@st.composite
def luts(draw: st.DrawFn) -> LutFile:
    """A LUT of 0-4 row keys (4 ops x 2 thread counts), each measured by one of 4 runs. A run always
    measures a key the same way (its samples depend on run and key only), as in real LUT files copied
    around; runs have distinct timestamps."""
    keys = draw(st.sets(st.tuples(st.integers(0, 3), st.integers(1, 2)), max_size=4))
    rows = []
    for op, threads in sorted(keys):
        run = draw(st.integers(0, len(RUNS) - 1))
        rng = np.random.default_rng(run * 100 + op * 10 + threads)
        rows.append(
            row(OPS_POOL[op], rng.uniform(1, 2, 3 + run), run_id=RUNS[run], when=run, threads=threads)
        )
    return lut_file(rows)


@pytest.mark.parametrize("policy", [Policy.NEWEST, Policy.POOLED])
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=luts(), b=luts(), c=luts())
def test_merge_is_associative_commutative_and_idempotent(
    policy: Policy, a: LutFile, b: LutFile, c: LutFile
) -> None:
    def m(*xs: LutFile) -> LutFile:
        return merged(*xs, policy=policy)

    ab_c = content(m(m(a, b), c))
    assert ab_c == content(m(a, m(b, c)))
    assert ab_c == content(m(a, b, c))
    assert content(m(a, b)) == content(m(b, a))
    assert content(m(a, a)) == content(m(a))
    assert content(m(m(a, b), b)) == content(m(a, b))
    assert check_table(m(a, b, c).lut.table) == []


def test_single_lut_merge_is_the_lut() -> None:
    a = lut_file(run_lut("run-a", 0, 1.0))
    assert content(merged(a)) == content(a)
    rows = [make_row(OPS_POOL[0], device="d", backend="xnnpack", dtype="fp32", threads=1, samples_ms=[1.0])]
    assert content(merged(lut_file(rows), lut_file(rows))) == content(lut_file(rows))


def test_provenance_entries_that_are_not_run_objects_are_invalid_and_never_dropped(tmp_path: Path) -> None:
    """Before: provenance [1, 2, 3] validated, and a merge dropped it without a word."""
    from chamlab.host.luts.lifecycle import validate_file

    good = write(tmp_path / "good.parquet", run_lut("run-a", 0, 1.0))
    bad = tmp_path / "bad.parquet"
    lf = lut_file(run_lut("run-b", 1, 1.0))
    lf.lut.provenance = [1, 2, 3]  # type: ignore[list-item]  # what a hand-edited file holds
    write_lut_file(bad, lf)
    report = validate_file(bad)
    assert not report.valid and "provenance entry 1 is 1, not an object describing a run" in report.problems
    assert len([p for p in report.problems if p.startswith("provenance entry")]) == 3
    with pytest.raises(LutError, match=r"bad.parquet failed validation: provenance entry 1 is 1"):
        merge_files([good, bad], tmp_path / "m.parquet")
    assert not (tmp_path / "m.parquet").exists()
    with pytest.raises(LutError, match="provenance entry 1 is 1"):
        Lut.read(bad)
    lf.lut.provenance = [{"device": "pixel"}]
    write_lut_file(bad, lf)
    assert "provenance entry 1 has no run_id (got None)" in validate_file(bad).problems


def test_merge_never_replaces_a_lut_that_is_not_an_input(tmp_path: Path) -> None:
    """Before: `lut merge IN -o EXISTING` silently replaced EXISTING with IN."""
    a = write(tmp_path / "a.parquet", run_lut("run-a", 0, 1.0, ops=OPS_POOL[:2]))
    existing = write(tmp_path / "existing.parquet", run_lut("run-e", 1, 1.0, ops=OPS_POOL[2:]))
    before = existing.read_bytes()
    with pytest.raises(InputError, match=r"existing.parquet exists and is not one of the inputs") as info:
        merge_files([a], existing)
    assert "--force" in (info.value.hint or "") and existing.read_bytes() == before
    assert merge_files([a, existing], existing).rows_out == 4  # merging into it: name it as an input
    assert merge_files([a], existing, force=True).rows_out == 2 and len(read_lut_file(existing).lut) == 2


def test_merge_holds_the_output_lock_while_writing(tmp_path: Path) -> None:
    """A `profile` adding rows to the output holds its sibling lock: the merge waits for it, so neither
    write is lost to the other's rename."""
    import threading

    from chamlab.core.locks import sibling_lock

    a = write(tmp_path / "a.parquet", run_lut("run-a", 0, 1.0))
    out = tmp_path / "new.parquet"
    done = threading.Event()
    with sibling_lock(out, what="test").hold():
        t = threading.Thread(target=lambda: (merge_files([a], out), done.set()))
        t.start()
        assert not done.wait(1.0) and not out.exists()  # waiting for the lock, nothing written
    t.join(30)
    assert done.is_set() and len(read_lut_file(out).lut) == 4
