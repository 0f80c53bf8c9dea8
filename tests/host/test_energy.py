"""The energy predictor: LUT energy sums, corrected and calibrated like latency; a clear refusal
without energy rows; and the pipeline check on a simulated RAPL tree with a known power model."""

from __future__ import annotations

import datetime as dt
import json
import statistics
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_DEVICES, chamlab, profile_macro
from powersim import CpuPowerModelRapl

from chamlab.chamnet.spaces import SPACES
from chamlab.core.errors import MissingLutEntriesError, NoEnergyError
from chamlab.host import api
from chamlab.host.luts.lut import Lut, MeasurementSet, add_rows, make_row
from chamlab.host.prediction.records import lut_features

MACRO = SPACES.get("macro-cifar10")
MSET = MeasurementSet("d", "xnnpack", "fp32", 1)


def _law_ms(op) -> float:  # type: ignore[no-untyped-def]  # a synthetic device
    return 0.01 + 2e-7 * op.macs + 1e-6 * op.params


def _row(op, energy: bool = True) -> dict:  # type: ignore[no-untyped-def]
    p50 = _law_ms(op)
    row = make_row(
        op.key,
        device="d",
        backend="xnnpack",
        dtype="fp32",
        threads=1,
        samples_ms=list(p50 * np.linspace(0.99, 1.01, 5)),
        run_id="run-x",
        measured_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )
    if energy:  # 3 W above idle while the op runs
        row.update(energy_mj=3.0 * p50, avg_power_w=3.0, idle_power_w=1.0, power_reader="rapl")
    return row


def interior_loo_errors(networks: list[dict]) -> list[float]:
    """The leave-one-out errors of an energy record's networks strictly between its cheapest and its
    costliest by LUT energy (those two are extrapolations when left out)."""
    sums = [n["features"]["lut_sum_mj"] for n in networks]
    return [n["loo_error_pct"] for n, s in zip(networks, sums, strict=True) if min(sums) < s < max(sums)]


def _lut(path: Path, energy: bool = True) -> Path:
    add_rows(path, [_row(op, energy) for op in api.plan_ops(MACRO, MACRO.enumerate())])
    return path


def test_energy_is_summed_corrected_and_calibrated_beside_latency(tmp_path: Path) -> None:
    path = _lut(tmp_path / "lut.parquet")
    lut = Lut.read(path)
    arch = MACRO.parse("12012012")
    raw = api.predict_energy(MACRO, arch, lut, path, MSET, raw=True)
    ops = MACRO.ops(arch)
    assert raw.energy_mj == raw.lut_sum_mj == pytest.approx(sum(3.0 * _law_ms(op) for op in ops))
    assert raw.readers == ("rapl",) and not raw.calibrated
    corrected = api.predict_energy(MACRO, arch, lut, path, MSET)
    probe = corrected.invocation_overhead_mj
    assert probe is not None and corrected.energy_mj == pytest.approx(raw.lut_sum_mj - (len(ops) - 1) * probe)
    assert corrected.calibration is None

    # the device spends 12 % more than the ops' sum plus 0.02 mJ per inference: calibrate energy
    energy = lut.energy_by_key(MSET)
    archs = api.calibration.select_networks(MACRO, lut.p50_by_key(MSET), "fp32", 5, np.random.default_rng(0))
    truth = lambda a: 1.12 * sum(energy[op.key] for op in MACRO.ops(a)) + 0.02  # noqa: E731
    rec = api.calibration.build_record(
        MACRO, MSET, energy, archs, [truth(a) for a in archs], quantity="energy"
    )
    assert rec["quantity"] == "energy" and "measured_mj" in rec["networks"][0]
    assert rec["features"] == ["lut_sum_mj", "n_ops", "lut_sum_mj_x_weight_mib"]
    assert rec["model"] == "huber-ridge-relative-v2"
    # left out, the cheapest and the costliest network are extrapolations of fits on the other four
    # (three coefficients each; the cheapest's error is 8 %); those inside are recovered
    inside = interior_loo_errors(rec["networks"])
    assert len(inside) == 3 and max(abs(e) for e in inside) < 2.0, rec["networks"]
    api.calibration.store(path, rec)
    p50 = lut.p50_by_key(MSET)
    api.calibration.store(
        path, api.calibration.build_record(MACRO, MSET, p50, archs, [1.0 + a[0] for a in archs])
    )
    lut = Lut.read(path)
    assert sorted(c.get("quantity") for c in lut.calibrations) == ["energy", "latency"]  # both kept
    cal = api.predict_energy(MACRO, arch, lut, path, MSET)
    assert cal.calibrated and cal.energy_mj == pytest.approx(truth(arch), rel=0.02)
    assert cal.uncalibrated_mj == pytest.approx(corrected.energy_mj)
    # an energy record of the v1 model (weight MiB added, before 2026-12-07) applies as it was fitted
    v1 = {**rec, "model": "huber-ridge-relative-v1", "features": ["lut_sum_mj", "n_ops", "weight_mib"]}
    v1["coefficients"] = {"intercept_ms": 0.02, "lut_sum_mj": 1.12, "n_ops": 0.0, "weight_mib": 0.5}
    api.calibration.store(path, v1)
    old = api.predict_energy(MACRO, arch, Lut.read(path), path, MSET)
    mib = lut_features(MACRO, arch, energy, "fp32", "energy")["weight_mib"]
    assert old.calibrated and old.energy_mj == pytest.approx(truth(arch) + 0.5 * mib, rel=1e-9)
    api.calibration.store(path, rec)
    report = api.predict(MACRO, arch, lut=lut, lut_path=path).to_json()
    assert report["energy_mj"] == pytest.approx(cal.energy_mj) and report["energy"]["calibrated"]
    assert report["calibrated"] is True  # the latency calibration is applied on its own

    # re-measured energies make the energy calibration stale, never silently applied
    changed = _row(MACRO.ops(archs[0])[1])
    changed["energy_mj"] *= 1.5
    add_rows(path, [changed])
    stale = api.predict_energy(MACRO, arch, Lut.read(path), path, MSET)
    assert not stale.calibrated and stale.calibration and stale.calibration["stale"]


def test_no_energy_rows_is_a_clear_refusal(tmp_path: Path) -> None:
    path = _lut(tmp_path / "lut.parquet", energy=False)
    lut = Lut.read(path)
    arch = MACRO.parse("01201201")
    with pytest.raises(NoEnergyError, match=r"holds no energy for d .*had no power reader") as exc:
        api.predict_energy(MACRO, arch, lut, path, MSET)
    assert exc.value.exit_code == 2 and "power_reader" in (exc.value.hint or "")
    auto = api.predict(MACRO, arch, lut=lut, lut_path=path)
    assert auto.energy is None and "no power reader" in (auto.energy_note or "")
    assert auto.latency_ms is not None
    with pytest.raises(NoEnergyError):
        api.predict(MACRO, arch, lut=lut, lut_path=path, energy="require")
    res = chamlab("predict", "--space", "macro-cifar10", "--arch", "01201201", "--lut", path, "--energy")
    assert res.returncode == 2 and "no power reader" in res.stderr


def test_missing_op_energies_name_the_fix_or_are_interpolated(tmp_path: Path) -> None:
    path = tmp_path / "lut.parquet"
    arch = MACRO.parse("12012012")
    ops = MACRO.ops(arch)
    drop = {ops[2].key, ops[5].key}
    add_rows(path, [_row(op, op.key not in drop) for op in api.plan_ops(MACRO, MACRO.enumerate())])
    lut = Lut.read(path)
    with pytest.raises(MissingLutEntriesError, match="energy") as exc:
        api.predict_energy(MACRO, arch, lut, path, MSET)
    assert "chamlab profile" in (exc.value.hint or "")
    auto = api.predict(MACRO, arch, lut=lut, lut_path=path)  # latency stands, energy says why not
    assert auto.energy is None and "2 distinct op(s)" in (auto.energy_note or "")
    filled = api.predict_energy(MACRO, arch, lut, path, MSET, interpolate=True)
    assert filled.interpolated_ops == 2
    assert filled.lut_sum_mj == pytest.approx(sum(3.0 * _law_ms(op) for op in ops), rel=0.05)


IDLE_W, W_PER_CORE = 4.0, 10.0


@pytest.mark.serial  # its energy figure needs the CPUs to itself: runs after the parallel part
def test_energy_pipeline_recovers_the_injected_power_model(
    tmp_path: Path, profiled_lut: tuple[Path, dict]
) -> None:
    """`chamlab profile` -> `chamlab calibrate` -> energy prediction, on a device whose RAPL counter
    follows a known model (idle draw plus 10 W per CPU-second of its runner): each calibration
    network's energy predicted by the fit on the others (leave-one-out) against its energy measured
    whole under that model, and the stored calibration is what `predict` applies.

    ``profiled_lut`` is only asked for so that the ops' artifacts are already in this session's cache."""
    root = tmp_path / "powercap"
    devices = tmp_path / "devices.toml"
    keys = f'power_reader = "rapl"\npower_root = "{root}"\npower_window_s = 0.25\n'
    devices.write_text(FAST_DEVICES.replace("threads = 1\n", "threads = 1\n" + keys))
    lut = tmp_path / "lut.parquet"
    with CpuPowerModelRapl(root, IDLE_W, W_PER_CORE) as sim:
        res = profile_macro(lut, devices, "--json")
        assert res.returncode == 0, res.stderr
        rows = Lut.read(lut).table.to_pylist()
        assert {r["power_reader"] for r in rows} == {"rapl"}
        assert statistics.median(r["idle_power_w"] for r in rows) == pytest.approx(IDLE_W, rel=0.1)
        # an op's energy above idle is W x its CPU time: at one thread at most W x its latency
        # (less when neighbours preempt it: its wall time then exceeds its CPU time)
        ratios = [r["energy_mj"] / sim.energy_mj(r["p50_ms"]) for r in rows]
        assert 0.5 < statistics.median(ratios) < 1.2, ratios

        # whole networks the product's way on a noisy machine: each the median of three interleaved
        # sessions (`--repeats 3`, disturbed ones re-measured); why leave-one-out: docs/development.md
        res = chamlab(
            "calibrate", "--target", "test-cpu", "--space", "macro-cifar10", "--lut", lut,
            "--devices", devices, "--n", "8", "--repeats", "3", "--json",
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout)
    energy = rec["energy"]
    assert energy["quantity"] == "energy" and rec["energy_note"] is None
    nets = energy["networks"]
    assert len(nets) == 8
    # each network's energy above idle is the injected model's: W x its CPU time, at one thread at
    # most W x its latency (as for the ops above)
    latency = {n["name"]: n["measured_ms"] for n in rec["networks"]}
    ratios = [n["measured_mj"] / sim.energy_mj(latency[n["name"]]) for n in nets]
    # the median judges the pipeline (without the idle subtraction it is ~1.4, a units error moves it
    # by 10^3); one network's energy and latency come from different timing windows, and on a slow,
    # shared machine one of eight reached 1.29, so each alone gets a wider band
    assert 0.5 < statistics.median(ratios) < 1.2 and all(0.4 < r < 1.6 for r in ratios), ratios
    # the cheapest and costliest by LUT energy are extrapolations when left out: judged are the six
    # inside. The bounds are this shared machine's noise right after `make unit`'s parallel part:
    # interior medians of 16.4-21.4 % and single networks up to 48 % there, 3.8-11.6 % in runs of the
    # test alone (docs/development.md). A broken pipeline (energies not those of the ops) is far off
    errors = interior_loo_errors(nets)
    assert len(errors) == 6, nets
    assert statistics.median(abs(e) for e in errors) <= 25.0, errors
    assert max(abs(e) for e in errors) <= 50.0, errors
    # the stored calibration is what a prediction applies
    table = Lut.read(lut)
    for n in nets[:2]:
        pred = api.predict(MACRO, MACRO.parse(n["name"]), lut=table, lut_path=lut, energy="require")
        assert pred.energy is not None and pred.energy.calibrated
        assert pred.energy.energy_mj == pytest.approx(n["fitted_mj"], rel=1e-6), (pred.energy, n)
