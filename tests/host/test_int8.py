"""int8 end to end through the CLI: fp32 and int8 rows side by side in one LUT, --dtype selecting,
the boundary quantize/dequantize probes, recipes never mixing, and ops not delegated being recorded
and warned about. Real exports, real runner processes, real Parquet."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from conftest import chamlab, one_at_a_time, profile_macro, run_shared_dir

from chamlab.chamnet.spaces import SPACES
from chamlab.host.luts.lut import Lut, add_rows
from chamlab.host.measurement.pipeline import Measured
from chamlab.host.measurement.profiling import breakdown_and_delegation
from chamlab.operators import INVOCATION_PROBE, boundary_probes, quant
from chamlab.operators.export import Artifact, ExportItem

MACRO = SPACES.get("macro-cifar10")
ARCH = "all-identity"


@pytest.fixture(scope="session")
def lut(tmp_path_factory: pytest.TempPathFactory, fast_devices: Path) -> tuple[Path, dict]:
    """One LUT with the fp32 and the int8 rows of all-identity (the int8 profile's --json report),
    made once per run: under pytest-xdist the first worker makes it and the others read it (the tests
    copy it before writing to it)."""
    shared = run_shared_dir(tmp_path_factory) or tmp_path_factory.mktemp("int8")
    out, report = shared / "int8-lut.parquet", shared / "int8-report.json"
    with one_at_a_time(tmp_path_factory, "int8-lut"):
        if not report.is_file():
            res = profile_macro(out, fast_devices, "--arch", ARCH)
            assert res.returncode == 0, res.stderr
            res = profile_macro(out, fast_devices, "--arch", ARCH, "--dtype", "int8", "--json")
            assert res.returncode == 0, res.stderr
            tmp = report.with_suffix(".tmp")
            tmp.write_text(res.stdout)
            tmp.replace(report)
    return out, json.loads(report.read_text())


def _predict(path: Path, *extra: str | Path) -> tuple[int, dict | str]:
    res = chamlab("predict", "--space", "macro-cifar10", "--arch", ARCH, "--lut", path, "--json", *extra)
    return res.returncode, json.loads(res.stdout) if res.returncode == 0 else res.stderr


def test_fp32_and_int8_rows_live_side_by_side(lut) -> None:
    path, report = lut
    ops = MACRO.ops(MACRO.resolve(ARCH))
    probes = {p.key for p in boundary_probes(ops)}
    assert report["not_delegated_ops"] == [] and report["failed_ops"] == []
    assert report["planned_ops"] == len({op.key for op in ops} | probes | {INVOCATION_PROBE.key})
    rows = Lut.read(path).table.to_pylist()
    fp32 = {r["op_key"]: r for r in rows if r["dtype"] == "fp32"}
    int8 = {r["op_key"]: r for r in rows if r["dtype"] == "int8"}
    assert set(int8) == set(fp32) | probes and not probes & set(fp32)
    assert {r["quant_recipe"] for r in int8.values()} == {quant.DEFAULT_RECIPE}
    assert all(r["delegated"] is True for r in int8.values())
    assert {r["quant_recipe"] for r in fp32.values()} == {None}


def test_dtype_selects_the_rows_and_int8_subtracts_the_boundaries(lut, fast_devices: Path) -> None:
    path, _ = lut
    rc, q = _predict(path, "--dtype", "int8")
    assert rc == 0, q
    rc, f = _predict(path, "--dtype", "fp32")
    assert rc == 0, f
    assert isinstance(q, dict) and isinstance(f, dict)
    assert q["lut"]["dtype"] == "int8" and f["lut"]["dtype"] == "fp32"
    assert q["quant_edge_ms"] > 0 and f["quant_edge_ms"] is None
    n = len(q["ops"])
    expected = q["lut_sum_ms"] - (n - 1) * q["invocation_overhead_ms"] - q["quant_edge_ms"]
    assert q["latency_ms"] == pytest.approx(expected)
    # without --dtype: the device's dtype (test-cpu: fp32, the default); without a device: ambiguous
    rc, d = _predict(path, "--target", "test-cpu", "--devices", fast_devices)
    assert rc == 0 and isinstance(d, dict) and d["lut"]["dtype"] == "fp32", d
    rc, err = _predict(path)
    assert rc == 2 and "--dtype" in str(err)


def test_two_recipes_never_mix_in_one_set(lut, fast_devices: Path) -> None:
    path, _ = lut
    before = path.read_bytes()
    res = profile_macro(
        path, fast_devices, "--arch", ARCH, "--dtype", "int8", "--quant-recipe", "xnnpack-int8-pt-v1"
    )
    assert res.returncode == 2
    assert "two recipes never mix" in " ".join(res.stderr.split()) and "xnnpack-int8-pc-v1" in res.stderr
    assert path.read_bytes() == before
    res = profile_macro(path, fast_devices, "--arch", ARCH, "--dtype", "int8", "--quant-recipe", "int4")
    assert res.returncode == 2 and "xnnpack-int8-pt-v1" in res.stderr  # the known recipes are listed


def test_int8_needs_xnnpack(lut, fast_devices: Path) -> None:
    res = profile_macro(lut[0], fast_devices, "--arch", ARCH, "--dtype", "int8", "--backend", "portable")
    assert res.returncode == 2 and "xnnpack only" in res.stderr


def test_measure_int8_network_beside_its_int8_prediction(lut, fast_devices: Path) -> None:
    path, _ = lut
    res = chamlab(
        "measure", "--target", "test-cpu", "--space", "macro-cifar10", "--arch", ARCH, "--dtype", "int8",
        "--lut", path, "--devices", fast_devices, "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["dtype"] == "int8" and out["quant_recipe"] == quant.DEFAULT_RECIPE
    assert out["not_delegated"] is None and out["predicted_ms"] > 0 and out["measured_p50_ms"] > 0


def test_a_row_not_delegated_is_warned_about_in_predictions(lut, tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    path.write_bytes(lut[0].read_bytes())
    rows = [r for r in Lut.read(path).table.to_pylist() if r["dtype"] == "int8"]
    victim = next(r for r in rows if r["op_type"] == "pool_linear")
    bad = dict(
        victim, delegated=False, breakdown=[{"event": "fp32:mean.dim", "p50_ms": None, "delegated": False}]
    )
    add_rows(path, [bad])
    res = chamlab("predict", "--space", "macro-cifar10", "--arch", ARCH, "--lut", path, "--dtype", "int8")
    assert res.returncode == 0, res.stderr
    assert "delegated = false" in res.stderr and victim["op_key"] in " ".join(res.stderr.split())
    rc, out = _predict(path, "--dtype", "int8")
    assert rc == 0 and isinstance(out, dict) and out["not_delegated_ops"] == [victim["op_key"]]


def test_the_export_report_decides_delegated_even_without_a_breakdown(tmp_path: Path) -> None:
    item = ExportItem("x", ("x",))
    report = quant.QuantReport(quant.DEFAULT_RECIPE, ("cumsum.default",), ("aten.cumsum.default",))
    art = Artifact(
        item, "xnnpack", "int8", tmp_path / "x.pte", tmp_path / "x.etr", "k", None, report.recipe, report
    )
    events, delegated = breakdown_and_delegation(Measured(item, art, [1.0], {}, None))
    assert delegated is False
    assert events == [
        {"event": "fp32:cumsum.default", "p50_ms": None, "delegated": False},
        {"event": "aten.cumsum.default", "p50_ms": None, "delegated": False},
    ]
    good = dataclasses.replace(art, quant_report=quant.QuantReport(quant.DEFAULT_RECIPE))
    etdump = [{"event": "conv", "p50_ms": 0.1, "delegated": True}]
    assert breakdown_and_delegation(Measured(item, good, [1.0], {}, etdump)) == (etdump, True)
    fp32 = dataclasses.replace(art, dtype="fp32", quant_recipe=None, quant_report=None)
    assert breakdown_and_delegation(Measured(item, fp32, [1.0], {}, None)) == (None, None)


def test_adapt_exports_a_winner_int8_with_its_etrecord(tmp_path: Path) -> None:
    from executorch.extension.pybindings import _C as rt

    from chamlab.host import api

    arch = MACRO.resolve(ARCH)
    out = api.export_network_int8(MACRO, arch, tmp_path / "model.pte")
    assert out.report.delegated and out.report.recipe == quant.DEFAULT_RECIPE
    assert out.etrecord_path == tmp_path / "model.etrecord" and out.etrecord_path.stat().st_size > 0
    assert json.loads((tmp_path / "model.quant.json").read_text())["not_delegated"] == []
    import torch

    y = (
        rt._load_program(str(out.pte_path))
        .load_method("forward")
        .call([torch.randn(MACRO.input_shape(arch))])[0]
    )
    assert tuple(y.shape) == (1, 10)


def test_validate_and_predict_refuse_a_set_mixing_two_recipes(lut, tmp_path: Path) -> None:
    path = tmp_path / "mixed.parquet"
    path.write_bytes(lut[0].read_bytes())
    row = next(
        r for r in Lut.read(path).table.to_pylist() if r["op_type"] == "pool_linear" and r["dtype"] == "int8"
    )
    table = Lut.read(path).upsert([dict(row, quant_recipe="xnnpack-int8-pt-v1")]).table
    Lut(table).write(path)  # Lut.write checks nothing: validate and predict must
    res = chamlab("lut", "validate", path)
    assert res.returncode == 2 and "mix quantization recipes" in res.stderr
    rc, err = _predict(path, "--dtype", "int8")
    assert rc == 2 and "2 quantization recipes" in str(err)
