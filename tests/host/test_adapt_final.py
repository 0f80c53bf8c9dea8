"""``adapt --oracle train`` ends with the winner's final training (issue 22): ``result.json`` says
``weights: trained`` and the schedule, the program's own accuracy through ExecuTorch (fp32 and its
int8 sibling) sits beside the PyTorch figures, ``--final-schedule none`` keeps the oracle's weights,
and a bad schedule is exit 2 before any work.

Kept small: the session's profiled macro-cifar10 LUT (no new profiling), ``--no-calibrate``, the
initial design of 4 archs (``--init 4 --budget 4``) trained on 128 digits for one epoch, a final
epoch over 256.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import chamlab

from chamlab.host import api

PROXY = "epochs=1,max_train=128,max_val=96,lr=0.05"
FINAL = "epochs=1,max_train=256"


def _args(devices: Path, lut: Path, out: Path) -> list[str | Path]:
    return [
        "adapt", "--target", "test-cpu", "--devices", devices, "--space", "macro-cifar10",
        "--latency", "p50", "--lut", lut, "--out", out, "--no-calibrate", "--budget", "4", "--init", "4",
        "--refine", "0", "--oracle", "train", "--data", "digits", "--schedule", PROXY, "--workers", "2",
    ]  # fmt: skip


def test_bad_final_schedules_are_exit_2_before_any_work(tmp_path: Path, fast_devices: Path) -> None:
    out = tmp_path / "run"
    base = ["adapt", "--target", "test-cpu", "--devices", fast_devices, "--space", "macro-cifar10"]
    base += ["--latency", "p50", "--out", out, "--lut", tmp_path / "lut.parquet"]
    res = chamlab(*base, "--oracle", "train", "--data", "digits", "--final-schedule", "bogus")
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--final-schedule 'bogus'" in lines[0], res.stderr
    assert "choose one of standard, short, long, none" in lines[0]
    res = chamlab(*base, "--final-schedule", "short")  # the table oracle has no data to train on
    assert res.returncode == 2 and "final training needs the training oracle's data" in res.stderr
    assert not out.exists() and not (tmp_path / "lut.parquet").exists()


@pytest.mark.slow
def test_adapt_trains_the_winner_and_reports_the_programs_accuracy(
    tmp_path: Path, fast_devices: Path, profiled_lut: tuple[Path, dict]
) -> None:
    lut = Path(shutil.copy(profiled_lut[0], tmp_path / "lut.parquet"))
    out = tmp_path / "run"
    # --final-schedule none: today's behaviour, the oracle's proxy weights (or seeded ones)
    res = chamlab(*_args(fast_devices, lut, out), "--final-schedule", "none", "--json")
    assert res.returncode == 0, res.stderr
    before = json.loads(res.stdout)
    assert before["final_schedule"] is None and before["final_training"] is None
    assert before["program_accuracies"] is None and before["weights"] in ("trained", "random")
    # the default-named run in the same folder reuses the search and trains the winner
    res = chamlab(*_args(fast_devices, lut, out), "--final-schedule", FINAL, "--json")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert r["arch"] == before["arch"] and r["new_queries"] == 0  # the BO loop came from the history
    assert r["weights"] == "trained" and r["final_schedule"] == FINAL
    ft = r["final_training"]
    assert ft["schedule"]["epochs"] == 1 and ft["schedule"]["max_train"] == 256 and ft["device"] == "cpu"
    assert ft["schedule"]["max_val"] == 96 and not ft["cached"]  # the oracle's validation split
    assert ft["warm_start"] is not None or before["weights"] == "random"  # the oracle's weights, if any
    assert r["seconds"]["final_train"] > 0 and "final training of" in res.stderr
    assert r["seconds"]["final_measure"] > 0 and "measured again" in r["refine_rounds"][-1]["action"]
    program, both = r["program_accuracy"], r["program_accuracies"]
    assert (
        program["runtime"] == "executorch"
        and program["dtype"] == "fp32"
        and program["split"]["max_val"] == 96
    )
    assert set(both) == {"fp32", "int8"} and both["fp32"] == program["top1_pct"]
    n = program["n"]
    assert abs(both["fp32"] - ft["accuracy"]) <= 100.0 / n + 1e-9  # the same weights: within one image
    m = json.loads((out / "model.json").read_text())
    assert m["program"]["weights"] == "trained" and m["input"]["mean"] is not None
    figures = {(f["runtime"], f["dtype"]): f["top1_pct"] for f in m["accuracy"]["figures"]}
    assert figures[("pytorch", "fp32")] == ft["accuracy"] and figures[("executorch", "fp32")] == both["fp32"]
    assert json.loads((out / "result.json").read_text())["final_training"]["key"] == ft["key"]


@pytest.mark.slow
def test_an_int8_program_reports_its_own_accuracy_and_its_fp32_siblings(
    tmp_path: Path, fast_devices: Path
) -> None:
    """Steps 4b and 8 on int8: the final weights exported as the shipped int8 program (calibrated on
    the final schedule's training batches), evaluated through ExecuTorch beside the fp32 program of
    the same weights."""
    from chamlab.chamnet.training import Schedule, TrainingOracle
    from chamlab.host.workflows import adapt as steps

    space = api.SPACES.get("macro-cifar10")
    arch = space.parse("00000001")
    spec = api.resolve_run(api.load_registry(fast_devices).get("test-cpu"), dtype="int8")
    opts = api.AdaptOptions(latency_ms=1.0, out=tmp_path / "run", final_schedule=FINAL)
    ctx = steps.Context(spec, space, opts)
    with TrainingOracle(space, "digits", schedule=Schedule(epochs=1, max_train=128, max_val=96)) as oracle:
        trained = steps.final_train(ctx, oracle, arch)  # the oracle never trained it: a cold start
        assert trained.result.warm_start is None and trained.result.accuracy_int8 is not None
        exported = steps.export(ctx, steps.FinalWeights(trained), arch, ctx.stage)  # type: ignore[arg-type]
        assert exported.weights == "trained" and exported.int8_calibration == "training"
        report = SimpleNamespace(
            arch=space.format(arch),
            values={d.name: v for d, v in zip(space.dimensions, arch, strict=True)},
            weights=exported.weights, input_shape=[1, *space.input_shape(arch)[1:]],
            oracle_accuracies=None, measured_latency_ms=0.5, measured_runs_ms=[0.5], unstable=False,
            predicted_latency_ms=0.48, runtime_version=None, notes=[], manifest_path=None,
            program_accuracy=None, program_accuracies=None,
        )  # fmt: skip
        steps.describe_program(ctx, oracle, report, trained)  # type: ignore[arg-type]
    assert report.notes == [], report.notes
    assert report.program_accuracy["dtype"] == "int8" and set(report.program_accuracies) == {"int8", "fp32"}
    n = report.program_accuracy["n"]
    assert abs(report.program_accuracies["fp32"] - trained.result.accuracy) <= 100.0 / n + 1e-9
    m = json.loads((ctx.stage / "model.json").read_text())
    figures = {(f["runtime"], f["dtype"]): f["top1_pct"] for f in m["accuracy"]["figures"]}
    assert figures[("executorch", "int8")] == report.program_accuracies["int8"]
    assert figures[("pytorch", "int8")] == trained.result.accuracy_int8
    assert m["program"]["dtype"] == "int8" and m["accuracy"]["split"]["max_train"] == 256


@pytest.mark.slow
def test_ship_final_trains_the_chosen_arch_once_and_measures_its_program_again(
    tmp_path: Path, fast_devices: Path
) -> None:
    """Step 9 alone: the chosen round's arch is trained by the final schedule, its program replaces
    the stage's ``model.pte`` and is measured again; the round keeps its own measurement and says so.
    A second call finds the training finished (resume rule: nothing trained again)."""
    from chamlab.chamnet.search.constrained import safety_margin
    from chamlab.chamnet.training import Schedule, TrainingOracle
    from chamlab.host.workflows import adapt as steps
    from chamlab.host.workflows.refine import RefineRound

    space = api.SPACES.get("macro-cifar10")
    arch = space.parse("00000001")
    spec = api.resolve_run(api.load_registry(fast_devices).get("test-cpu"))
    opts = api.AdaptOptions(latency_ms=1.0, out=tmp_path / "run", final_schedule=FINAL, runs=1)
    ctx = steps.Context(spec, space, opts)
    with TrainingOracle(space, "digits", schedule=Schedule(epochs=1, max_train=128, max_val=96)) as oracle:
        oracle([arch])  # the proxy's weights: what rounds 0..N export, and the final training's start
        first = steps.export(ctx, oracle, arch, ctx.stage)
        proxy_program = (ctx.stage / "model.pte").read_bytes()
        margin = safety_margin(1.0, None)
        winner = SimpleNamespace(best=SimpleNamespace(arch=arch))
        measured = SimpleNamespace(p50_ms=0.123)
        kept = [steps.Round(winner, first, measured, SimpleNamespace(margin=margin))]  # type: ignore[arg-type]
        rounds = [RefineRound(0, "00000001", 50.0, 0.1, 0.123, 1.0, margin, ctx.out / "model.pte", "final")]
        refined = steps.Refined(rounds, kept, 0, [])
        seconds: dict[str, float] = {}
        trained = steps.ship_final(ctx, oracle, refined, seconds)
        again = steps.final_train(ctx, oracle, arch)
    assert trained.result.warm_start == oracle.key(arch) and not trained.result.cached
    assert again.result.cached and again.result.key == trained.result.key
    assert set(seconds) == {"final_train", "final_export", "final_measure"}
    chosen = refined.chosen
    assert chosen.exported.weights == "trained" and chosen.measured.p50_ms > 0
    assert chosen.measured.p50_ms != 0.123 and refined.rounds[0].measured_latency_ms == 0.123
    assert "measured again as model.pte" in refined.rounds[0].action
    assert (ctx.stage / "model.pte").read_bytes() != proxy_program  # the final weights were exported


@pytest.fixture(autouse=True)
def _no_default_luts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
