"""``chamlab adapt`` end to end: real LUTs, the real BO loop, real ExecuTorch exports, the real runner on
this machine (locally and through a real sshd on loopback), and every bad input refused before work.

Kept small for CI: the session's profiled macro-cifar10 LUT (no new profiling), ``--no-calibrate``
(calibration has its own tests), ``--budget 10`` (the initial design alone). The LUTs below are that
LUT's rows, relabelled (another device name: the same machine) or scaled (a LUT that under-predicts,
as one measured on faster hardware would).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import chamlab
from lut_factory import write
from peers import AdbPeer, Sshd, fast
from powersim import CpuPowerModelRapl

from chamlab.chamnet.search import oracle_for
from chamlab.chamnet.search.constrained import loo_spread_pct
from chamlab.core.errors import InputError
from chamlab.host import api
from chamlab.host.luts.lut import Lut, MeasurementSet, make_row

W_PER_CORE = 10.0  # the simulated device's power above idle per busy core (W)
RESULT_KEYS = {
    "arch", "predicted_accuracy", "predicted_latency_ms", "measured_latency_ms", "constraint_met",
    "oracle_accuracy", "queries", "search_seconds", "model_path", "weights", "runtime_version",
    "input_shape", "arch_json", "margin", "measured_runs_ms", "pareto", "suggestion",
}  # fmt: skip


def relabel(
    src: Path,
    dst: Path,
    *,
    device: str,
    scale: float = 1.0,
    scale_of: Callable[[str], float] | None = None,
    watts_above_idle: float | None = None,
) -> Path:
    """``src``'s rows as ``device``'s, every sample multiplied by ``scale`` (or by ``scale_of(op key)``);
    with ``watts_above_idle``, each op's energy per execution as a power reader would record it at that
    draw above idle."""
    lut = Lut.read(src)
    rows = []
    for mset in lut.combinations():
        for key, r in lut.select(mset).items():
            row = make_row(
                key,
                device=device,
                backend=mset.backend,
                dtype=mset.dtype,
                threads=mset.threads,
                samples_ms=[(scale_of(key) if scale_of else scale) * x for x in r["samples_ms"]],
                run_id="relabelled",
                measured_at=r["measured_at"],
                device_fingerprint=r["device_fingerprint"],
            )
            if watts_above_idle is not None:
                energy = {
                    "energy_mj": watts_above_idle * row["p50_ms"],
                    "avg_power_w": watts_above_idle + 4.0,
                }
                row.update(energy, idle_power_w=4.0, power_reader="rapl")
            rows.append(row)
    return write(dst, rows)


def _run_pte(path: Path, x: torch.Tensor) -> torch.Tensor:
    from executorch.extension.pybindings import _C as rt

    return rt._load_program(str(path)).load_method("forward").call([x])[0]


def _network_output(arch_json: dict[str, Any], state: dict[str, torch.Tensor] | None = None) -> tuple:
    from chamlab.operators import OPS
    from chamlab.operators.network import Network

    net = Network([OPS.from_key(k) for k in arch_json["ops"]]).eval()
    if state is not None:
        net.load_state_dict(state)
    x = torch.randn(arch_json["input_shape"], generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        return x, net(x)


def test_bad_inputs_are_refused_before_anything_is_written(
    tmp_path: Path, fast_devices: Path, profiled_lut: tuple[Path, dict]
) -> None:
    lut = shutil.copy(profiled_lut[0], tmp_path / "lut.parquet")
    out = tmp_path / "run"
    base = ["adapt", "--target", "test-cpu", "--devices", fast_devices, "--out", out, "--no-calibrate"]
    cases = [
        (["--space", "table:x.csv", "--latency", "1"], "no networks to export"),
        (
            ["--space", "macro-cifar10", "--latency", "1", "--energy", "5"],
            "in [devices.test-cpu] of devices.toml",
        ),
        (["--space", "macro-cifar10", "--latency", "1", "--energy", "-1"], "--energy must be a positive"),
        (
            ["--space", "macro-cifar10", "--latency", "1", "--budget", "4"],
            "below the initial design of --init 10",
        ),
        (["--space", "chamnet-mbv2", "--latency", "1"], "no accuracy oracle"),
        (["--space", "chamnet-mbv2", "--latency", "1", "--oracle", "train"], "--oracle train needs --data"),
        (["--space", "macro-cifar10", "--latency", "1", "--data", "digits"], "apply to --oracle train only"),
        (["--space", "macro-cifar10", "--latency", "1", "--oracle", "coin"], "unknown oracle 'coin'"),
        (["--space", "macro-cifar10", "--latency", "1", "--accuracy", "int8"], "holds fp32 accuracy only"),
        (["--space", "macro-cifar10", "--latency", "1", "--threads", "0"], "--threads"),
        (["--space", "macro-cifar10", "--latency", "fast"], "neither a number of ms nor a percentile"),
        (["--space", "macro-cifar10", "--latency", "p150", "--lut", lut], "between 0 and 100"),
        (["--space", "macro-cifar10", "--latency", "0.001", "--lut", lut], "fastest predicted latency"),
    ]
    other = relabel(profiled_lut[0], tmp_path / "pixel.parquet", device="pixel")
    cases.append((["--space", "macro-cifar10", "--latency", "1", "--lut", other], "not of target test-cpu"))
    for args, message in cases:
        res = chamlab(*base, *args)
        assert res.returncode == 2, (args, res.stderr)
        assert message in " ".join(res.stderr.split()), (args, res.stderr)
        assert not out.exists(), args


def test_adapt_reports_a_measured_miss_and_strict_makes_it_exit_1(
    tmp_path: Path, fast_devices: Path, profiled_lut: tuple[Path, dict]
) -> None:
    # a LUT that predicts 30 % of the real latency: the winner is predicted under the limit, measured over.
    # The limit is twice the fastest arch's prediction (the all-identity 00000000), so it holds on a
    # machine of any speed: after the default margin (about 17 %) the winner is predicted at most 1.7x
    # the fastest, and runs at about 1 / 0.3 = 3.3x its prediction, over the limit.
    lut = relabel(profiled_lut[0], tmp_path / "fast.parquet", device="test-cpu", scale=0.3)
    space = api.SPACES.get("macro-cifar10")
    fastest = api.predict(space, space.parse("00000000"), lut=Lut.read(lut), lut_path=lut, target="test-cpu")
    assert fastest.prediction is not None
    limit = round(2 * fastest.prediction.latency_ms, 4)
    out = tmp_path / "run"
    args = ["adapt", "--target", "test-cpu", "--devices", fast_devices, "--space", "macro-cifar10"]
    args += ["--latency", str(limit), "--lut", lut, "--out", out, "--no-calibrate", "--budget", "10"]
    res = chamlab(*args, "--json", "--strict")
    assert res.returncode == 1, res.stderr  # --strict: a measured miss is exit 1 (without it, 0)
    r = json.loads(res.stdout)
    assert set(r) >= RESULT_KEYS
    assert r["constraint_met"] is False and r["measured_latency_ms"] > limit >= r["predicted_latency_ms"]
    assert "constraint missed" in res.stderr and "chamlab calibrate --target test-cpu" in res.stderr
    assert r["margin"]["source"] == "default (no calibration)" and r["search_limit_ms"] < limit
    # the budget is 10; fewer when fewer archs are predicted under the search limit (the LUT holds this
    # machine's measured latencies, so how many depends on its speed): the search then asked each
    assert 1 <= r["queries"] == r["new_queries"] <= 10
    assert r["weights"] == "random" and r["oracle_accuracy"] > 0
    assert r["accuracy_dtype"] == "fp32" and "fp32 accuracy only" in r["accuracy_note"]  # a table oracle
    assert r["oracle_accuracies"] == {"fp32": r["oracle_accuracy"]}
    assert len(r["measured_runs_ms"]) == 3 and r["measured_latency_ms"] == sorted(r["measured_runs_ms"])[1]
    for name in (
        "history.parquet",
        "model.pte",
        "model.etrecord",
        "pareto.png",
        "result.json",
        "search.json",
    ):
        assert (out / name).is_file(), name
    assert json.loads((out / "result.json").read_text())["arch"] == r["arch"]
    # other arguments into the same folder: exit 2, the folder untouched
    before = (out / "result.json").read_text()
    other = chamlab(*[a if a != str(limit) else str(round(1.2 * limit, 4)) for a in args])
    assert other.returncode == 2 and "other arguments" in other.stderr
    every = chamlab(*args, "--ask-every-name")  # the engine option named, not the whole engine
    assert every.returncode == 2 and "engine.merge_equivalent: True there, False now" in every.stderr
    assert (out / "result.json").read_text() == before


def test_trained_weights_of_the_oracle_go_into_model_pte(
    tmp_path: Path, fast_devices: Path, profiled_lut: tuple[Path, dict]
) -> None:
    space = api.SPACES.get("macro-cifar10")
    table = oracle_for(space)

    def trained(arch: tuple[int, ...]) -> dict[str, torch.Tensor]:
        net = space.build(arch)
        return {k: v * 0.9 if v.is_floating_point() else v for k, v in net.state_dict().items()}

    class Trained:
        """The table's accuracies plus 'trained' weights (the seeded ones, rescaled) for any arch: what
        the training oracle's ``state_dict`` hands over for an arch it trained."""

        name = "trained-stand-in"
        accuracy_dtype = "int8"  # as a training oracle with --accuracy int8 answers

        def __call__(self, archs: list[tuple[int, ...]]) -> list[float]:
            return [a - 1.0 for a in table(archs)]

        def accuracies(self, arch: tuple[int, ...]) -> dict[str, float]:
            return {"fp32": table([arch])[0], "int8": table([arch])[0] - 1.0}

        def state_dict(self, arch: tuple[int, ...]) -> dict[str, torch.Tensor] | None:
            return trained(arch)

    spec = api.resolve_run(api.load_registry(fast_devices).get("test-cpu"))
    lut = shutil.copy(profiled_lut[0], tmp_path / "l.parquet")
    # the limit a percentile of this machine's predictions: feasible whatever the machine's speed
    options = api.AdaptOptions(
        latency_percentile=40, budget=10, out=tmp_path / "run", lut_path=lut, calibrate=False, runs=1
    )
    report = api.adapt(spec, space, options, oracle=Trained())
    r = report.to_json()
    assert r["weights"] == "trained" and r["weights_note"] is None
    x, expected = _network_output(r["arch_json"], trained(space.parse(report.arch)))
    _, seeded = _network_output(r["arch_json"])
    got = _run_pte(report.model_path, x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(got, seeded, rtol=1e-3, atol=1e-3)
    assert r["oracle"] == "trained-stand-in" and len(r["measured_runs_ms"]) == 1
    assert r["accuracy_dtype"] == "int8" and r["accuracy_note"] is None
    fp32 = table([space.parse(report.arch)])[0]
    assert r["oracle_accuracies"] == {"fp32": fp32, "int8": fp32 - 1.0}
    # model.json describes model.pte: a stand-in oracle has no dataset, so only the input's shape is known
    from chamlab.host.workflows.manifest import read_manifest, sha256_of

    m = read_manifest(tmp_path / "run" / "model.json")
    assert r["manifest_path"] == str(tmp_path / "run" / "model.json") and r["program_accuracy"] is None
    assert m.program.sha256 == sha256_of(report.model_path) and m.program.weights == "trained"
    assert m.input.shape == r["input_shape"] and m.input.mean is None and m.labels == [None] * 10
    assert m.latency is not None and m.latency.measured_ms == r["measured_latency_ms"]
    assert m.runtime.threads == spec.threads and m.accuracy is None
    hist = pd.read_parquet(tmp_path / "run" / "history.parquet")
    assert (hist["accuracy"] == hist["accuracy_int8"]).all()
    assert (hist["accuracy_fp32"] > hist["accuracy"]).all()

    class Fp32(Trained):
        accuracy_dtype = "fp32"

    # the accuracy dtype is part of the run's identity: another one into the same folder is exit 2
    with pytest.raises(InputError, match="accuracy_dtype: 'int8' there, 'fp32' now"):
        api.adapt(spec, space, options, oracle=Fp32())


def test_adapt_over_ssh_exports_measures_and_cleans_up(
    tmp_path: Path, sshd: Sshd, profiled_lut: tuple[Path, dict], space: Any
) -> None:
    devices = tmp_path / "devices.toml"
    devices.write_text(fast(sshd.devices_toml("box"), "box"))
    lut = relabel(profiled_lut[0], tmp_path / "box.parquet", device="box")  # the same machine, by ssh
    table = Lut.read(lut)
    lut_set = (table, lut, table.choose(lut, device="box"))
    out = tmp_path / "run"
    res = chamlab(
        "adapt", "--target", "box", "--devices", devices, "--space", "macro-cifar10", "--latency", "p40",
        "--lut", lut, "--out", out, "--no-calibrate", "--budget", "10", "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert set(r) >= RESULT_KEYS and r["transport"] == "ssh" and r["target"] == "box"
    limit = r["latency_limit_ms"]  # p40: the 40th percentile of the predicted latencies on box
    model = api.LatencyModel(space, *lut_set)
    all_ms = [model.predict(a).latency_ms for a in space.enumerate()]
    assert limit == pytest.approx(float(np.percentile(all_ms, 40)), rel=1e-9)
    assert r["constraint_met"] == (r["measured_latency_ms"] <= limit)
    assert r["predicted_latency_ms"] <= r["search_limit_ms"] < limit
    assert r["runtime_version"] and r["input_shape"] == [1, 3, 32, 32] and r["search_seconds"] < 30
    assert len(r["measured_runs_ms"]) == 3 and r["arch_json"]["arch"] == r["arch"]
    # model.pte is the winner's network: it computes what the torch network of arch_json computes
    x, expected = _network_output(r["arch_json"])
    torch.testing.assert_close(_run_pte(Path(r["model_path"]), x), expected, rtol=1e-4, atol=1e-4)
    assert not any((sshd.dir / "remote-runs").glob("run-*"))  # nothing left on the target


HEAVY = 100_000  # ops with more weights than this are measured 2x too fast in the LUT of the refine test


def _heavy_blind_setup(src: Path, dst: Path, space: Any) -> tuple[dict[str, Any], MeasurementSet]:
    """The session's LUT with the ops of more than :data:`HEAVY` weights at half their latency (what
    the device runs at full latency inside a network), and a calibration fitted on the 5 spread networks
    with the fewest such weights 'measured' at their true LUT sums (+/- 1 %; stand-in measurements: the
    test needs a calibration that is right where it was fitted and blind where the winner lies)."""
    ops = {op.key: op for a in space.enumerate() for op in space.ops(a)}
    lut = Lut.read(src)
    p50 = lut.p50_by_key(lut.combinations()[0])
    relabel(
        src, dst, device="test-cpu", scale_of=lambda k: 0.5 if k in ops and ops[k].params > HEAVY else 1.0
    )
    table = Lut.read(dst)
    mset = table.choose(dst, device="test-cpu")

    def heavy(a: Any) -> int:
        return sum(op.params for op in space.ops(a) if op.params > HEAVY)

    fewest = min(map(heavy, space.enumerate()))
    light = sorted(
        (a for a in space.enumerate() if heavy(a) == fewest),
        key=lambda a: sum(p50[o.key] for o in space.ops(a)),
    )
    archs = light[:: len(light) // 5][:5]
    measured = [
        sum(p50[o.key] for o in space.ops(a)) * (1.0 + 0.01 * (i % 3 - 1)) for i, a in enumerate(archs)
    ]
    rec = api.calibration.build_record(space, mset, table.p50_by_key(mset), archs, measured, seed=0)
    api.calibration.store(dst, rec)
    return rec, mset


@pytest.mark.slow
def test_a_measured_miss_refines_the_calibration_and_refine_0_keeps_it(
    tmp_path: Path, fast_devices: Path, profiled_lut: tuple[Path, dict], space: Any
) -> None:
    lut = tmp_path / "blind.parquet"
    rec, mset = _heavy_blind_setup(profiled_lut[0], lut, space)
    truth = Lut.read(profiled_lut[0]).p50_by_key(Lut.read(profiled_lut[0]).combinations()[0])
    sums = [sum(truth[o.key] for o in space.ops(a)) for a in space.enumerate()]
    limit = round(float(np.percentile(sums, 50)), 4)  # about the real latency of a median network
    kept = tmp_path / "kept.parquet"
    shutil.copyfile(lut, kept)
    # --refine 0: today's behaviour, the miss is kept (exit 1 with --strict) and the calibration untouched
    out0 = tmp_path / "once"
    res = chamlab(
        "adapt", "--target", "test-cpu", "--devices", fast_devices, "--space", "macro-cifar10",
        "--latency", limit, "--lut", kept, "--out", out0, "--budget", "10", "--refine", "0",
        "--json", "--strict",
    )  # fmt: skip
    assert res.returncode == 1, res.stderr
    r0 = json.loads(res.stdout)
    assert r0["constraint_met"] is False and r0["calibrated"] is True
    assert [x["round"] for x in r0["refine_rounds"]] == [0] and r0["refine_rounds"][0]["action"] == "final"
    assert "refined_with" not in Lut.read(kept).calibrations[0] and not (out0 / "round-1").exists()
    # the default 2 rounds: round 0 misses, its winner joins the calibration, the refined search does better
    spec = api.resolve_run(api.load_registry(fast_devices).get("test-cpu"))
    options = api.AdaptOptions(latency_ms=limit, budget=10, out=tmp_path / "run", lut_path=lut, runs=1)
    report = api.adapt(spec, space, options)
    rounds = report.refine_rounds
    log = [r.to_json() for r in rounds]
    assert rounds[0].arch == r0["arch"] and not rounds[0].met and rounds[0].action == "refined", log
    assert 2 <= len(rounds) <= 3 and rounds[0].margin.spread_pct < rounds[1].margin.spread_pct, log
    # whether the refined winner's error is smaller depends on this machine's measurement of a different
    # arch (a clean-clone CI saw 20.9 % after 14.7 %): not asserted; the wider spread above is the mechanism
    # the result: the last round if it met the limit, else the best one that did, else the last
    final = next(i for i, r in enumerate(rounds) if r.action.endswith("final"))
    met = [i for i, r in enumerate(rounds) if r.met]
    assert final == (
        len(rounds) - 1 if rounds[-1].met or not met else max(met, key=lambda i: rounds[i].predicted_accuracy)
    )
    assert report.constraint_met == bool(met) and report.arch == rounds[final].arch, log
    assert report.model_path.read_bytes() == rounds[final].model_path.read_bytes()
    assert (tmp_path / "run" / "round-0" / "model.pte").is_file()
    # what is stored: the refined calibration, its networks the 5 and the measured winners, fresh
    found = api.calibration.lookup(Lut.read(lut), mset, space.name)
    assert found is not None and found.stale is None
    refined = list(dict.fromkeys(r.arch for r in rounds if r.action.startswith("refined")))
    assert [w["name"] for w in found.record["refined_with"]] == refined
    names = [n["name"] for n in found.record["networks"]]
    assert names[:5] == [n["name"] for n in rec["networks"]] and sorted(names[5:]) == sorted(refined)
    got = json.loads((tmp_path / "run" / "result.json").read_text())
    assert [x["arch"] for x in got["refine_rounds"]] == [r.arch for r in rounds]
    assert got["refine_rounds"][0]["constraint_met"] is False and got["constraint_met"] == bool(met)


@pytest.mark.slow
def test_adapt_over_adb_under_an_energy_limit_measures_the_winners_energy(
    tmp_path: Path, adb_peer: AdbPeer, profiled_lut: tuple[Path, dict], space: Any
) -> None:
    """adapt through the real adb server to the device-side peer, under a latency and an energy limit,
    on a device whose RAPL counter (a prepared sysfs tree) follows a known power model: the energy
    limit binds the search, its margin comes from the LUT's energy calibration, and the winner's energy
    is measured on the target. Also: a LUT without energy rows, and an energy limit under which nothing
    is predicted, are refused naming the fix."""
    root = tmp_path / "powercap"
    power = {"power_reader": '"rapl"', "power_root": f'"{root}"', "power_window_s": "0.25"}
    devices = tmp_path / "devices.toml"
    devices.write_text(fast(adb_peer.devices_toml("peer", **power), "peer"))
    # the session's LUT as the peer's (the same machine), each op's energy that of W_PER_CORE x its time
    lut = relabel(profiled_lut[0], tmp_path / "peer.parquet", device="peer", watts_above_idle=W_PER_CORE)
    table = Lut.read(lut)
    mset = table.choose(lut, device="peer")
    # an energy calibration as `calibrate` stores it (5 networks 10 % over their LUT sums, +/-3 %)
    energies = table.energy_by_key(mset)
    archs = api.calibration.select_networks(
        space, table.p50_by_key(mset), "fp32", 5, np.random.default_rng(0)
    )
    lut_sum = lambda a: sum(energies[op.key] for op in space.ops(a))  # noqa: E731
    measured = [1.1 * lut_sum(a) * (1 + 0.03 * (-1) ** i) for i, a in enumerate(archs)]
    rec = api.calibration.build_record(space, mset, energies, archs, measured, quantity="energy")
    api.calibration.store(lut, rec)
    energy_model = api.EnergyModel(space, Lut.read(lut), lut, mset)
    assert energy_model.calibrated
    all_mj = [energy_model.predict(a).energy_mj for a in space.enumerate()]
    limit_mj = float(np.percentile(all_mj, 30))
    out = tmp_path / "run"
    args = ["adapt", "--target", "peer", "--devices", devices, "--space", "macro-cifar10", "--latency", "p90"]
    args += ["--energy", f"{limit_mj:.6f}", "--out", out, "--no-calibrate", "--budget", "10", "--json"]

    # the same LUT without its energy rows: refused, naming the re-profile with the power reader
    bare = relabel(profiled_lut[0], tmp_path / "bare.parquet", device="peer")
    res = chamlab(*[a if a != out else tmp_path / "bare-run" for a in args], "--lut", bare)
    assert res.returncode == 2 and "holds no energy for peer" in res.stderr, res.stderr
    assert "--force" in res.stderr and not (tmp_path / "bare-run").exists()
    # an energy limit under which nothing is predicted: refused, naming the lowest predicted energy
    res = chamlab(*[a if a != f"{limit_mj:.6f}" else "0.000001" for a in args], "--lut", lut)
    assert (
        res.returncode == 2
        and f"lowest predicted energy of all macro-cifar10 is {min(all_mj):.4f} mJ"
        in (" ".join(res.stderr.split()))
    ), res.stderr
    assert not out.exists()

    with CpuPowerModelRapl(root, 4.0, W_PER_CORE):
        res = chamlab(*args, "--lut", lut)
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert set(r) >= RESULT_KEYS and r["transport"] == "adb" and r["target"] == "peer"
    # the energy margin: 1.645 x the robust spread of the energy calibration's leave-one-out errors
    spread = loo_spread_pct([n["loo_error_pct"] for n in rec["networks"]])
    assert r["energy_margin"]["source"] == "calibration (5 networks)" and r["energy_calibrated"]
    assert r["energy_search_limit_mj"] == pytest.approx(limit_mj * (1 - 1.645 * spread / 100), rel=1e-6)
    winner = space.parse(r["arch"])
    assert r["predicted_energy_mj"] == pytest.approx(energy_model.predict(winner).energy_mj)
    assert r["predicted_energy_mj"] <= r["energy_search_limit_mj"] < r["energy_limit_mj"]
    assert r["predicted_latency_ms"] <= r["search_limit_ms"]
    # the energy limit binds: archs under the latency limit exist that it rules out, and the front
    # holds only archs under it
    assert all(c["energy_mj"] <= r["energy_search_limit_mj"] for c in r["pareto"])
    assert max(all_mj) > r["energy_search_limit_mj"]
    # measured on the target by its power reader: every run, the median reported and judged
    assert len(r["measured_runs_energy_mj"]) == 3 and all(e and e > 0 for e in r["measured_runs_energy_mj"])
    assert r["measured_energy_mj"] == sorted(r["measured_runs_energy_mj"])[1]
    assert r["energy_constraint_met"] == (r["measured_energy_mj"] <= limit_mj + 1e-6)
    assert r["constraint_met"] == (r["latency_constraint_met"] and r["energy_constraint_met"])
    # model.pte is the winner's network
    x, expected = _network_output(r["arch_json"])
    torch.testing.assert_close(_run_pte(Path(r["model_path"]), x), expected, rtol=1e-4, atol=1e-4)


@pytest.fixture
def space() -> Any:
    return api.SPACES.get("macro-cifar10")


@pytest.fixture(autouse=True)
def _no_default_luts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a default luts/ folder would land in the test's own folder
