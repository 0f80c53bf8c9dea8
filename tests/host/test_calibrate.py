"""Calibration in the LUT: stored, applied, stale, --raw; interpolated ops; `chamlab calibrate` end to end."""

from __future__ import annotations

import datetime as dt
import io
import json
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest
from conftest import chamlab

from chamlab.chamnet.spaces import SPACES
from chamlab.core.errors import InputError, MissingLutEntriesError
from chamlab.host import api
from chamlab.host.luts.lut import Lut, MeasurementSet, add_rows, make_row

MACRO = SPACES.get("macro-cifar10")
MSET = MeasurementSet("d", "xnnpack", "fp32", 1)


def _law(op) -> float:  # type: ignore[no-untyped-def]  # a synthetic device
    return 0.01 + 2e-7 * op.macs + 1e-6 * op.params


def _row(op, p50: float) -> dict:  # type: ignore[no-untyped-def]
    return make_row(
        op.key,
        device="d",
        backend="xnnpack",
        dtype="fp32",
        threads=1,
        samples_ms=list(p50 * np.linspace(0.99, 1.01, 5)),
        run_id="run-x",
        measured_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )


@pytest.fixture
def lut_path(tmp_path: Path) -> Path:
    ops = api.plan_ops(MACRO, MACRO.enumerate())
    path = tmp_path / "lut.parquet"
    add_rows(path, [_row(op, _law(op)) for op in ops])
    return path


def _calibrate(path: Path, archs: list) -> dict:  # type: ignore[type-arg]
    lut = Lut.read(path)
    p50 = lut.p50_by_key(MSET)
    # the "device" runs each network 8 % slower than its LUT sum, plus a fixed 0.05 ms
    measured = [1.08 * sum(p50[op.key] for op in MACRO.ops(a)) + 0.05 for a in archs]
    rec = api.calibration.build_record(MACRO, MSET, p50, archs, measured, seed=0)
    api.calibration.store(path, rec)
    return rec


def test_select_networks_draws_from_the_given_candidates_only(lut_path: Path) -> None:
    p50 = Lut.read(lut_path).p50_by_key(MSET)
    pool = [MACRO.parse(s) for s in ("00000000", "11111111", "22222222", "01201201", "21021021")]
    picked = api.calibration.select_networks(
        MACRO, p50, "fp32", 3, np.random.default_rng(0), candidates=pool, exclude=[pool[0]]
    )
    assert len(set(picked)) == 3 and set(picked) <= set(pool[1:])
    with pytest.raises(InputError, match="only 4 of 4"):
        api.calibration.select_networks(
            MACRO, p50, "fp32", 5, np.random.default_rng(0), candidates=pool, exclude=[pool[0]]
        )


def test_calibration_is_stored_applied_and_reported_stale(lut_path: Path) -> None:
    lut = Lut.read(lut_path)
    archs = api.calibration.select_networks(MACRO, lut.p50_by_key(MSET), "fp32", 5, np.random.default_rng(0))
    assert len(set(archs)) == 5
    rec = _calibrate(lut_path, archs)
    assert rec["loo"]["n"] == 5 and len(rec["networks"]) == 5 and rec["rows"]["digest"]
    lut = Lut.read(lut_path)
    assert [c["space"] for c in lut.calibrations] == ["macro-cifar10"]
    arch = MACRO.parse("12012012")
    pred = api.predict_latency(MACRO, arch, lut, lut_path, MSET)
    truth = 1.08 * pred.lut_sum_ms + 0.05
    assert pred.calibrated and pred.latency_ms == pytest.approx(truth, rel=0.02)
    assert pred.uncalibrated_ms is not None and pred.calibration and not pred.calibration["stale"]
    raw = api.predict_latency(MACRO, arch, lut, lut_path, MSET, raw=True)
    assert not raw.calibrated and raw.latency_ms == raw.lut_sum_ms == pred.lut_sum_ms
    # `chamlab search` predicts through latency_model: the same numbers as predict, calibration included
    from chamlab.host.prediction.predict import latency_model

    for flag, expect in ((False, pred), (True, raw)):
        assert latency_model(MACRO, lut, lut_path, MSET, raw=flag)(arch) == pytest.approx(expect.latency_ms)

    # a second calibration of the same set replaces the first; other rows added keep it
    _calibrate(lut_path, archs[:3])
    other = make_row(
        rec["rows"]["op_keys"][0],
        device="d",
        backend="xnnpack",
        dtype="fp32",
        threads=2,
        samples_ms=[1.0, 1.1],
    )
    add_rows(lut_path, [other])  # rows of another set: the calibration is carried and still fresh
    lut = Lut.read(lut_path)
    assert len(lut.calibrations) == 1 and api.predict_latency(MACRO, arch, lut, lut_path, MSET).calibrated

    # re-profiling an op it was fitted on makes it stale: reported, never applied
    used = rec["rows"]["op_keys"][1]
    op = next(o for o in api.plan_ops(MACRO, MACRO.enumerate()) if o.key == used)
    add_rows(lut_path, [_row(op, 2 * _law(op))])
    lut = Lut.read(lut_path)
    assert len(lut.calibrations) == 1  # add_rows carries the metadata
    stale = api.predict_latency(MACRO, arch, lut, lut_path, MSET)
    assert not stale.calibrated and stale.calibration and stale.calibration["stale"]
    assert "changed" in (stale.calibration_note or "")
    report = api.predict(MACRO, arch, lut=lut, lut_path=lut_path, threads=1).to_json()
    assert report["calibrated"] is False and report["calibration"]["stale"] is True


def test_interpolated_ops_are_predicted_and_counted(lut_path: Path) -> None:
    lut = Lut.read(lut_path)
    arch = MACRO.parse("12012012")
    ops = MACRO.ops(arch)
    drop = {ops[2].key, ops[5].key}
    thin = Lut(lut.table.filter([k not in drop for k in lut.table["op_key"].to_pylist()]))
    with pytest.raises(MissingLutEntriesError):
        api.predict_latency(MACRO, arch, thin, lut_path, MSET)
    full = api.predict_latency(MACRO, arch, lut, lut_path, MSET)
    pred = api.predict_latency(MACRO, arch, thin, lut_path, MSET, interpolate=True)
    assert pred.interpolated_ops == len(drop)
    assert {c.op.key for c in pred.ops if c.interpolated} == drop
    assert pred.latency_ms == pytest.approx(full.latency_ms, rel=0.05)
    report = api.predict(MACRO, arch, lut=thin, lut_path=lut_path, interpolate=True).to_json()
    assert report["interpolated_ops"] == 2 and sum(o["interpolated"] for o in report["ops"]) == 2


@pytest.mark.slow
def test_calibrate_end_to_end(profiled_lut: tuple[Path, dict], fast_devices: Path, tmp_path: Path) -> None:
    path = tmp_path / "lut.parquet"
    shutil.copyfile(profiled_lut[0], path)
    common = ("--target", "test-cpu", "--space", "macro-cifar10", "--lut", path)
    res = chamlab("calibrate", *common, "--n", "3", "--repeats", "2", "--devices", fast_devices)
    assert res.returncode == 0, res.stderr
    assert "leave-one-out" in res.stdout and "within +/-10%" in res.stdout
    assert "energy: not calibrated (device test-cpu has no power reader" in res.stdout
    # the table was markup: "[devices.test-cpu]" vanished ("set power_reader in  of devices.toml")
    assert "set power_reader in [devices.test-cpu] of devices.toml" in " ".join(res.stdout.split())
    [rec] = Lut.read(path).calibrations
    assert rec["measure"]["protocol"]["repeats"] == 2 and rec["quantity"] == "latency"
    assert len(rec["networks"]) == 3 and rec["loo"]["n"] == 3 and rec["threads"] == 1
    assert all(n["measured_ms"] > 0 for n in rec["networks"]) and rec["device"] == "test-cpu"
    # the op recheck (default on): ops of these networks re-measured, the LUT's rows left as profiled
    noise = rec["op_noise"]
    assert noise["method"] == "op-model-shrinkage-v1" and noise["n_ops"] >= 8 and "op recheck:" in res.stdout
    assert set(noise["op_keys"]) <= set(rec["rows"]["op_keys"]) and noise["log_var"] >= 0
    assert set(noise["weights"]) and all(0 <= w <= 1 for w in noise["weights"].values())
    assert Lut.read(path).table.num_rows == Lut.read(profiled_lut[0]).table.num_rows
    pred = json.loads(chamlab("predict", *common, "--arch", "01201201", "--json").stdout)
    assert pred["calibrated"] is True and pred["uncalibrated_ms"] > 0 and pred["interpolated_ops"] == 0
    assert pred["calibration"]["op_weights"] == noise["weights"]
    raw = json.loads(chamlab("predict", *common, "--arch", "01201201", "--raw", "--json").stdout)
    assert raw["calibrated"] is False and raw["latency_ms"] == raw["lut_sum_ms"]
    res = chamlab("measure", *common, "--arch", "01201201", "--devices", fast_devices, "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["calibrated"] is True
    bad = chamlab("calibrate", *common, "--n", "2", "--devices", fast_devices)
    assert bad.returncode == 2
    bad = chamlab("calibrate", *common, "--recheck", "4", "--devices", fast_devices)
    assert bad.returncode == 2 and "--recheck must be 0 (off) or at least 8" in bad.stderr


def test_predict_interpolate_gives_any_arch_a_flagged_prediction(lut_path: Path) -> None:
    """A chamnet-mbv2 arch from a macro-cifar10 LUT: every op of it is interpolated, and says so."""
    args = ("predict", "--space", "chamnet-mbv2", "--arch", "chamnet-a", "--lut", lut_path)
    assert chamlab(*args).returncode != 0  # without --interpolate: the missing ops are an error
    res = chamlab(*args, "--interpolate", "--json")
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)
    distinct = len({o["op_key"] for o in rep["ops"]})
    assert rep["latency_ms"] > 0 and rep["calibrated"] is False
    assert 0 < rep["interpolated_ops"] <= distinct
    assert rep["interpolated_ops"] == sum(o["interpolated"] for o in rep["ops"])
    res = chamlab(*args, "--interpolate")
    assert res.returncode == 0 and "interpolated" in res.stdout + res.stderr


def test_calibrations_of_two_batch_sizes_are_kept_apart(tmp_path: Path) -> None:
    """One fit per (device, backend, dtype, threads, batch, space): a batch-2 fit never replaces
    the batch-1 one, and each applies to its own rows only."""
    ops = api.plan_ops(MACRO, MACRO.enumerate())
    path = tmp_path / "lut.parquet"
    rows = [_row(op, _law(op)) for op in ops]
    add_rows(path, [*rows, *({**r, "batch": 2} for r in rows)])
    b2 = MSET._replace(batch=2)
    lut = Lut.read(path)
    archs = api.calibration.select_networks(MACRO, lut.p50_by_key(MSET), "fp32", 4, np.random.default_rng(0))
    p50 = lut.p50_by_key(MSET)
    for mset, factor in ((MSET, 1.1), (b2, 1.5)):
        measured = [factor * sum(p50[op.key] for op in MACRO.ops(a)) for a in archs]
        api.calibration.store(path, api.calibration.build_record(MACRO, mset, p50, archs, measured))
    lut = Lut.read(path)
    assert sorted(c["batch"] for c in lut.calibrations) == [1, 2]
    arch = MACRO.parse("12012012")
    one = api.predict_latency(MACRO, arch, lut, path, MSET)
    two = api.predict_latency(MACRO, arch, lut, path, b2)
    assert one.calibrated and two.calibrated
    assert two.latency_ms / one.latency_ms == pytest.approx(1.5 / 1.1, rel=0.03)


def test_calibrate_batch_option_picks_the_batch_rows(lut_path: Path, tmp_path: Path) -> None:
    """--batch reaches the run spec: a LUT without rows at that batch is refused before any work."""
    devices = tmp_path / "devices.toml"
    devices.write_text('[devices.d]\ntransport = "local"\nthreads = 1\n')
    args = ("calibrate", "--target", "d", "--space", "macro-cifar10", "--lut", lut_path, "--devices", devices)
    res = chamlab(*args, "--n", "3", "--batch", "4")
    assert res.returncode == 2 and "batch=4" in res.stderr and "--batch N" in res.stderr
    assert Lut.read(lut_path).calibrations == []


def test_a_calibration_with_op_noise_sums_shrunk_ops_in_fit_and_prediction(tmp_path: Path) -> None:
    """A LUT measured in a noisy session (each op off by ~30 %): the calibration's op_noise weights
    move ops towards the op-level model; predict applies exactly what the fit saw, and the held-apart
    networks come out closer to the device than from the same LUT fitted as measured."""
    import math

    from chamlab.chamnet.predictors.op_model import shrinkage_weights
    from chamlab.host.prediction.op_values import op_model
    from chamlab.host.prediction.predict import LatencyModel

    rng = np.random.default_rng(0)
    ops = api.plan_ops(MACRO, MACRO.enumerate())
    path = tmp_path / "noisy.parquet"
    add_rows(path, [_row(op, _law(op) * math.exp(rng.normal(0, 0.3))) for op in ops])
    lut = Lut.read(path)
    p50 = lut.p50_by_key(MSET)

    def device(arch) -> float:  # type: ignore[no-untyped-def]  # what the networks really take
        return 1.08 * sum(_law(op) for op in MACRO.ops(arch)) + 0.05

    archs = api.calibration.select_networks(MACRO, p50, "fp32", 8, np.random.default_rng(1))
    measured = [device(a) for a in archs]
    scatter = op_model(lut, MSET).misfit_log_var()
    noise = {"n_ops": 32, "log_var": 0.09, "weights": shrinkage_weights(scatter, 0.09)}
    assert all(w > 0.5 for w in noise["weights"].values())
    tests = [a for a in MACRO.sample(np.random.default_rng(2), 40) if a not in set(archs)]
    errors = {}
    for name, op_noise in (("measured", None), ("shrunk", noise)):
        rec = api.calibration.build_record(MACRO, MSET, p50, archs, measured, seed=0, op_noise=op_noise)
        api.calibration.store(path, rec)
        lut = Lut.read(path)
        model = LatencyModel(MACRO, lut, path, MSET)
        assert model.calibrated
        for net, arch in zip(rec["networks"], archs, strict=True):  # predict = what the fit saw
            assert model.predict(arch).latency_ms == pytest.approx(net["fitted_ms"], rel=1e-9)
        preds = [model.predict(a) for a in tests]
        assert all(
            p.lut_sum_ms == pytest.approx(sum(p50[o.key] for o in MACRO.ops(a)))
            for p, a in zip(preds, tests, strict=True)
        )
        errors[name] = statistics.median(
            abs(p.latency_ms / device(a) - 1) for p, a in zip(preds, tests, strict=True)
        )
    assert Lut.read(path).calibrations[0]["op_noise"]["weights"] == noise["weights"]
    assert errors["shrunk"] < 0.7 * errors["measured"], errors


def test_refining_a_calibration_keeps_its_op_noise(lut_path: Path) -> None:
    from chamlab.host.workflows.refine import refit

    p50 = Lut.read(lut_path).p50_by_key(MSET)
    archs = api.calibration.select_networks(MACRO, p50, "fp32", 4, np.random.default_rng(0))
    measured = [1.08 * sum(p50[op.key] for op in MACRO.ops(a)) for a in archs]
    noise = {"n_ops": 8, "log_var": 0.01, "weights": {"conv_bn_act": 0.4}}
    rec = api.calibration.build_record(MACRO, MSET, p50, archs, measured, seed=0, op_noise=noise)
    api.calibration.store(lut_path, rec)
    winner = MACRO.parse("21021021")
    new = refit(MACRO, lut_path, MSET, winner, 2.0, source="test")
    assert new["op_noise"] == noise and [w["name"] for w in new["refined_with"]] == ["21021021"]
    assert Lut.read(lut_path).calibrations[0]["op_noise"] == noise


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        (lambda r: r["coefficients"].update(lut_sum_ms=1e300), "coefficient lut_sum_ms is 1e+300, beyond"),
        (lambda r: r.pop("coefficients"), "coefficients is None"),
        (lambda r: r["coefficients"].update(n_ops="abc"), "coefficient n_ops is 'abc'"),
        (lambda r: r.update(model="my-own-model"), "model 'my-own-model' is unknown"),
        (lambda r: r.pop("model"), "model None is unknown"),
        (lambda r: r["coefficients"].update(extra=0.0), "coefficients hold unknown extra"),
        (lambda r: r["loo"].update(mape_pct=float("nan")), "loo mape_pct is nan"),
    ],
)
def test_a_tampered_calibration_is_reported_and_never_applied(lut_path: Path, tamper, problem: str) -> None:  # type: ignore[no-untyped-def]
    """Before: 1e300 was applied (latency 1e+300 ms, calibrated), "abc" was a traceback, and
    `lut validate` said valid to all of them."""
    from chamlab.host.luts.lifecycle import validate_file

    lut = Lut.read(lut_path)
    _calibrate(
        lut_path,
        api.calibration.select_networks(MACRO, lut.p50_by_key(MSET), "fp32", 5, np.random.default_rng(0)),
    )
    lut = Lut.read(lut_path)
    rec = json.loads(json.dumps(lut.calibrations[0]))
    tamper(rec)
    Lut(lut.table, lut.provenance, [rec]).write(lut_path)
    report = validate_file(lut_path)
    assert not report.valid and any(problem in p for p in report.problems), report.problems
    lut = Lut.read(lut_path)
    arch = MACRO.parse("12012012")
    pred = api.predict_latency(MACRO, arch, lut, lut_path, MSET)
    assert not pred.calibrated and pred.latency_ms == pytest.approx(pred.lut_sum_ms, rel=0.5)
    assert pred.calibration and pred.calibration["invalid"] and not pred.calibration["stale"]
    assert problem in (pred.calibration_note or "") and "not applied" in (pred.calibration_note or "")
    res = chamlab("predict", "--space", "macro-cifar10", "--lut", lut_path, "--arch", "12012012", "--json")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    out = json.loads(res.stdout)
    assert out["calibrated"] is False and out["calibration"]["invalid"] is True
    assert 0 < out["latency_ms"] < 1e3
    lint = chamlab("lut", "validate", lut_path)
    assert lint.returncode == 2 and problem in lint.stderr


MBV2 = SPACES.get("chamnet-mbv2")
MBV2_SET = MeasurementSet("d", "xnnpack", "fp32", 1)


def _mbv2_lut(path: Path, archs: list, provenance: dict | None) -> dict[str, float]:  # type: ignore[type-arg]
    ops = api.plan_ops(MBV2, archs)
    add_rows(path, [_row(op, _law(op)) for op in ops], provenance)
    return Lut.read(path).p50_by_key(MBV2_SET)


def test_calibrate_draws_from_the_archs_profiled_into_the_lut(tmp_path: Path) -> None:
    """Before: after `profile --space chamnet-mbv2 --arch A --arch B --arch C` the candidates were the
    references and a random sample only: "the LUT holds every op of only 0 of 263 candidate
    networks", with a hint naming --sample alone."""
    from chamlab.host.prediction.calibrate import profiled_archs

    mine = MBV2.sample(np.random.default_rng(42), 3)
    prov = {"run_id": "run-p", "space": MBV2.name, "archs": [MBV2.format(a) for a in mine]}
    p50 = _mbv2_lut(tmp_path / "lut.parquet", mine, prov)
    lut = Lut.read(tmp_path / "lut.parquet")
    assert profiled_archs(lut, MBV2) == mine and profiled_archs(lut, MACRO) == []
    picked = api.calibration.select_networks(
        MBV2, p50, "fp32", 3, np.random.default_rng(0), profiled=profiled_archs(lut, MBV2)
    )
    assert sorted(picked) == sorted(mine)
    with pytest.raises(InputError, match=r"only 0 of \d+ candidate chamnet-mbv2 networks") as info:
        api.calibration.select_networks(MBV2, p50, "fp32", 3, np.random.default_rng(0))
    assert "--arch" in (info.value.hint or "")
    # --arch names networks outright; one whose ops the LUT lacks is refused naming it
    assert api.calibration.select_networks(MBV2, p50, "fp32", 3, np.random.default_rng(0), named=mine) == mine
    other = MBV2.references["chamnet-a"]
    with pytest.raises(InputError, match=rf"--arch {MBV2.format(other)}: the LUT lacks"):
        api.calibration.select_networks(MBV2, p50, "fp32", 3, np.random.default_rng(0), named=[other])


def test_profile_records_the_named_archs_and_calibrate_arch_measures_them(
    tmp_path: Path, fast_devices: Path
) -> None:
    from conftest import profile_macro

    path = tmp_path / "lut.parquet"
    named = ["00000000", "00000001", "00000010"]
    res = profile_macro(path, fast_devices, *(x for a in named for x in ("--arch", a)))
    assert res.returncode == 0, res.stderr
    assert Lut.read(path).provenance[-1]["archs"] == named
    res = chamlab(
        "calibrate", "--target", "test-cpu", "--space", "macro-cifar10", "--lut", path, "--recheck", "0",
        *(x for a in named for x in ("--arch", a)), "--devices", fast_devices, "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert [n["name"] for n in json.loads(res.stdout)["networks"]] == named


def test_the_calibration_table_fits_80_columns(tmp_path: Path) -> None:
    """Before: chamnet-mbv2's 60+ character names wrapped into 8-line cells at 80 columns."""
    from rich.console import Console

    from chamlab.host.cli.calibrate import calibration_table

    archs = MBV2.sample(np.random.default_rng(7), 4)
    p50 = _mbv2_lut(tmp_path / "lut.parquet", archs, None)
    measured = [1.1 * sum(p50[op.key] for op in MBV2.ops(a)) for a in archs]
    rec = api.calibration.build_record(MBV2, MBV2_SET, p50, archs, measured)
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(calibration_table("calibration of chamnet-mbv2 on d, stored in lut.parquet", rec))
    lines = console.export_text().splitlines()
    assert all(len(line) <= 80 for line in lines)
    rows = [line for line in lines if "..." in line]
    assert len(rows) == 4  # one line per network, each name shortened
    for a, line in zip(archs, rows, strict=True):
        name = MBV2.format(a)
        assert name[:12] in line and name[-7:] in line
