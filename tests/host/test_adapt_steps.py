"""``adapt``'s steps one at a time (each with its resume rule), and the defects of issues 21/25 in
adapt and calibrate: a kill during calibration's op recheck, a re-run of a finished adapt killed
while it measures, two runs into one ``--out``, bad seeds, the GP file's name.

Kept small: the session's profiled macro-cifar10 LUT (no new profiling), the initial design only
(``budget`` 10), one measurement run. Kills happen on an observed event, never after a sleep.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import REPO, chamlab, private_cache, processes_with, spawn_chamlab, wait_for

from chamlab.chamnet.search import oracle_for
from chamlab.core.errors import DeviceBusyError, InputError
from chamlab.host import api
from chamlab.host.luts.lut import Lut
from chamlab.host.workflows import adapt as steps
from chamlab.host.workflows.search import lock_path, out_lock

SPACE = api.SPACES.get("macro-cifar10")


@pytest.fixture
def ctx(tmp_path: Path, fast_devices: Path, profiled_lut: tuple[Path, dict]) -> steps.Context:
    spec = api.resolve_run(api.load_registry(fast_devices).get("test-cpu"))
    lut = shutil.copy(profiled_lut[0], tmp_path / "lut.parquet")
    opts = api.AdaptOptions(
        latency_percentile=50,
        budget=10,
        out=tmp_path / "run",
        lut_path=Path(lut),
        calibrate=False,
        runs=1,
        refine=0,
    )  # the limit: the median predicted latency (this machine's LUT, whatever its speed)
    return steps.Context(spec, SPACE, opts)


def test_check_inputs_refuses_before_writing_and_names_the_run(ctx: steps.Context) -> None:
    checked = steps.check_inputs(ctx, None)
    assert checked.oracle.name == oracle_for(SPACE).name and checked.lut_path == ctx.opts.lut_path
    assert checked.ident["command"] == "adapt" and checked.ident["limits"] == {"latency_ms": "p50"}
    bad = steps.Context(ctx.spec, SPACE, api.AdaptOptions(**{**_fields(ctx.opts), "seed": -1}))
    with pytest.raises(InputError, match="--seed must be 0 or more, got -1"):
        steps.check_inputs(bad, None)
    assert not ctx.out.exists()


def test_ensure_lut_measures_only_what_the_lut_lacks(ctx: steps.Context) -> None:
    step = steps.ensure_lut(ctx, Path(ctx.opts.lut_path))  # the LUT holds every op: nothing measured
    assert step.profiled == 0 and step.mset.device == "test-cpu" and step.mset.threads == 1
    assert set(step.lut.p50_by_key(step.mset)) >= {op.key for op in SPACE.ops(SPACE.parse("01201201"))}


def test_ensure_calibration_without_calibrate_predicts_lut_sums(ctx: steps.Context) -> None:
    lut = steps.ensure_lut(ctx, Path(ctx.opts.lut_path))
    predictors = steps.ensure_calibration(ctx, lut)
    assert not predictors.latency.model.calibrated and predictors.energy is None
    assert any("predictions are LUT sums" in n for n in predictors.notes)
    arch = SPACE.parse("01201201")
    expect = api.predict(SPACE, arch, lut=lut.lut, lut_path=lut.lut_path, target="test-cpu")
    assert predictors.latency(arch) == pytest.approx(expect.latency_ms)


def test_plan_limits_margin_and_an_infeasible_limit(ctx: steps.Context) -> None:
    lut = steps.ensure_lut(ctx, Path(ctx.opts.lut_path))
    predictors = steps.ensure_calibration(ctx, lut)
    limits = steps.plan_limits(ctx, predictors)
    median = float(np.percentile([predictors.latency(a) for a in SPACE.enumerate()], 50))
    assert limits.margin.limit == pytest.approx(median) and limits.calibration is None
    assert limits.effective() == {"latency_ms": limits.margin.effective} and limits.margin.effective < median
    fields = {**_fields(ctx.opts), "latency_ms": 1e-4, "latency_percentile": None}
    tight = steps.Context(ctx.spec, SPACE, api.AdaptOptions(**fields))
    with pytest.raises(InputError, match="fastest predicted latency"):
        steps.plan_limits(tight, predictors)


def _through_bo(ctx: steps.Context) -> tuple[Any, ...]:
    checked = steps.check_inputs(ctx, None)
    lut = steps.ensure_lut(ctx, checked.lut_path)
    predictors = steps.ensure_calibration(ctx, lut)
    limits = steps.plan_limits(ctx, predictors)
    bo = steps.run_bo(ctx, checked.oracle, predictors, limits, checked.ident)
    return checked, lut, predictors, limits, bo


def test_run_bo_resumes_its_history_and_never_writes_result_json(ctx: steps.Context) -> None:
    checked, lut, predictors, limits, bo = _through_bo(ctx)
    assert bo.queries == bo.new_queries == 10 and len(bo.known) == 10
    assert (ctx.out / "search.json").is_file() and (ctx.out / "accuracy_gp.json").is_file()
    assert not (ctx.out / "result.json").exists() and not (ctx.out / "model.json").exists()
    again = steps.run_bo(ctx, checked.oracle, predictors, limits, checked.ident)  # resume: no query
    assert again.queries == 10 and again.new_queries == 0 and again.known == bo.known
    assert again.state.fit_seconds == 0  # the stored GP rebuilt, not refitted (CI saw a refit differ)
    winner = steps.constrained(ctx, bo, predictors, limits, lut)
    assert winner.best is not None and winner.best.costs["latency_ms"] <= limits.margin.effective
    # seeded: the same history and LUT give the same winner (nothing of this step is stored)
    assert steps.constrained(ctx, again, predictors, limits, lut).best.arch == winner.best.arch


def test_export_verify_refine_and_publish(ctx: steps.Context) -> None:
    checked, lut, predictors, limits, bo = _through_bo(ctx)
    winner = steps.constrained(ctx, bo, predictors, limits, lut)
    exported = steps.export(ctx, checked.oracle, winner.best.arch, ctx.stage)
    assert exported.model_path == ctx.stage / "model.pte" and exported.weights == "random"
    assert not (ctx.out / "model.pte").exists()  # a finished run's program is never overwritten here
    measured = steps.verify(ctx, exported, winner.best.arch)
    assert len(measured.runs) == 1 and measured.p50_ms > 0
    refined = steps.refine(ctx, checked.oracle, bo, steps.Round(winner, exported, measured, limits), lut)
    assert [r.round for r in refined.rounds] == [0] and refined.final == 0
    assert refined.rounds[0].model_path == ctx.out / "model.pte" and refined.rounds[0].action == "final"
    report = steps.assemble(ctx, checked.oracle, lut, predictors, winner, measured, refined, bo, {})
    assert report.model_path == ctx.out / "model.pte" and report.queries == 10
    assert not steps.publish(ctx.out) and not ctx.stage.exists()  # no result.json: an incomplete stage goes
    exported = steps.export(ctx, checked.oracle, winner.best.arch, ctx.stage)
    (ctx.stage / "result.json").write_text(json.dumps(report.to_json()))
    assert steps.publish(ctx.out) and not ctx.stage.exists()
    assert json.loads((ctx.out / "result.json").read_text())["arch"] == report.arch
    assert (ctx.out / "model.pte").is_file() and (ctx.out / "model.etrecord").is_file()


def test_publish_finishes_a_stage_a_kill_interrupted(tmp_path: Path) -> None:
    """A kill after the old result went and before the new one arrived: the next run publishes the
    complete stage (round folders of the old run it does not have are removed with the old result)."""
    out = tmp_path / "run"
    (out / "round-2").mkdir(parents=True)
    (out / "model.pte").write_text("old")
    stage = out / steps.STAGE
    (stage / "round-0").mkdir(parents=True)
    (stage / "round-0" / "model.pte").write_text("new 0")
    (stage / "model.pte").write_text("new")
    new = {"arch": "new", "refine_rounds": [{"model_path": str(out / "round-0" / "model.pte")}]}
    (stage / "result.json").write_text(json.dumps(new))
    assert steps.publish(out)
    assert (out / "model.pte").read_text() == "new" and (out / "round-0" / "model.pte").read_text() == "new 0"
    assert json.loads((out / "result.json").read_text()) == new
    assert not (out / "round-2").exists() and not stage.exists()
    # killed again half-way through publishing (round-0 moved, model.pte not): the replay keeps round-0
    (stage / "model.pte").parent.mkdir()
    (stage / "model.pte").write_text("newer")
    (stage / "result.json").write_text(json.dumps(new))
    (out / "result.json").unlink()
    assert steps.publish(out)
    assert (out / "model.pte").read_text() == "newer"
    assert (out / "round-0" / "model.pte").read_text() == "new 0"


def _fields(opts: api.AdaptOptions) -> dict[str, Any]:
    import dataclasses

    return {f.name: getattr(opts, f.name) for f in dataclasses.fields(opts)}


# -- defects -----------------------------------------------------------------------------------------


def _adapt_args(tmp_path: Path, devices: Path, lut: Path, out: Path, *extra: str) -> list[Any]:
    return [
        "adapt", "--target", "test-cpu", "--devices", devices, "--space", "macro-cifar10", "--latency", "p50",
        "--lut", lut, "--out", out, "--no-calibrate", "--budget", "10", "--refine", "0", *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_a_rerun_killed_while_measuring_keeps_the_finished_result(
    tmp_path: Path, fast_devices: Path, profiled_lut: tuple[Path, dict]
) -> None:
    """Issue 21 (2): re-running a finished adapt re-measures its winner; a kill then leaves the
    finished model.pte and result.json as they were (consistent), not a new program without a result."""
    lut = shutil.copy(profiled_lut[0], tmp_path / "lut.parquet")
    out = tmp_path / "run"
    args = _adapt_args(tmp_path, fast_devices, lut, out)
    first = chamlab(*args, "--json")
    assert first.returncode == 0, first.stderr
    result, program = (out / "result.json").read_text(), (out / "model.pte").read_bytes()
    assert json.loads(result)["model_path"] == str(out / "model.pte")
    env = private_cache(tmp_path)  # its own runs: the processes to wait for
    proc = spawn_chamlab(*args, env=env)
    assert proc.stderr is not None
    for line in proc.stderr:  # the re-run has exported its program and starts measuring it
        if line.startswith("measuring "):
            break
    else:
        raise AssertionError(f"the re-run ended before measuring: rc {proc.wait()}")
    proc.kill()
    proc.wait(60)
    wait_for(lambda: not processes_with(env["CHAMLAB_CACHE"]), "the runner to end", 30)
    assert (out / "result.json").read_text() == result and (out / "model.pte").read_bytes() == program
    # the next run drops the unfinished stage and finishes a complete result of its own
    again = chamlab(*args, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["arch"] == json.loads(result)["arch"]
    assert not (out / steps.STAGE).exists() and (out / "model.pte").read_bytes() == program


def test_a_second_run_into_a_busy_out_waits_or_exits_2(tmp_path: Path) -> None:
    """Issue 21 (3): one --out, one run at a time. Another run holding the folder (here: its lock held
    by this test) makes adapt --no-wait and search --no-wait exit 2 at once, creating nothing; without
    --no-wait a search waits, says so, and runs once the folder is free. (The frozen local-cpu LUT:
    nothing here is measured.)"""
    lut = shutil.copy(REPO / "bench" / "data" / "macro-cifar10-local-cpu.parquet", tmp_path / "lut.parquet")
    devices = tmp_path / "devices.toml"
    devices.write_text('[devices.local-cpu]\ntransport = "local"\nthreads = 1\n')
    out = tmp_path / "run"
    adapt = ["adapt", "--target", "local-cpu", "--devices", devices, "--space", "macro-cifar10"]
    adapt += ["--latency", "p50", "--lut", lut, "--out", out, "--no-calibrate", "--budget", "10", "--no-wait"]
    search = ["search", "--space", "macro-cifar10", "--latency", "0.3", "--lut", lut, "--threads", "1"]
    search += ["--budget", "4", "--init", "4", "--out", out]
    busy = f"error: --out {out} is busy: held by pid"
    with out_lock(out, what="the test"):
        res = chamlab(*adapt, env={"COLUMNS": "300"})
        assert res.returncode == 2 and res.stderr.startswith(busy), (res.returncode, res.stderr)
        res = chamlab(*search, "--no-wait", env={"COLUMNS": "300"})
        assert res.returncode == 2 and res.stderr.startswith(busy), (res.returncode, res.stderr)
        assert not out.exists()
        proc = spawn_chamlab(*search, "--json", env={"COLUMNS": "300"})
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert f"--out {out} is in use" in line and "waiting for it" in line, line
        assert not out.exists()
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    assert json.loads(stdout)["queries"] == 4 and lock_path(out) == tmp_path / ".run.lock"


def test_a_busy_out_is_exit_2_in_the_library_too(tmp_path: Path) -> None:
    with out_lock(tmp_path / "x"), pytest.raises(DeviceBusyError), out_lock(tmp_path / "x", no_wait=True):
        pass


def test_negative_seed_is_one_line_and_creates_nothing(
    tmp_path: Path, fast_devices: Path, profiled_lut: tuple[Path, dict]
) -> None:
    """Issue 21 (4): exit 2, one line, no --out left behind (was: exit 1, a traceback, an empty folder)."""
    lut = profiled_lut[0]
    out = tmp_path / "run"
    for args in (
        _adapt_args(tmp_path, fast_devices, lut, out, "--seed", "-1"),
        [
            "search",
            "--space",
            "macro-cifar10",
            "--latency",
            "0.3",
            "--lut",
            lut,
            "--out",
            out,
            "--seed",
            "-1",
        ],
    ):
        res = chamlab(*args)
        assert res.returncode == 2, res.stderr
        assert res.stderr.strip().splitlines() == ["error: --seed must be 0 or more, got -1"], res.stderr
        assert not out.exists() and not lock_path(out).exists()


@pytest.mark.slow
def test_a_killed_calibration_recheck_keeps_the_network_measurements(
    tmp_path: Path, fast_devices: Path, profiled_lut: tuple[Path, dict]
) -> None:
    """Issue 21 (1): the whole-network measurements survive a kill during the op recheck, and the
    re-run fits on them (measuring none of them again)."""
    lut = shutil.copy(profiled_lut[0], tmp_path / "lut.parquet")
    env = private_cache(tmp_path)  # its own runs: the processes to wait for
    args = ["calibrate", "--target", "test-cpu", "--space", "macro-cifar10", "--lut", lut, "--n", "3"]
    args += ["--devices", fast_devices]
    proc = spawn_chamlab(*args, env=env)
    kept = lambda: list(tmp_path.glob(".lut.parquet.calibrate-*.json"))  # noqa: E731
    wait_for(kept, "the network measurements to be kept", 600)  # then the op recheck starts
    proc.kill()
    proc.wait(60)
    wait_for(lambda: not processes_with(env["CHAMLAB_CACHE"]), "the runner to end", 30)
    [checkpoint] = kept()
    values = json.loads(checkpoint.read_text())["values"]
    assert not Lut.read(lut).calibrations
    res = chamlab(*args, env=env)
    assert res.returncode == 0, res.stderr
    assert "reusing the 3 network measurements of an interrupted calibration" in " ".join(res.stderr.split())
    [rec] = Lut.read(lut).calibrations
    assert [n["measured_ms"] for n in rec["networks"]] == values and not kept()
    # no --repeats: each network is the median of the noise protocol's three sessions
    assert rec["measure"]["protocol"]["repeats"] == 3


def test_describe_writes_the_manifest_and_the_shipped_programs_own_accuracy(
    tmp_path: Path, fast_devices: Path, isolated_cache: Path
) -> None:
    """Step 8 on a real training oracle: the winner's trained program gets ``model.json`` with the
    oracle's input mapping and the dataset's labels, and its accuracy through ExecuTorch on the
    oracle's validation split agrees with the oracle's PyTorch figure of the same weights."""
    from types import SimpleNamespace

    from chamlab.chamnet.training import Schedule, TrainingOracle
    from chamlab.host.workflows import adapt as steps
    from chamlab.host.workflows.manifest import read_manifest

    space = api.SPACES.get("macro-cifar10")
    arch = space.parse("00000001")
    spec = api.resolve_run(api.load_registry(fast_devices).get("test-cpu"))
    ctx = steps.Context(spec, space, api.AdaptOptions(latency_ms=1.0, out=tmp_path / "run"))
    schedule = Schedule(epochs=2, max_train=512, lr=0.05, optimizer="sgd")
    with TrainingOracle(space, "digits", schedule=schedule) as oracle:
        [acc] = oracle([arch])
        exported = steps.export(ctx, oracle, arch, ctx.stage)
        assert exported.weights == "trained"
        report = SimpleNamespace(
            arch=space.format(arch),
            values={d.name: v for d, v in zip(space.dimensions, arch, strict=True)},
            weights=exported.weights,
            input_shape=[1, *space.input_shape(arch)[1:]],
            oracle_accuracies={"fp32": acc},
            measured_latency_ms=0.5,
            measured_runs_ms=[0.5],
            unstable=False,
            predicted_latency_ms=0.48,
            runtime_version="1.5.1",
            notes=[],
            manifest_path=None,
            program_accuracy=None,
        )
        steps.describe_program(ctx, oracle, report)  # type: ignore[arg-type]
    m = read_manifest(ctx.stage / "model.json")
    assert report.manifest_path == ctx.out / "model.json" and report.notes == []
    assert m.program.weights == "trained" and m.labels == [str(i) for i in range(10)]
    assert m.input.color == "grey" and m.input.mean is not None and m.input.shape == [1, 3, 32, 32]
    assert m.latency is not None and m.latency.threads == spec.threads and m.latency.measured_ms == 0.5
    assert m.runtime.threads == spec.threads and m.arch is not None and m.arch.arch == "00000001"
    assert m.accuracy is not None
    pytorch, program = m.accuracy.of("pytorch", "fp32"), m.accuracy.of("executorch", "fp32")
    assert pytorch == acc and program is not None
    n = report.program_accuracy["n"]
    assert abs(program - pytorch) <= 100.0 / n + 1e-9  # the same weights: within one image
    assert program > 30  # trained: far above chance (10 %)
