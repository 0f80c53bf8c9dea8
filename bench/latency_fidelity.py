"""Latency fidelity: raw, overhead-corrected, calibrated and interpolated predictions against the
median of separate whole-network measurements, beside the measurement noise floor.

    python -m bench.latency_fidelity [--archs 50] [--threads 1 2] [--mbv2 20] [--calibrate 10]
                                     [--repeats 3] [--redo-pct 3] [--max-redo 2] [--floor-runs 2]
                                     [--seed 0] [--dtype fp32|int8] [--out PATH]

For each space and thread count:

1. draw the *held-apart* test archs (``--archs`` random macro-cifar10 archs plus all-skip and
   all-largest; ``--mbv2`` random chamnet-mbv2 archs at ``--mbv2-resolution`` plus ChamNet-A..F and
   MobileNetV2-1.0 at 128 px), and profile every op of the test archs and of the calibration
   candidates into a fresh LUT (``--force``);
2. choose ``--calibrate`` networks spread over the space
(:func:`chamlab.host.prediction.calibrate.select_networks`,
   never a test arch) and measure test and calibration networks under the noise protocol
   (:func:`chamlab.host.measurement.networks.measure_repeated`): ``--repeats`` separate sessions (each its own
   runner process) measuring every network in turn, rotated (interleaved), disturbed windows (further
   than ``--redo-pct`` from the network's median, or unstable) re-measured up to ``--max-redo`` times,
   the median kept; the whole protocol runs ``--floor-runs`` times independently;
3. compare, on the test archs only, against the protocol's median (its first run):
   * ``raw``: the plain LUT sum; ``corrected``: minus (n_ops - 1) invocation overheads (the default
     without calibration); ``calibrated``: the calibration fitted on the calibration networks'
     protocol medians with the op recheck (``--recheck`` ops of those networks re-measured after
     them: what ``chamlab calibrate --repeats N --recheck K`` stores); ``calibrated_measured``: the
     same fit on the LUT as measured (``--recheck 0``; only in runs with the recheck);
   * ``interpolated``: calibrated as measured, from a LUT that holds only the ops of the calibration
     networks, the other ops predicted by the op-level model (``interpolated_ops`` is reported);
   * ``noise floor``: the protocol's second independent run against its first (measurement vs
     measurement: no predictor can be judged finer than this); ``single run floor``: one session's
     measurement against the median of the other sessions of the first pass (the protocol before
     this one);
   and the spread: the median over networks of the CV of single sessions (first pass), of the kept
   sessions, and between independent protocol runs, plus how many windows were re-measured and the
   median within-run CV of the LUT's ops.
   Each: share within +/-5 % and +/-10 %, mean absolute % error, Spearman and Kendall rank
   correlation. Also the op-level model's leave-one-out error over the LUT's ops.
4. for chamnet-mbv2, the same summaries once more on the *random* test archs only (the references
   ChamNet-A..F and MobileNetV2 left out): the interpolated-ops target is defined on 20 random
   chamnet-mbv2 archs whose ops were not measured, so calibrated, interpolated and the noise floor
   are also reported on that subset (``summaries_random``), beside the full set.

``--dtype int8`` does the same with int8 ops and networks (quantized by the default recipe; the
corrected prediction also subtracts the boundary quantize/dequantize probes) and writes
``latency_fidelity_int8.json``.

``--resummarize`` recomputes every piece's summaries from the pairs stored in the results file
(no measurement: for a summary added after a run, e.g. ``summaries_random``). ``--compare-with
RESULTS...`` also compares each piece's protocol medians with the same networks' in earlier results
files (``between_sessions``: the floor across sessions hours apart, and this run's calibrated
predictions judged by the earlier medians).

Writes ``bench/results/latency_fidelity.json`` (or ``--out``), with the load average at the start
and end of each run (the machine is shared). Resumable: the file is rewritten after each (space,
threads) piece, and a rerun with the same arguments keeps the finished pieces (``--fresh`` redoes
them; ``--only chamnet-mbv2:2`` runs only the named pieces).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import RESULTS, write_result
from chamlab.chamnet.predictors.latency import LutLatencyPredictor
from chamlab.chamnet.spaces import SPACES
from chamlab.chamnet.spaces.base import Arch, SearchSpace
from chamlab.host import api
from chamlab.host.luts.lut import Lut
from chamlab.operators import INVOCATION_PROBE

#: the predictions compared (``calibrated_measured`` only in runs with the op recheck)
PREDICTIONS = ("raw", "corrected", "calibrated", "calibrated_measured", "interpolated")
VARIANTS = (*PREDICTIONS, "noise_floor", "single_run_floor")
#: the variants also summarised on the random test archs alone (``summaries_random``)
RANDOM_SUBSET_VARIANTS = ("calibrated", "calibrated_measured", "interpolated", "noise_floor")


def predictions_in(pairs: list[dict[str, Any]]) -> list[str]:
    """The :data:`PREDICTIONS` the pairs hold (older runs lack the newer variants)."""
    return [v for v in PREDICTIONS if pairs and all(f"{v}_ms" in p for p in pairs)]


def _ranks(a: list[float]) -> np.ndarray:
    return np.argsort(np.argsort(a)).astype(float)


def spearman(a: list[float], b: list[float]) -> float:
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def kendall(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b."""
    x, y = np.asarray(a), np.asarray(b)
    dx = np.sign(x[:, None] - x[None, :])
    dy = np.sign(y[:, None] - y[None, :])
    iu = np.triu_indices(len(x), 1)
    s = float(np.sum(dx[iu] * dy[iu]))
    tx, ty = float(np.sum(dx[iu] != 0)), float(np.sum(dy[iu] != 0))
    return s / np.sqrt(tx * ty) if tx and ty else float("nan")


def summarize(pred: list[float], truth: list[float]) -> dict[str, float]:
    errs = [100.0 * (p - t) / t for p, t in zip(pred, truth, strict=True)]
    return {
        "n": len(errs),
        "within_10pct": sum(abs(e) <= 10 for e in errs) / len(errs),
        "within_5pct": sum(abs(e) <= 5 for e in errs) / len(errs),
        "mape_pct": statistics.fmean(abs(e) for e in errs),
        "mean_error_pct": statistics.fmean(errs),
        "max_abs_error_pct": max(abs(e) for e in errs),
        "spearman": spearman(pred, truth),
        "kendall": kendall(pred, truth),
    }


def summaries_of(pairs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Every variant's summary over ``pairs`` (the floors where the protocol measured them)."""
    truth = [p["measured_median_ms"] for p in pairs]
    out = {v: summarize([p[f"{v}_ms"] for p in pairs], truth) for v in predictions_in(pairs)}
    if all(len(p["protocol_runs_ms"]) > 1 for p in pairs):
        out["noise_floor"] = summarize([p["protocol_runs_ms"][1] for p in pairs], truth)
    if all(len(p["measured_ms"]) > 1 for p in pairs):
        out["single_run_floor"] = summarize(
            [p["single_run_floor_ms"] for p in pairs], [p["others_median_ms"] for p in pairs]
        )
    return out


def paired_with_floor(pairs: list[dict[str, Any]]) -> dict[str, dict[str, float]] | None:
    """Each prediction variant against the noise floor network by network (None without a second
    protocol run): how many networks only the variant puts within +/-10 % of the truth, how many only
    the floor (the second protocol run) does, and the exact two-sided McNemar p on those discordant
    networks. With a few dozen networks one network is several points of "within +/-10 %", so a
    variant a few points under the floor may be no worse than it; this says how sure the gap is."""
    from scipy.stats import binomtest

    if not pairs or not all(len(p["protocol_runs_ms"]) > 1 for p in pairs):
        return None

    def within(pred: float, truth: float) -> bool:
        return abs(100.0 * (pred - truth) / truth) <= 10  # as summarize counts it

    floor = [within(p["protocol_runs_ms"][1], p["measured_median_ms"]) for p in pairs]
    out = {}
    for v in predictions_in(pairs):
        mine = [within(p[f"{v}_ms"], p["measured_median_ms"]) for p in pairs]
        only_v = sum(m and not f for m, f in zip(mine, floor, strict=True))
        only_f = sum(f and not m for m, f in zip(mine, floor, strict=True))
        n = only_v + only_f
        out[v] = {
            "n": len(pairs),
            "variant_only": only_v,
            "floor_only": only_f,
            "mcnemar_p": float(binomtest(min(only_v, only_f), n, 0.5).pvalue) if n else 1.0,
        }
    return out


def _at_resolution(space: SearchSpace, arch: Arch, resolution: int) -> Arch:
    i = [d.name for d in space.dimensions].index("resolution")
    return (*arch[:i], resolution, *arch[i + 1 :])


def tested_references(space: SearchSpace) -> list[Arch]:
    """The reference archs the benchmark tests (chamnet-mbv2: ChamNet-A..F at their own resolution,
    MobileNetV2-1.0 at 128 px)."""
    return [
        a if name != "mobilenetv2-1.0" else _at_resolution(space, a, 128)
        for name, a in space.references.items()
    ]


def reference_names(space: SearchSpace) -> set[str]:
    """The formatted references of ``space`` as :func:`held_apart_archs` adds them (empty for
    macro-cifar10, whose references are not added as such)."""
    return set() if space.name == "macro-cifar10" else {space.format(a) for a in tested_references(space)}


def random_summaries(space: SearchSpace, pairs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """:data:`RANDOM_SUBSET_VARIANTS` over the random test archs only (None for macro-cifar10, whose
    extremes are part of its target set, and for a space without references)."""
    refs = reference_names(space)
    rand = [p for p in pairs if p["arch"] not in refs]
    if not refs or not rand:
        return None
    every = summaries_of(rand)
    return {v: every[v] for v in RANDOM_SUBSET_VARIANTS if v in every}


def paired_sets(space: SearchSpace, pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`paired_with_floor` on every held-apart network (``all``) and, where the space has
    reference networks, on the random archs alone (``random``)."""
    refs = reference_names(space)
    out = {"all": paired_with_floor(pairs)}
    if refs:
        out["random"] = paired_with_floor([p for p in pairs if p["arch"] not in refs])
    return out


def held_apart_archs(
    space: SearchSpace, rng: np.random.Generator, n: int, resolution: int | None
) -> list[Arch]:
    if space.name == "macro-cifar10":
        extremes = [space.parse("0" * 8), space.parse("2" * 8)]  # all-skip and all-largest
        return list(dict.fromkeys([*extremes, *space.sample(rng, n)]))
    archs = [_at_resolution(space, a, resolution or 128) for a in space.sample(rng, n)]
    return list(dict.fromkeys([*tested_references(space), *archs]))


def run_space(
    space: SearchSpace, tests: list[Arch], threads: int, device: Any, args: argparse.Namespace, lut_path: Path
) -> dict[str, Any]:
    load_start = os.getloadavg()
    spec = api.resolve_run(device, threads=threads, dtype=args.dtype)
    rng = np.random.default_rng(args.seed + 1)
    candidates = [a for a in space.sample(rng, 4 * args.calibrate) if a not in set(tests)]
    mset = spec.measurement_set
    needed = api.calibration.needed_ops
    planned = {INVOCATION_PROBE.key} | {
        op.key for a in [*tests, *candidates] for op in needed(space.ops(a), mset.dtype)
    }
    reused = False
    if args.reuse_luts and lut_path.exists():
        reused = planned <= set(Lut.read(lut_path).p50_by_key(mset))
    t0 = time.perf_counter()
    if not reused:
        report = api.profile(spec, space, [*tests, *candidates], out=lut_path, force=True)
        if report.failed:
            raise SystemExit(f"profiling failed: {report.failed[:3]}")
    profile_s = time.perf_counter() - t0
    lut = Lut.read(lut_path)
    p50 = lut.p50_by_key(mset)
    cal_archs = api.calibration.select_networks(
        space,
        p50,
        mset.dtype,
        args.calibrate,
        np.random.default_rng(args.seed + 2),
        exclude=tests,
        candidates=candidates,
    )
    t1 = time.perf_counter()
    policy = api.RepeatPolicy(repeats=args.repeats, redo_pct=args.redo_pct, max_redo=args.max_redo)
    runs = [api.measure_repeated(spec, space, [*cal_archs, *tests], policy) for _ in range(args.floor_runs)]
    measure_s = time.perf_counter() - t1
    main = runs[0]
    n_cal = len(cal_archs)
    cal_values = [m.p50_ms for m in main[:n_cal]]
    t2 = time.perf_counter()
    op_noise = None
    if args.recheck:
        rng_recheck = np.random.default_rng(args.seed + 3)
        op_noise = api.calibration.recheck_ops(spec, space, lut, mset, cal_archs, args.recheck, rng_recheck)
    recheck_s = time.perf_counter() - t2
    record = api.calibration.build_record(
        space, mset, p50, cal_archs, cal_values, seed=args.seed, op_noise=op_noise
    )
    # the same fit on the LUT as measured: the comparison the recheck is judged by, and what the
    # interpolated variant uses (its thin LUT has another op model than the weights were set for)
    plain = api.calibration.build_record(space, mset, p50, cal_archs, cal_values, seed=args.seed)
    calibrated = Lut(lut.table, lut.provenance, [record])
    calibrated_measured = Lut(lut.table, lut.provenance, [plain])
    keep = {INVOCATION_PROBE.key} | {op.key for a in cal_archs for op in needed(space.ops(a), mset.dtype)}
    thin = Lut(lut.table.filter([k in keep for k in lut.table["op_key"].to_pylist()]), [], [plain])
    raw_pred = LutLatencyPredictor(p50, correct_overhead=False)
    corr_pred = LutLatencyPredictor(p50, quant_edges=mset.dtype == "int8")
    pairs = []
    for i, arch in enumerate(tests):
        m = main[n_cal + i]
        ms = list(m.first_p50s_ms)
        ops = space.ops(arch)
        cal = api.predict_latency(space, arch, calibrated, lut_path, mset)
        measured_cal = api.predict_latency(space, arch, calibrated_measured, lut_path, mset)
        interp = api.predict_latency(space, arch, thin, lut_path, mset, interpolate=True)
        pairs.append(
            {
                "arch": space.format(arch),
                "n_ops": len(ops),
                "weights_mib": api.calibration.DTYPE_BYTES[mset.dtype] * sum(op.params for op in ops) / 2**20,
                "measured_ms": ms,
                "kept_ms": list(m.p50s_ms),
                "replaced_ms": list(m.replaced_ms),
                "measured_median_ms": m.p50_ms,
                "protocol_runs_ms": [r[n_cal + i].p50_ms for r in runs],
                "single_run_floor_ms": ms[0],
                "others_median_ms": statistics.median(ms[1:]) if len(ms) > 1 else ms[0],
                "raw_ms": raw_pred.predict(ops).latency_ms,
                "corrected_ms": corr_pred.predict(ops).latency_ms,
                "calibrated_ms": cal.latency_ms,
                "calibrated": cal.calibrated,
                **({"calibrated_measured_ms": measured_cal.latency_ms} if op_noise else {}),
                "interpolated_ms": interp.latency_ms,
                "interpolated_ops": interp.interpolated_ops,
                "distinct_ops": len(set(ops)),
            }
        )
    summaries = summaries_of(pairs)
    every = [m for r in runs for m in r]
    between = [
        100 * statistics.stdev(v) / statistics.fmean(v)
        for v in ([r[j].p50_ms for r in runs] for j in range(len(main)))
        if len(v) > 1
    ]
    op_cv = [c for c in lut.table["robust_cv"].to_pylist() if c is not None]
    protocol = {
        "policy": policy.to_json(),
        "floor_runs": args.floor_runs,
        "networks": len(main),
        "single_session_cv_median_pct": statistics.median(m.first_cv_pct for m in every),
        "kept_cv_median_pct": statistics.median(m.cv_pct for m in every),
        "between_protocol_runs_cv_median_pct": statistics.median(between) if between else None,
        "replaced_windows": sum(len(m.replaced_ms) for m in every),
        "sessions_windows": sum(len(m.p50s_ms) for m in every),
        "op_within_run_cv_median_pct": 100 * statistics.median(op_cv) if op_cv else None,
    }
    op_loo = [abs(e) for _, e in api.op_model(lut, mset).leave_one_out()]
    return {
        "space": space.name,
        "dtype": mset.dtype,
        "threads": threads,
        "ops_profiled": len(planned),
        "lut_reused": reused,  # --reuse-luts: the LUT an earlier attempt of this piece profiled
        "calibration": {k: record[k] for k in ("coefficients", "loo", "raw_sum")}
        | {"networks": [n["name"] for n in record["networks"]]},
        "recheck": None
        if op_noise is None
        else {k: op_noise[k] for k in ("n_ops", "shift_pct", "median_abs_pct", "log_var", "weights")}
        | {"seconds": recheck_s, "calibration_measured_loo": plain["loo"]},
        "interpolation": {
            "lut_ops": len(keep),
            "mean_interpolated_ops": statistics.fmean(p["interpolated_ops"] for p in pairs),
            "mean_distinct_ops": statistics.fmean(p["distinct_ops"] for p in pairs),
            "op_model_loo_median_abs_pct": statistics.median(op_loo) if op_loo else None,
            "op_model_loo_n": len(op_loo),
        },
        "summaries": summaries,
        "summaries_random": random_summaries(space, pairs),
        "paired_with_floor": paired_sets(space, pairs),
        "protocol": protocol,
        "profile_s": profile_s,
        "networks_measure_s": measure_s,
        "runner_affinity": getattr(device, "affinity", "") or None,  # CPUs the runner was pinned to
        "load_avg_start": load_start,
        "load_avg_end": os.getloadavg(),
        "pairs": pairs,
    }


def between_sessions(
    run: dict[str, Any], earlier: list[Path], own: Path | None = None
) -> list[dict[str, Any]]:
    """This piece's protocol medians against the same networks' in each ``earlier`` results file
    (same space, thread count and dtype): the floor across sessions hours apart, which the in-run
    floor (two protocol runs minutes apart) cannot show. ``calibrated_then``: this run's calibrated
    predictions judged by the earlier run's medians (calibrate now, measure another day);
    ``medians_after_shift``: the medians once divided by their median ratio (``shift_pct``, a
    device-wide change that a calibration in either session absorbs), what is left per network."""
    out = []
    for path in earlier:
        if own is not None and path.resolve() == own.resolve():
            continue
        data = json.loads(path.read_text())
        key = (run["space"], run["threads"], run.get("dtype", "fp32"))
        for other in data.get("runs", []):
            if (other["space"], other["threads"], other.get("dtype", "fp32")) != key:
                continue
            then = {p["arch"]: p["measured_median_ms"] for p in other["pairs"]}
            shared = [p for p in run["pairs"] if p["arch"] in then]
            if len(shared) < 2:
                continue
            truth = [then[p["arch"]] for p in shared]
            now = [p["measured_median_ms"] for p in shared]
            shift = statistics.median(a / b for a, b in zip(now, truth, strict=True))
            out.append(
                {
                    "source": path.name,
                    "when": data["environment"]["when"],
                    "medians": summarize(now, truth),
                    "shift_pct": 100.0 * (shift - 1.0),
                    "medians_after_shift": summarize([a / shift for a in now], truth),
                    "calibrated_then": summarize([p["calibrated_ms"] for p in shared], truth),
                }
            )
    return out


def resummarize(path: Path, compare_with: list[Path] | None = None) -> None:
    """Recompute the summaries of every piece in ``path`` from its stored pairs, in place (atomic);
    with ``compare_with``, also :func:`between_sessions` against those results files."""
    from chamlab.core.files import atomic_write_text

    if not path.exists():
        raise SystemExit(f"{path}: no results file to resummarize (run the benchmark first)")
    data = json.loads(path.read_text())
    for run in data.get("runs", []):
        run["summaries"] = summaries_of(run["pairs"])
        run["summaries_random"] = random_summaries(SPACES.get(run["space"]), run["pairs"])
        run["paired_with_floor"] = paired_sets(SPACES.get(run["space"]), run["pairs"])
        if compare_with:
            run["between_sessions"] = between_sessions(run, compare_with, path)
        for v, s in (run["summaries_random"] or {}).items():
            print(
                f"{run['space']} threads={run['threads']} {v:>12} (random archs, n={s['n']}): "
                f"within +/-10% {s['within_10pct']:.0%}, MAPE {s['mape_pct']:.1f}%",
                flush=True,
            )
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")
    print(f"rewrote the summaries of {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archs", type=int, default=50)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--mbv2", type=int, default=20, help="also N random chamnet-mbv2 archs (0: none)")
    ap.add_argument("--mbv2-resolution", type=int, default=128)
    ap.add_argument("--calibrate", type=int, default=10, help="calibration networks (never test archs)")
    ap.add_argument("--repeats", type=int, default=3, help="separate sessions measuring every network")
    ap.add_argument("--redo-pct", type=float, default=3.0, help="re-measure a session this %% off the median")
    ap.add_argument("--max-redo", type=int, default=2, help="re-measurement passes at most")
    ap.add_argument("--floor-runs", type=int, default=2, help="independent runs of the whole protocol")
    ap.add_argument(
        "--recheck",
        type=int,
        default=32,
        help="ops the calibration re-measures (calibrate --recheck; 0: off)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", default="local-cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "int8"])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="SPACE:THREADS",
        help="run only these pieces (e.g. chamnet-mbv2:2); the others are kept from the results file",
    )
    ap.add_argument("--fresh", action="store_true", help="ignore finished pieces in the results file")
    ap.add_argument(
        "--resummarize",
        action="store_true",
        help="recompute every piece's summaries from the pairs in the results file (no measurement)",
    )
    ap.add_argument(
        "--compare-with",
        type=Path,
        nargs="+",
        default=None,
        metavar="RESULTS",
        help="earlier results files: also compare each piece's network medians with theirs (the floor "
        "between sessions)",
    )
    ap.add_argument(
        "--reuse-luts",
        action="store_true",
        help="keep a piece's LUT from an earlier attempt when it holds every op the piece needs",
    )
    args = ap.parse_args()

    name = "latency_fidelity" if args.dtype == "fp32" else f"latency_fidelity_{args.dtype}"
    out = args.out or RESULTS / f"{name}.json"
    if args.resummarize:
        resummarize(out, args.compare_with)
        return
    device = api.load_registry().get(args.target)
    # Resumable: a finished (space, threads) piece is kept when the file was written with the same
    # arguments (the ones that change what a piece measures); pieces are written as they finish.
    same = ("archs", "mbv2", "mbv2_resolution", "calibrate", "repeats", "redo_pct", "max_redo",
            "floor_runs", "seed", "target", "dtype", "recheck")  # fmt: skip
    done: dict[tuple[str, int], dict[str, Any]] = {}
    if out.exists() and not args.fresh:
        old = json.loads(out.read_text())
        if all(old.get("args", {}).get(k) == vars(args)[k] for k in same):
            done = {(r["space"], r["threads"]): r for r in old.get("runs", [])}
            if done:
                print(f"resuming {out}: keeping {sorted(done)}", flush=True)
    rng = np.random.default_rng(args.seed)
    jobs = [(SPACES.get("macro-cifar10"), args.archs, None)]
    if args.mbv2:
        jobs.append((SPACES.get("chamnet-mbv2"), args.mbv2, args.mbv2_resolution))
    wanted = None if args.only is None else {(o.split(":")[0], int(o.split(":")[1])) for o in args.only}
    path = out
    for space, n, res in jobs:
        tests = held_apart_archs(space, rng, n, res)  # drawn for every space, so each piece's archs are fixed
        for threads in args.threads:
            key = (space.name, threads)
            if key in done or (wanted is not None and key not in wanted):
                continue
            suffix = "" if args.dtype == "fp32" else f"-{args.dtype}"
            lut_path = RESULTS / f"fidelity-lut-{space.name}-{threads}t{suffix}.parquet"
            result = run_space(space, tests, threads, device, args, lut_path)
            if args.compare_with:
                result["between_sessions"] = between_sessions(result, args.compare_with, out)
            for v, s in result["summaries"].items():
                print(
                    f"{space.name} threads={threads} {v:>12}: within +/-10% {s['within_10pct']:.0%}, "
                    f"+/-5% {s['within_5pct']:.0%}, MAPE {s['mape_pct']:.1f}%, "
                    f"mean {s['mean_error_pct']:+.1f}%, "
                    f"spearman {s['spearman']:.3f}, kendall {s['kendall']:.3f} (n={s['n']})",
                    flush=True,
                )
            print(f"{space.name} threads={threads} protocol: {result['protocol']}", flush=True)
            done[key] = result
            spaces = [s.name for s, _, _ in jobs]
            runs = [done[k] for k in sorted(done, key=lambda k: (spaces.index(k[0]), k[1]))]
            path = write_result(name, {"args": vars(args) | {"out": str(args.out)}, "runs": runs}, out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
