"""``adapt``: the most accurate network that meets a latency limit on a device, exported and measured there.

:func:`adapt` runs, in order (each step reuses what exists, so a re-run is cheap):

1. **Checks** (nothing written on failure): a network space with an accuracy oracle (the space's own:
   :func:`~chamlab.chamnet.search.oracle_for`, or the caller's, e.g. a training oracle), an energy
   limit only for a device with a power reader, a budget of at least the initial design, a LUT that
   is this device's, an output folder holding no other run.
2. **Predictors**: the LUT (``profile`` of the ops the LUT lacks: all ops of a space of at most
   :data:`~chamlab.host.measurement.profiling.EXHAUSTIVE_LIMIT` archs, else the reference archs' ops
   first and,
   adaptively, the ops of each winner the op-level model had to interpolate, step 5); the latency
   calibration (``calibrate`` when the LUT holds no fresh one for this space and measurement set;
   with an energy limit also when it holds no fresh energy calibration, which ``calibrate`` fits from
   the same networks). With an energy limit, the energy predictor
   (:class:`~chamlab.host.prediction.predict.EnergyModel`: the LUT's energy rows; none is an error naming
   the devices.toml fix).
3. **Margin**: each limit is searched as ``limit * (1 - k * spread)``
   (:func:`~chamlab.chamnet.search.constrained.safety_margin`: that quantity's calibration's
   leave-one-out spread). A limit under which no arch is predicted is an error naming the lowest
   prediction.
4. **BO loop** (``chamlab search``'s engine, :func:`~chamlab.chamnet.search.search`) within the
   query budget, under the margin's limit: ``DIR/history.parquet`` (resumable),
   ``DIR/accuracy_gp.json`` (the GP's hyperparameters; ``model.json`` in runs made before, renamed on
   resume) and the loop's own best queried arch in ``DIR/search.json``.
5. **Constrained search** (:func:`~chamlab.chamnet.search.constrained.constrained_search`): the GP's
   predicted accuracy (queried archs: their oracle accuracy) maximised under the predicted latency
   (and energy);
   exact enumeration for small spaces, the GA for large ones. For a large space, a winner with
   interpolated ops has them profiled and the search repeated (at most :data:`ADAPTIVE_ROUNDS`).
6. **Export** of the winner to ``DIR/model.pte`` and ``DIR/model.etrecord``: with the oracle's
   trained weights when it has them (``oracle.state_dict(arch)``, ``weights: trained``), else the
   deterministic seeded weights the LUT was measured with (``weights: random``: a latency skeleton,
   not an accurate model; the result says so). int8 with trained weights: calibrated on the oracle's
   ``calibration(arch)`` batches when it has them (the training oracle: the training batches its int8
   accuracy was measured with, ``int8_calibration: training``), else the recipe's seeded ones.
7. **Measurement** of ``DIR/model.pte`` on the target, :data:`MEASURE_RUNS` separate runs
   (:func:`~chamlab.host.measurement.networks.measure_program_runs`), median of their p50s (and, with a power
   reader, of their energies per inference); then ``DIR/result.json`` and ``DIR/pareto.png``. A
   measured latency (or energy) over its limit is reported (``constraint_met: false``), not hidden.
8. **Verify and refine** (:mod:`~chamlab.host.workflows.refine`, ``--refine N``, default 2): a measured winner
   that misses the latency limit, or whose measured error is larger than the margin searched with, joins the
   stored calibration's networks (refitted, stored in the LUT); the margin is recomputed from the
   refit's leave-one-out spread and steps 5 to 7 run again (``DIR/round-I/model.pte``), at most N
   times. The result is the last round's winner if it met the limit, else the measured winner of the
   highest predicted accuracy that met it, else the last; its program is ``DIR/model.pte`` and
   ``result.json``'s ``refine_rounds`` lists every round.

9. **Final training** (``options.final_schedule``, a training oracle only): the chosen round's arch is
   trained by the final schedule (:func:`final_train`: warm-started from the oracle's weights,
   resumable per epoch), exported again with those weights as ``DIR/model.pte`` and measured again
   (:func:`ship_final`): the result's latency is that of the shipped program. Steps 6 to 8 carried the
   oracle's weights: latency does not depend on them, so only the chosen arch is trained.
10. **Describe** (:func:`describe_program`): ``DIR/model.json`` and the program's own accuracy through
    ExecuTorch (after a final training, also the program of the other dtype with the same weights).

Each step is a function of its own (:func:`check_inputs`, :func:`ensure_lut`,
:func:`ensure_calibration`, :func:`plan_limits`, :func:`run_bo`, :func:`constrained`, :func:`export`,
:func:`verify`, :func:`refine`) taking a :class:`Context` and the earlier steps' results and returning a
dataclass; its docstring says what a re-run reuses. :func:`assemble` builds the report from them. The
program, its rounds, ``pareto.png`` and ``result.json`` are assembled in ``DIR/.next`` and moved into
``DIR`` complete (:func:`publish`), so a finished result is replaced only by a complete new one. One run
uses ``DIR`` at a time (:func:`~chamlab.host.workflows.search.out_lock`: a second waits, or with
``no_wait`` exits 2, as for a busy device).

Several thread counts (``AdaptOptions.threads``, ``--threads 1,2,4``): steps 1 to 5 run per thread
count and the (arch, threads) pair is chosen jointly (:mod:`~chamlab.host.workflows.adapt_threads`);
steps 6 to 8 run at the winner's thread count, and the report adds ``per_threads``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from chamlab.chamnet.search.constrained import (
    MARGIN_K,
    ConstrainedResult,
    GAConfig,
    Margin,
    constrained_search,
    safety_margin,
)
from chamlab.chamnet.search.engine import EngineConfig
from chamlab.chamnet.search.problem import (
    Oracle,
    Problem,
    TableOracle,
    accuracies_of,
    accuracy_dtype,
    oracle_for,
)
from chamlab.chamnet.spaces.base import Arch, SearchSpace
from chamlab.core.errors import ChamlabError, InputError, NoEnergyError
from chamlab.core.files import atomic_path, check_writable, ensure_dir
from chamlab.core.store import tool_version
from chamlab.host.devices.transports.base import DeviceConfig, Transport
from chamlab.host.luts.lut import Lut, MeasurementSet
from chamlab.host.measurement.pipeline import NullProgress, Progress, RunSpec
from chamlab.host.prediction.predict import (
    CachedPrediction,
    EnergyModel,
    LatencyModel,
    QuantityModel,
    default_lut_path,
    energy_refusal,
    no_energy_hint,
)
from chamlab.host.workflows.oracles import train_label
from chamlab.host.workflows.refine import REFINE_ROUNDS, RefineRound
from chamlab.host.workflows.search import check_budget, check_out, check_seed
from chamlab.host.workflows.threads import check_thread_options
from chamlab.operators.export import ExportItem

#: measurement runs of the exported winner (the result is their median p50)
MEASURE_RUNS = 3
#: networks measured by the calibration adapt builds when the LUT has none
CALIBRATION_NETWORKS = 10
#: for spaces too large to profile exhaustively: rounds of "profile the winner's interpolated ops"
ADAPTIVE_ROUNDS = 3
RESULT = "result.json"
SEARCH_RESULT = "search.json"
PARETO = "pareto.png"
MODEL = "model.pte"
ETRECORD = "model.etrecord"
RANDOM_WEIGHTS_NOTE = (
    "random weights: the accuracy oracle holds no trained weights for this arch, so model.pte carries "
    "the seeded weights the LUT was measured with. It is a deployable skeleton for latency, not an "
    "accurate model: train `arch_json` (or use a training oracle) for that"
)


@dataclasses.dataclass(frozen=True)
class AdaptOptions:
    """What ``chamlab adapt`` takes besides the device and space (defaults: docs/cli.md)."""

    latency_ms: float | None = None  # the limit in ms; or:
    latency_percentile: float | None = None  # the limit at this percentile of the space's predictions
    energy_mj: float | None = None  # an energy limit (mJ per inference above idle): needs a power reader
    budget: int = 50
    seed: int = 0
    out: Path = Path("adapt")
    lut_path: Path | None = None
    calibrate: bool = True  # build the calibration when the LUT has no fresh one
    margin_k: float = MARGIN_K
    runs: int = MEASURE_RUNS
    refine: int = REFINE_ROUNDS  # verify-and-refine rounds after a measured miss (host/refining.py)
    engine: EngineConfig = dataclasses.field(default_factory=EngineConfig)
    ga: GAConfig = dataclasses.field(default_factory=GAConfig)
    #: several runtime thread counts: (arch, threads) searched jointly (host/workflows/adapt_threads.py);
    #: None: the RunSpec's thread count alone
    threads: tuple[int, ...] | None = None
    #: train the winner with this final schedule before its export (a training oracle only): a name
    #: in :data:`~chamlab.chamnet.training.final.FINAL_SCHEDULES` or overrides; None or "none": no
    final_schedule: str | None = None
    #: where a trained program's accuracy is measured through ExecuTorch: "host" (this machine's
    #: runtime) or "target" (the device's own, through its python shim: host/workflows/evaluate.py)
    evaluate_on: Literal["host", "target"] = "host"


@dataclasses.dataclass
class AdaptReport:
    """What :func:`adapt` did; :meth:`to_json` is ``result.json``."""

    space: str
    arch: str
    values: dict[str, Any]
    arch_json: dict[str, Any]
    spec: RunSpec
    margin: Margin
    predicted_accuracy: float
    accuracy_known: bool
    predicted_latency_ms: float
    calibrated: bool
    measured_latency_ms: float
    measured_runs_ms: list[float]
    unstable: bool
    oracle_accuracy: float | None  # of ``accuracy_dtype``
    oracle: str
    queries: int
    new_queries: int
    search: ConstrainedResult
    search_seconds: float
    seconds: dict[str, float]
    model_path: Path
    etrecord_path: Path
    weights: str
    runtime_version: str | None
    input_shape: list[int]
    lut_path: Path
    profiled_ops: int
    calibration: dict[str, Any] | None
    out: Path
    notes: list[str]
    pareto: list[dict[str, Any]]
    refine_rounds: list[RefineRound] = dataclasses.field(default_factory=list)
    accuracy_dtype: str = "fp32"  # which accuracy the search optimised
    accuracy_note: str | None = None  # e.g. a table oracle: fp32 only
    oracle_accuracies: dict[str, float] | None = None  # the winner's accuracy per dtype, when known
    int8_calibration: str | None = None  # int8 export: "training" (the oracle's batches) or "random"
    #: the energy limit's margin (None: no energy limit)
    energy_margin: Margin | None = None
    #: the winner's predicted energy (mJ above idle; None: the LUT holds no energy for it)
    predicted_energy_mj: float | None = None
    energy_calibrated: bool = False
    energy_calibration: dict[str, Any] | None = None
    #: the median of the runs' measured energies (None: the device has no power reader, or it failed)
    measured_energy_mj: float | None = None
    measured_runs_energy_mj: list[float | None] = dataclasses.field(default_factory=list)
    #: ``DIR/model.json``, the program's manifest (docs/manifest.md), once written
    manifest_path: Path | None = None
    #: the shipped program's own top-1 accuracy through ExecuTorch on the oracle's validation split
    #: (a trained program only): ``{"runtime", "runtime_version", "dtype", "top1_pct", "n", "split"}``
    program_accuracy: dict[str, Any] | None = None
    #: several thread counts searched (``AdaptOptions.threads``): each one's best candidate, and the
    #: thread-pool size the runtime reported when the winner was measured; None with one thread count
    per_threads: list[dict[str, Any]] | None = None
    measured_threads: int | None = None
    #: the top-1 accuracy (percent) of the program of each dtype with the shipped weights (final
    #: training only): the shipped program's and its sibling of the other dtype (not shipped)
    program_accuracies: dict[str, float] | None = None
    #: the winner's final training (:func:`final_train`), None without one
    final_training: dict[str, Any] | None = None

    @property
    def limit_ms(self) -> float:
        return self.margin.limit

    @property
    def latency_met(self) -> bool:
        return self.measured_latency_ms <= self.margin.limit

    @property
    def energy_met(self) -> bool | None:
        """The measured energy meets the energy limit (None: no energy limit, or no energy measured)."""
        if self.energy_margin is None or self.measured_energy_mj is None:
            return None
        return self.measured_energy_mj <= self.energy_margin.limit

    @property
    def constraint_met(self) -> bool:
        """Every measured limit is met (an energy limit whose energy was not measured cannot fail)."""
        return self.latency_met and self.energy_met is not False

    @property
    def error_pct(self) -> float:
        return 100.0 * (self.predicted_latency_ms - self.measured_latency_ms) / self.measured_latency_ms

    @property
    def suggestion(self) -> str | None:
        if self.constraint_met:
            return None
        s = self.spec
        cmd = f"chamlab calibrate --target {s.target} --space {self.space} --threads {s.threads}"
        missed = []
        if not self.latency_met:
            missed.append(
                f"measured {self.measured_latency_ms:.4f} ms is over the {self.limit_ms:g} ms limit "
                f"(predicted {self.predicted_latency_ms:.4f} ms)"
            )
        if self.energy_met is False and self.energy_margin is not None:
            predicted = "none" if self.predicted_energy_mj is None else f"{self.predicted_energy_mj:.4f} mJ"
            missed.append(
                f"measured {self.measured_energy_mj:.4f} mJ is over the {self.energy_margin.limit:g} mJ "
                f"energy limit (predicted {predicted})"
            )
        return (
            f"{'; '.join(missed)}: re-calibrate the predictor with `{cmd} --lut {self.lut_path}` and run "
            "adapt again"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "space": self.space,
            "arch": self.arch,
            "values": self.values,
            "arch_json": self.arch_json,
            "target": self.spec.target,
            "transport": self.spec.device.transport,
            "backend": self.spec.backend.value,
            "dtype": self.spec.dtype.value,
            "threads": self.spec.threads,
            "batch": self.spec.batch,
            "latency_limit_ms": self.margin.limit,
            "search_limit_ms": self.margin.effective,
            "margin": self.margin.to_json(),
            "accuracy_dtype": self.accuracy_dtype,
            "accuracy_note": self.accuracy_note,
            "predicted_accuracy": self.predicted_accuracy,
            "accuracy_known": self.accuracy_known,
            "predicted_latency_ms": self.predicted_latency_ms,
            "calibrated": self.calibrated,
            "measured_latency_ms": self.measured_latency_ms,
            "measured_runs_ms": self.measured_runs_ms,
            "error_pct": self.error_pct,
            "unstable": self.unstable,
            "constraint_met": self.constraint_met,
            "latency_constraint_met": self.latency_met,
            "energy_limit_mj": self.energy_margin.limit if self.energy_margin else None,
            "energy_search_limit_mj": self.energy_margin.effective if self.energy_margin else None,
            "energy_margin": self.energy_margin.to_json() if self.energy_margin else None,
            "predicted_energy_mj": self.predicted_energy_mj,
            "energy_calibrated": self.energy_calibrated,
            "energy_calibration": self.energy_calibration,
            "measured_energy_mj": self.measured_energy_mj,
            "measured_runs_energy_mj": self.measured_runs_energy_mj,
            "energy_constraint_met": self.energy_met,
            "suggestion": self.suggestion,
            "oracle": self.oracle,
            "oracle_accuracy": self.oracle_accuracy,
            "oracle_accuracies": self.oracle_accuracies,
            "queries": self.queries,
            "new_queries": self.new_queries,
            "search_seconds": round(self.search_seconds, 4),
            "search_method": self.search.method,
            "evaluated": self.search.evaluated,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "model_path": str(self.model_path),
            "etrecord_path": str(self.etrecord_path),
            "weights": self.weights,
            "weights_note": RANDOM_WEIGHTS_NOTE if self.weights == "random" else None,
            "final_schedule": (self.final_training or {}).get("name"),
            "final_training": self.final_training,
            "program_accuracies": self.program_accuracies,
            "int8_calibration": self.int8_calibration,
            "manifest_path": str(self.manifest_path) if self.manifest_path else None,
            "program_accuracy": self.program_accuracy,
            "runtime_version": self.runtime_version,
            "input_shape": self.input_shape,
            "lut": str(self.lut_path),
            "profiled_ops": self.profiled_ops,
            "calibration": self.calibration,
            "pareto": self.pareto,
            "notes": self.notes,
            "refine_rounds": [r.to_json() for r in self.refine_rounds],
            "out": str(self.out),
            "tool_version": tool_version(),
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            **self.threads_json(),
        }

    def threads_json(self) -> dict[str, Any]:
        """Several thread counts searched: ``threads_searched``, ``per_threads``, ``measured_threads``."""
        if self.per_threads is None:
            return {}
        return {
            "threads_searched": [p["threads"] for p in self.per_threads],
            "per_threads": self.per_threads,
            "measured_threads": self.measured_threads,
        }


#: ``arch -> predicted latency`` (and energy), each arch predicted once: one class beside the models
CachedLatency = CachedPrediction
CachedEnergy = CachedPrediction
#: where a run's new program and result are assembled before they replace the finished ones
STAGE = ".next"


def _check_out(out: Path, ident: dict[str, Any], space: Any) -> None:
    """``out`` can hold this run: not a file, and any search history in it has the same arguments
    and rows a resume can use (:func:`~chamlab.chamnet.search.run.check_history`: numbered queries,
    finite accuracies and costs, no arch twice)."""
    from chamlab.chamnet.search.run import HISTORY, check_history

    check_out(out, "adapt --out")  # the folder, or where it will be created, must be writable
    if (out / HISTORY).exists():
        check_history(out / HISTORY, space, ident, "a run")


def _check_lut_device(lut: Lut, path: Path, spec: RunSpec) -> None:
    """A LUT that holds measurements, none of them of this device, is another device's LUT."""
    devices = sorted({c.device for c in lut.combinations()})
    if devices and spec.target not in devices:
        raise InputError(
            f"LUT {path} holds measurements of {', '.join(devices)}, not of target {spec.target}: its "
            "latencies (and calibration) describe another device",
            hint=f"pass that device's --target, or --lut luts/{spec.target}.parquet (adapt profiles into it)",
        )


def _mset(lut: Lut, path: Path, spec: RunSpec) -> MeasurementSet:
    """The rows of ``spec`` (every field given: the choice ``predict`` makes for it)."""
    return spec.choose_in(lut, path)


def _calibration_errors(
    model: QuantityModel,
) -> tuple[list[float] | None, dict[str, Any] | None]:
    if not model.calibrated or model.found is None:
        return None, None
    rec = model.found.record
    errors = [
        float(n["loo_error_pct"]) for n in rec.get("networks", []) if n.get("loo_error_pct") is not None
    ]
    return (errors or None), model.found.summary()


# -- the steps: each takes the run's Context and what earlier steps returned ---------------------------


@dataclasses.dataclass(frozen=True)
class Context:
    """What every step of :func:`adapt` takes: the device, the space, the options and the plumbing."""

    spec: RunSpec
    space: SearchSpace
    opts: AdaptOptions
    progress: Progress = dataclasses.field(default_factory=NullProgress)
    transport: Transport | None = None
    no_wait: bool = False
    command: str = ""

    @property
    def out(self) -> Path:
        return Path(self.opts.out)

    @property
    def stage(self) -> Path:
        """Where this run's program and result are assembled (:func:`publish` moves them into ``out``)."""
        return self.out / STAGE

    @property
    def large(self) -> bool:
        """Too large to profile exhaustively: the op-level model fills ops, adaptively profiled."""
        from chamlab.host.measurement.profiling import EXHAUSTIVE_LIMIT

        return self.space.size > EXHAUSTIVE_LIMIT


@dataclasses.dataclass(frozen=True)
class Checked:
    """Step 0 (:func:`check_inputs`): the run's identity (stored with its history) and its LUT."""

    ident: dict[str, Any]
    lut_path: Path
    oracle: Oracle


def check_inputs(ctx: Context, oracle: Oracle | None) -> Checked:
    """Everything that can be wrong with the input, refused before any work (exit 2, nothing written).

    Resume: nothing is written, so a re-run checks again; an ``--out`` holding a run of other
    arguments is refused (its history would not match)."""
    spec, space, opts = ctx.spec, ctx.space, ctx.opts
    if not isinstance(space, SearchSpace):
        raise InputError(
            f"adapt needs a network space (one whose archs build into networks); {space.name} is not",
            hint="search a table of your own with `chamlab search --space table:PATH` instead",
        )
    check_seed(opts.seed)
    if opts.threads is not None:
        check_thread_options(opts.threads, opts.energy_mj)
    energy_mj = opts.energy_mj
    if energy_mj is not None:
        if not math.isfinite(energy_mj) or energy_mj <= 0:
            raise InputError(f"--energy must be a positive number of mJ, got {energy_mj}")
        if not spec.device.power_reader:
            raise NoEnergyError(
                f"--energy {energy_mj:g}: device {spec.target} has no power reader, so there is no energy to "
                "predict or measure there",
                hint=no_energy_hint(spec.target),
            )
    if (opts.latency_ms is None) == (opts.latency_percentile is None):
        raise InputError("give the latency limit either in ms or as a percentile (e.g. --latency p50)")
    if opts.latency_ms is not None and (not math.isfinite(opts.latency_ms) or opts.latency_ms <= 0):
        raise InputError(f"--latency must be a positive number of ms, got {opts.latency_ms}")
    pct = opts.latency_percentile
    if pct is not None and not (math.isfinite(pct) and 0 < pct < 100):
        raise InputError(f"--latency p{pct:g}: the percentile must be between 0 and 100 (exclusive)")
    check_budget(opts.budget, opts.engine, init_flag=True)
    if opts.runs < 1:
        raise InputError(f"the measurement needs at least 1 run, got {opts.runs}")
    if opts.refine < 0:
        raise InputError(f"--refine must be 0 or more rounds, got {opts.refine}")
    oracle = oracle if oracle is not None else oracle_for(space)
    _check_final(opts, oracle)
    ident: dict[str, Any] = {
        "command": "adapt",
        "space": space.name,
        "target": spec.target,
        "backend": spec.backend.value,
        "dtype": spec.dtype.value,
        "threads": list(opts.threads) if opts.threads and len(opts.threads) > 1 else spec.threads,
        "batch": spec.batch,
        "limits": {
            "latency_ms": opts.latency_ms if pct is None else f"p{pct:g}",
            **({"energy_mj": energy_mj} if energy_mj is not None else {}),
        },
        "margin_k": opts.margin_k,
        "seed": opts.seed,
        # a training oracle's dataset digest and schedule: resuming with other data is exit 2
        "oracle": describe() if callable(describe := getattr(oracle, "describe", None)) else oracle.name,
        "accuracy_dtype": accuracy_dtype(oracle),
        "engine": opts.engine.to_json(),
    }
    _check_out(ctx.out, ident, space)
    lut_path = Path(opts.lut_path) if opts.lut_path is not None else default_lut_path(spec.target)
    if opts.lut_path is None:
        ensure_dir(lut_path.parent, what="default LUT directory")
    check_writable(lut_path, what="LUT")
    if lut_path.exists():
        _check_lut_device(Lut.read(lut_path), lut_path, spec)
    return Checked(ident, lut_path, oracle)


def _check_final(opts: AdaptOptions, oracle: Oracle) -> None:
    """A final schedule is a known name (or overrides) and needs a training oracle."""
    from chamlab.chamnet.training import TrainingOracle
    from chamlab.chamnet.training.final import check_final_schedule

    if check_final_schedule(opts.final_schedule) is not None and not isinstance(oracle, TrainingOracle):
        raise InputError(
            f"--final-schedule {opts.final_schedule}: final training needs the training oracle's data",
            hint="add --oracle train --data PATH, or leave --final-schedule out",
        )


@dataclasses.dataclass(frozen=True)
class LutStep:
    """Step 1 (:func:`ensure_lut`): the LUT holding the ops the search needs, and its rows of ``spec``."""

    lut_path: Path
    lut: Lut
    mset: MeasurementSet
    profiled: int  # ops measured by this run


def ensure_lut(ctx: Context, lut_path: Path) -> LutStep:
    """``profile`` of the ops the LUT lacks: every op of a small space, else the reference archs' ops
    (the rest come adaptively, :func:`constrained`).

    Resume: ops the LUT holds are never measured again; a failed op is retried by the re-run."""
    from chamlab.host.measurement.profiling import default_archs, profile

    spec, space = ctx.spec, ctx.space
    archs, which = default_archs(space)
    ctx.progress.note(f"latency predictor: the LUT {lut_path} must hold the ops of {which}")
    rep = profile(
        spec, space, archs, out=lut_path, transport=ctx.transport, progress=ctx.progress,
        no_wait=ctx.no_wait, command=ctx.command,
    )  # fmt: skip
    if rep.failed:
        raise ChamlabError(
            f"profiling {len(rep.failed)} op(s) on {spec.target} failed, e.g. "
            f"{rep.failed[0][0]}: {rep.failed[0][1]}",
            hint="re-run the same command: measured ops are kept and only the failed ones are retried",
        )
    lut = Lut.read(lut_path)
    return LutStep(lut_path, lut, _mset(lut, lut_path, spec), len(rep.measured))


@dataclasses.dataclass
class Predictors:
    """Step 2 (:func:`ensure_calibration`): the latency (and energy) predictors the search uses."""

    lut: Lut
    latency: CachedPrediction
    energy: CachedPrediction | None
    notes: list[str]


def ensure_calibration(ctx: Context, lut: LutStep) -> Predictors:
    """The latency predictor calibrated for this space and measurement set (and, with an energy
    limit, the energy predictor): ``calibrate`` (:data:`CALIBRATION_NETWORKS` networks) when the LUT
    holds no fresh calibration and ``opts.calibrate``; else LUT sums, said in a note.

    Resume: a fresh calibration stored in the LUT is used as it is (nothing measured); one that was
    interrupted reuses the networks it had measured (:func:`~chamlab.host.prediction.calibrate.calibrate`)."""
    from chamlab.host.prediction import calibrate as calib

    spec, space, opts = ctx.spec, ctx.space, ctx.opts
    lut_path, mset, table = lut.lut_path, lut.mset, lut.lut
    energy_mj = opts.energy_mj
    notes: list[str] = []
    if energy_mj is not None and (why_not := energy_refusal(table, lut_path, mset)) is not None:
        raise NoEnergyError(
            f"--energy {energy_mj:g}: {why_not}",
            hint=f"profile with the power reader: `chamlab profile --target {spec.target} --space "
            f"{space.name} --out {lut_path} --force` (devices.toml: power_reader in [devices.{spec.target}])",
        )

    def models(table: Lut) -> tuple[LatencyModel, EnergyModel | None]:
        latency = LatencyModel(space, table, lut_path, mset, interpolate=ctx.large)
        if energy_mj is None:
            return latency, None
        return latency, EnergyModel(space, table, lut_path, mset, interpolate=ctx.large)

    model, energy_model = models(table)
    needs_energy = energy_model is not None and not energy_model.calibrated
    if (not model.calibrated or needs_energy) and opts.calibrate:
        lacking = model if not model.calibrated else energy_model
        assert lacking is not None
        why = lacking.found.stale if lacking.found is not None else "none stored for this space and set"
        what = "calibration" if lacking is model else "energy calibration"
        ctx.progress.note(f"{what}: {why}; measuring {CALIBRATION_NETWORKS} networks to fit one")
        n = CALIBRATION_NETWORKS
        p50 = table.p50_by_key(mset)
        try:
            calib.select_networks(space, p50, mset.dtype, n, np.random.default_rng(opts.seed))
        except InputError:
            from chamlab.host.measurement.profiling import default_archs

            archs, _ = default_archs(space)
            n = max(3, sum(all(op.key in p50 for op in space.ops(a)) for a in archs))
        calib.calibrate(
            spec, space, lut_path=lut_path, n=n, seed=opts.seed, transport=ctx.transport,
            progress=ctx.progress, no_wait=ctx.no_wait,
        )  # fmt: skip
        table = Lut.read(lut_path)
        model, energy_model = models(table)
    elif not model.calibrated:
        notes.append(
            f"no calibration ({model.found.stale if model.found else 'none stored'}): "
            "predictions are LUT sums"
        )
    if energy_model is not None and not energy_model.calibrated:
        found = energy_model.found
        notes.append(
            f"no energy calibration ({found.stale if found else 'none stored'}): energy predictions are "
            "LUT sums"
        )
    energy = CachedPrediction(energy_model) if energy_model is not None else None
    return Predictors(table, CachedPrediction(model), energy, notes)


@dataclasses.dataclass(frozen=True)
class Limits:
    """Step 2b (:func:`plan_limits`): each limit and the margin it is searched under."""

    margin: Margin
    energy_margin: Margin | None
    calibration: dict[str, Any] | None  # the latency calibration's summary (None: LUT sums)
    energy_calibration: dict[str, Any] | None
    notes: list[str]

    def effective(self) -> dict[str, float]:
        """The search limit of each cost."""
        out = {"latency_ms": self.margin.effective}
        if self.energy_margin is not None:
            out["energy_mj"] = self.energy_margin.effective
        return out


def plan_limits(ctx: Context, predictors: Predictors) -> Limits:
    """Each limit (a percentile resolved on the predictions) less ``k`` x its calibration's spread;
    an :class:`InputError` naming the lowest prediction when nothing fits.

    Resume: nothing stored; the same LUT gives the same limits."""
    opts, space = ctx.opts, ctx.space
    notes: list[str] = []
    latency = predictors.latency
    loo, calibration_summary = _calibration_errors(latency.model)
    limit_ms = opts.latency_ms
    pct = opts.latency_percentile
    if pct is not None:
        pool = latency_pool(space, opts.seed)
        limit_ms = float(np.percentile([latency(a) for a in pool], pct))
        ctx.progress.note(
            f"--latency p{pct:g}: {limit_ms:.4f} ms, the {pct:g}th percentile of the predicted latency of "
            f"{'all' if len(pool) == space.size else len(pool)} {space.name} archs on {ctx.spec.target}"
        )
    assert limit_ms is not None
    margin = safety_margin(limit_ms, loo, k=opts.margin_k)
    if loo is None:
        notes.append(
            f"safety margin {margin.to_json()['margin_pct']:.1f} % from the default spread of "
            f"{margin.spread_pct:g} % (no calibration); `chamlab calibrate` measures the real one"
        )
    energy_margin: Margin | None = None
    energy_summary: dict[str, Any] | None = None
    if predictors.energy is not None and opts.energy_mj is not None:
        energy_loo, energy_summary = _calibration_errors(predictors.energy.model)
        energy_margin = safety_margin(
            opts.energy_mj, energy_loo, k=opts.margin_k, quantity="energy", unit="mJ"
        )
        if energy_loo is None:
            notes.append(
                f"energy safety margin {energy_margin.to_json()['margin_pct']:.1f} % from the default spread "
                f"of {energy_margin.spread_pct:g} % (no energy calibration)"
            )
    limits = Limits(margin, energy_margin, calibration_summary, energy_summary, notes)
    _check_feasible(space, _costs(predictors), _margins(limits), opts.seed)
    ctx.progress.note(
        f"searching under {margin.effective:.4f} ms: the {margin.limit:g} ms limit less {margin.k:g} x the "
        f"predictor's spread of {margin.spread_pct:.2f} % ({margin.source})"
    )
    if energy_margin is not None:
        ctx.progress.note(
            f"and under {energy_margin.effective:.4f} mJ: the {energy_margin.limit:g} mJ limit less "
            f"{energy_margin.k:g} x the energy predictor's spread of {energy_margin.spread_pct:.2f} % "
            f"({energy_margin.source})"
        )
    return limits


def _costs(predictors: Predictors) -> dict[str, CachedPrediction]:
    costs = {"latency_ms": predictors.latency}
    if predictors.energy is not None:
        costs["energy_mj"] = predictors.energy
    return costs


def _margins(limits: Limits) -> dict[str, Margin]:
    return {
        "latency_ms": limits.margin,
        **({"energy_mj": limits.energy_margin} if limits.energy_margin else {}),
    }


@dataclasses.dataclass(frozen=True)
class BoStep:
    """Step 3 (:func:`run_bo`): the BO loop's final state (its GP predicts accuracy) and its queries."""

    state: Any  # chamnet.search.engine.EngineState
    queries: int
    new_queries: int

    @property
    def known(self) -> dict[Arch, float]:
        """The oracle accuracy of every queried arch."""
        return {q.arch: q.accuracy for q in self.state.queries}


def run_bo(
    ctx: Context,
    oracle: Oracle,
    predictors: Predictors,
    limits: Limits,
    ident: dict[str, Any],
    problem: Problem | None = None,
) -> BoStep:
    """``chamlab search``'s engine within ``opts.budget`` oracle queries under the search limits:
    ``DIR/history.parquet``, ``DIR/accuracy_gp.json`` and the loop's own best queried arch in
    ``DIR/search.json`` (never ``result.json``: that is the finished adapt's). ``problem``: another
    problem than ``predictors`` under ``limits`` (several thread counts: their joint cost).

    Resume: the queries in ``DIR/history.parquet`` are never asked again; with the budget spent, the
    GP is rebuilt from ``DIR/accuracy_gp.json`` (refitted on the history when that file is missing
    or from another history), with no query."""
    from chamlab.chamnet.search.engine import BayesOptEngine, EngineState
    from chamlab.chamnet.search.run import HISTORY, HISTORY_KIND, read_gp, read_history
    from chamlab.chamnet.search.run import search as run_search
    from chamlab.core.store import read_table

    opts, out = ctx.opts, ctx.out
    problem = problem or Problem(ctx.space, oracle, dict(_costs(predictors)), limits.effective())
    ensure_dir(out, what="adapt --out")
    had = read_table(out / HISTORY, HISTORY_KIND).table.num_rows if (out / HISTORY).exists() else 0
    ctx.progress.start("query", opts.budget)
    done = [had]
    captured: list[EngineState] = []

    def keep(state: EngineState) -> None:
        # the engine refits this same object after its last batch: it holds the final GP
        if not captured:
            captured.append(state)
        for _ in range(len(state.queries) - done[0]):
            ctx.progress.advance("query", f"{len(state.queries)} queried")
        done[0] = len(state.queries)

    hooked = _train_bar(ctx, oracle)
    try:
        bo = run_search(
            problem, budget=opts.budget, seed=opts.seed, config=opts.engine, out=out, args=ident,
            progress=keep, plot=False, result_name=SEARCH_RESULT,
        )  # fmt: skip
    finally:
        if hooked:
            oracle.on_result = None  # type: ignore[attr-defined]
    if not captured:  # a resumed run with its budget already spent: the stored GP of those queries
        previous = read_history(out / HISTORY, problem, ident)
        captured.append(
            BayesOptEngine(opts.engine).run(
                problem, len(previous), np.random.default_rng(opts.seed), previous=previous, gp=read_gp(out)
            )
        )
    return BoStep(captured[-1], bo.queries, bo.new_queries)


def _train_bar(ctx: Context, oracle: Oracle) -> bool:
    """A training oracle (one whose ``on_result`` is unset) reports each arch it trains, or finds in
    its cache, on a ``train`` bar while the loop runs: the engine asks the initial design as one
    batch, trained side by side, so the query bar moves only once all of it is answered. True when
    hooked (the caller unhooks it)."""
    if getattr(oracle, "on_result", False) is not None:
        return False

    def advance(arch: Arch, record: Any) -> None:
        ctx.progress.advance("train", train_label(record))

    ctx.progress.start("train", ctx.opts.budget)
    oracle.on_result = advance  # type: ignore[attr-defined]
    return True


@dataclasses.dataclass
class Winner:
    """Step 4 (:func:`constrained`): the constrained search's result and the predictors it ended with
    (a large space's may hold ops it profiled)."""

    result: ConstrainedResult
    seconds: float
    predictors: Predictors
    profiled: int  # ops profiled for it (large spaces)

    @property
    def best(self) -> Any:
        return self.result.best


def constrained(ctx: Context, bo: BoStep, predictors: Predictors, limits: Limits, lut: LutStep) -> Winner:
    """The GP's predicted accuracy (a queried arch: its oracle accuracy) maximised under the predicted
    latency (and energy): exact enumeration for small spaces, the GA for large ones. For a large space,
    a winner with interpolated ops has them profiled and the search repeated (:data:`ADAPTIVE_ROUNDS`).
    No arch found is a :class:`ChamlabError`.

    Resume: nothing stored; seeded, and a resumed :func:`run_bo` rebuilds the stored GP rather than
    refitting it, so the same history and LUT give the same winner (ops profiled for it stay in the
    LUT)."""
    from chamlab.host.measurement.profiling import profile

    space, opts = ctx.space, ctx.opts
    state, known, effective = bo.state, bo.known, limits.effective()
    profiled = 0

    def search_once(p: Predictors) -> tuple[ConstrainedResult, float]:
        costs = _costs(p)

        def accuracy(archs: Sequence[Arch]) -> np.ndarray:
            pred = state.predict(list(archs), np.array([p.latency(a) for a in archs]))
            if pred is None:
                raise ChamlabError("the accuracy predictor was never fitted (no oracle query succeeded)")
            return pred

        t0 = time.perf_counter()
        found = constrained_search(
            space, accuracy, dict(costs), effective, np.random.default_rng(opts.seed), config=opts.ga,
            seeds=seeds, known=known,
        )  # fmt: skip
        return found, time.perf_counter() - t0

    costs = _costs(predictors)  # queried archs under the limits seed the search (as first predicted)
    seeds = [q.arch for q in state.queries if all(costs[n](q.arch) <= lim for n, lim in effective.items())]
    result, seconds = search_once(predictors)
    for _ in range(ADAPTIVE_ROUNDS if ctx.large else 0):
        costs = _costs(predictors)
        if result.best is None or not any(c.interpolated.get(result.best.arch) for c in costs.values()):
            break
        near = [c.arch for c in result.front if c.costs["latency_ms"] <= limits.margin.effective][-3:]
        ctx.progress.note(
            f"the winner {space.format(result.best.arch)} has "
            f"{max(c.interpolated.get(result.best.arch, 0) for c in costs.values())} "
            "interpolated op(s): profiling them and searching again"
        )
        rep = profile(
            ctx.spec, space, list(dict.fromkeys([result.best.arch, *near])), out=lut.lut_path,
            transport=ctx.transport, progress=ctx.progress, no_wait=ctx.no_wait, command=ctx.command,
        )  # fmt: skip
        profiled += len(rep.measured)
        table = Lut.read(lut.lut_path)
        predictors = Predictors(
            table,
            CachedPrediction(LatencyModel(space, table, lut.lut_path, lut.mset, interpolate=True)),
            None
            if predictors.energy is None
            else CachedPrediction(EnergyModel(space, table, lut.lut_path, lut.mset, interpolate=True)),
            predictors.notes,
        )
        result, seconds = search_once(predictors)
    return Winner(result, seconds, predictors, profiled)


def _no_winner(result: ConstrainedResult, limits: Limits) -> ChamlabError:
    under = f"{limits.margin.effective:.4f} ms" + (
        f" and {limits.energy_margin.effective:.4f} mJ" if limits.energy_margin is not None else ""
    )
    return ChamlabError(
        f"the {result.method} found no arch predicted under {under} (fastest it saw: "
        f"{result.fastest.costs['latency_ms']:.4f} ms)",
        hint="raise --latency, or re-run with another --seed",
    )


@dataclasses.dataclass(frozen=True)
class FinalTrained:
    """Step 4b (:func:`final_train`): the winner trained by the final schedule, and its int8
    calibration batches (the final schedule's training split)."""

    arch: Arch
    result: Any  # chamlab.chamnet.training.final.FinalResult
    calibration: list[np.ndarray] | None  # int8 only
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {**self.result.to_json(), "seconds": round(self.seconds, 3)}


def final_train(ctx: Context, oracle: Oracle, arch: Arch) -> FinalTrained:
    """``arch`` trained by ``opts.final_schedule`` (:mod:`chamlab.chamnet.training.final`) on the
    training oracle's data, warm-started from the oracle's weights of it when they exist, on the
    training device, with progress per epoch; int8: also its int8 accuracy and calibration batches.

    Resume: a checkpoint per epoch under the training cache (``final/<key>/``): a killed run resumes
    after its last whole epoch, a finished one is reused (nothing trained)."""
    from chamlab.chamnet.training import TrainingOracle
    from chamlab.chamnet.training.final import resolve_final_schedule, train_final
    from chamlab.chamnet.training.schedule import calibration_inputs

    assert isinstance(oracle, TrainingOracle) and ctx.opts.final_schedule is not None
    t0 = time.perf_counter()
    name = ctx.opts.final_schedule
    schedule = resolve_final_schedule(name, oracle.schedule)
    rec = oracle.record(arch)
    init = {k: v.numpy() for k, v in (oracle.state_dict(arch) or {}).items()} if rec is not None else None
    label = f"final training of {ctx.space.format(arch)}"
    start = "from the space's init" if rec is None else f"warm-started from the oracle's weights ({rec.key})"
    ctx.progress.note(f"{label}: {name} schedule, {schedule.epochs} epoch(s), {start}")
    phase = "train"
    ctx.progress.start(phase, total=schedule.epochs)

    def on_epoch(epoch: int, epochs: int, loss: float) -> None:
        ctx.progress.advance(phase, f"epoch {epoch + 1}/{epochs}, loss {loss:.4f}")

    def on_resume(done: int) -> None:
        ctx.progress.note(f"{label}: resuming after epoch {done} from its checkpoint")
        for _ in range(done):
            ctx.progress.advance(phase, f"epoch {done}/{schedule.epochs} (checkpoint)")

    result = train_final(
        ctx.space, arch, oracle.dataset, schedule, name=name, root=oracle.cache.root / "final",
        init_state=init, warm_start=rec.key if rec is not None else None,
        quant_recipe=oracle.quant_recipe, on_epoch=on_epoch, on_resume=on_resume,
    )  # fmt: skip
    if result.cached:
        ctx.progress.note(f"{label}: found finished in {result.folder}")
    calibration = None
    if ctx.spec.dtype.value == "int8":
        batches = calibration_inputs(ctx.space, arch, oracle.dataset, schedule, oracle.quant_recipe)
        calibration = [b.numpy() for b in batches]
    return FinalTrained(arch, result, calibration, time.perf_counter() - t0)


class FinalWeights:
    """What :func:`export` takes for the final weights: the oracle's interface (``state_dict``,
    ``calibration``) answering with one :class:`FinalTrained`."""

    def __init__(self, trained: FinalTrained) -> None:
        self.trained = trained

    def _check(self, arch: Arch) -> None:
        if arch != self.trained.arch:
            raise ChamlabError(f"the final weights are of {self.trained.arch}, not of {arch}")

    def state_dict(self, arch: Arch) -> dict[str, Any]:
        import torch

        self._check(arch)
        return {k: torch.from_numpy(v.copy()) for k, v in self.trained.result.state.items()}

    def calibration(self, arch: Arch) -> list[np.ndarray] | None:
        self._check(arch)
        return self.trained.calibration


def ship_final(ctx: Context, oracle: Oracle, refined: Refined, seconds: dict[str, float]) -> FinalTrained:
    """Steps 8-9 with a final schedule: the chosen round's arch trained by :func:`final_train`, then
    exported again with those weights (the stage's ``model.pte``) and measured again, so the latency
    reported is that of the very program shipped. The search, export and refine rounds before it
    carried the oracle's (or seeded) weights: latency does not depend on them, and only the chosen
    arch is trained. ``refined``'s chosen round is updated in place.

    Resume: as :func:`final_train` (a finished training is reused); the export and measurement are
    done again."""
    chosen = refined.chosen
    arch = chosen.winner.best.arch
    t0 = time.perf_counter()
    trained = final_train(ctx, oracle, arch)
    seconds["final_train"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    exported = export(ctx, FinalWeights(trained), arch, ctx.stage)  # type: ignore[arg-type]
    seconds["final_export"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    measured = verify(ctx, exported, arch)
    seconds["final_measure"] = time.perf_counter() - t0
    refined.kept[refined.final] = dataclasses.replace(chosen, exported=exported, measured=measured)
    r = refined.rounds[refined.final]  # the round's own measurement stays: it is that round's history
    action = f"{r.action}; trained by the final schedule, exported and measured again as {MODEL}"
    refined.rounds[refined.final] = dataclasses.replace(r, action=action.lstrip("; "))
    return trained


@dataclasses.dataclass(frozen=True)
class Exported:
    """Step 5 (:func:`export`): the winner's program and what weights it carries."""

    model_path: Path
    etrecord_path: Path
    weights: str  # "trained" (the oracle's) or "random" (seeded)
    int8_calibration: str | None  # int8: "training" (the oracle's batches) or "random"


def export(ctx: Context, oracle: Oracle, arch: Arch, folder: Path) -> Exported:
    """``folder/model.pte`` and ``folder/model.etrecord`` of ``arch``: with the oracle's trained
    weights when it has them (int8: calibrated on its training batches when it has them), else the
    seeded weights the LUT was measured with.

    Resume: seeded weights come from the export cache (no new export); trained ones are exported again.
    ``folder`` is the run's stage (:func:`publish` moves it into ``DIR``): a finished ``DIR/model.pte``
    is never overwritten here."""
    spec = ctx.spec
    folder.mkdir(parents=True, exist_ok=True)
    model_path, etrecord_path = folder / MODEL, folder / ETRECORD
    weights_of: Callable[[Arch], Any] | None = getattr(oracle, "state_dict", None)
    state_dict = weights_of(arch) if callable(weights_of) else None
    calibration = None
    calibration_of: Callable[[Arch], Any] | None = getattr(oracle, "calibration", None)
    if spec.dtype.value == "int8" and state_dict is not None and callable(calibration_of):
        calibration = calibration_of(arch)  # the training batches its int8 accuracy was measured with
    int8_calibration = None if spec.dtype.value != "int8" else "training" if calibration else "random"
    _export_winner(spec, ctx.space, arch, model_path, etrecord_path, state_dict, ctx.progress, calibration)
    weights = "trained" if state_dict is not None else "random"
    return Exported(model_path, etrecord_path, weights, int8_calibration)


def verify(ctx: Context, exported: Exported, arch: Arch) -> Any:
    """The exported program measured on the target: :data:`MEASURE_RUNS` separate runs, median of
    their p50s (and energies), a :class:`~chamlab.host.measurement.networks.ProgramMeasurement`.

    Resume: nothing kept; a re-run measures again (the device may have changed)."""
    from chamlab.host.measurement.networks import measure_program_runs

    name = f"net:{ctx.space.name}:{ctx.space.format(arch)}"
    ctx.progress.note(f"measuring {exported.model_path} on {ctx.spec.target}: {ctx.opts.runs} separate runs")
    return measure_program_runs(
        ctx.spec, name, exported.model_path, exported.etrecord_path, runs=ctx.opts.runs,
        transport=ctx.transport, progress=ctx.progress, no_wait=ctx.no_wait,
    )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Round:
    """One measured winner: what :func:`refine` chooses among."""

    winner: Winner
    exported: Exported
    measured: Any  # ProgramMeasurement
    limits: Limits


@dataclasses.dataclass(frozen=True)
class Refined:
    """Step 7 (:func:`refine`): every round (round 0 the first search) and the chosen one."""

    rounds: list[RefineRound]
    kept: list[Round]
    final: int
    notes: list[str]

    @property
    def chosen(self) -> Round:
        return self.kept[self.final]


def refine(ctx: Context, oracle: Oracle, bo: BoStep, first: Round, lut: LutStep) -> Refined:
    """Verify and refine (:mod:`~chamlab.host.workflows.refine`): while a round's measured winner
    misses the limit (or errs by more than its margin) and ``opts.refine`` rounds remain, it joins the
    stored calibration (refitted, stored in the LUT), the margin is recomputed and steps 4 to 6 run
    again into ``round-I/``. The chosen round's program becomes the stage's ``model.pte``.

    Resume: the refitted calibration stays in the LUT, so a re-run starts from it (its round 0 is
    then the refined search)."""
    from chamlab.host.workflows import refine as refining

    space, opts, stage = ctx.space, ctx.opts, ctx.stage
    notes: list[str] = []

    def round_of(i: int, r: Round) -> RefineRound:
        best = r.winner.best
        return RefineRound(
            i, space.format(best.arch), best.accuracy, best.costs["latency_ms"], r.measured.p50_ms,
            r.limits.margin.limit, r.limits.margin, r.exported.model_path,
        )  # fmt: skip

    rounds, kept = [round_of(0, first)], [first]
    while True:
        why = refining.needs_refine(rounds[-1])
        if why is None or len(rounds) > opts.refine:
            if why is not None:
                ctx.progress.note(
                    f"round {len(rounds) - 1}: {why}; no refine round left (--refine {opts.refine})"
                )
            break
        last = kept[-1]
        arch = last.winner.best.arch
        ctx.progress.note(f"round {len(rounds) - 1}: {why}: the measured winner joins the calibration")
        try:
            refining.refit(
                space, lut.lut_path, lut.mset, arch, last.measured.p50_ms, source=f"adapt {ctx.out}"
            )
        except refining.RefineSkipped as exc:
            rounds[-1] = dataclasses.replace(rounds[-1], action=f"stop: {exc}")
            notes.append(f"not refined: {exc}")
            break
        table = Lut.read(lut.lut_path)
        latency = CachedPrediction(LatencyModel(space, table, lut.lut_path, lut.mset, interpolate=ctx.large))
        predictors = Predictors(table, latency, last.winner.predictors.energy, last.winner.predictors.notes)
        loo, calibration_summary = _calibration_errors(latency.model)
        refined_margin = safety_margin(last.limits.margin.limit, loo, k=opts.margin_k)
        if latency(min(latency_pool(space, opts.seed), key=latency)) > refined_margin.effective:
            why = f"nothing is predicted under the refined search limit {refined_margin.effective:.4f} ms"
            rounds[-1] = dataclasses.replace(rounds[-1], action=f"stop: {why}")
            notes.append(f"refine stopped: {why}")
            break
        rounds[-1] = dataclasses.replace(rounds[-1], action="refined")
        limits = dataclasses.replace(last.limits, margin=refined_margin, calibration=calibration_summary)
        ctx.progress.note(
            f"refine round {len(rounds)}: searching under {refined_margin.effective:.4f} ms (spread "
            f"{refined_margin.spread_pct:.2f} %, {refined_margin.source})"
        )
        winner = constrained(ctx, bo, predictors, limits, lut)
        if winner.best is None:
            rounds[-1] = dataclasses.replace(rounds[-1], action="stop: the refined search found no arch")
            break
        if len(rounds) == 1:  # keep round 0's program beside the refined ones
            rounds[0] = dataclasses.replace(
                rounds[0], model_path=_keep(rounds[0].model_path, stage / "round-0")
            )
        exported = export(ctx, oracle, winner.best.arch, stage / f"round-{len(rounds)}")
        r = Round(winner, exported, verify(ctx, exported, winner.best.arch), limits)
        rounds.append(round_of(len(rounds), r))
        kept.append(r)
    final = refining.choose(rounds)
    rounds[final] = dataclasses.replace(rounds[final], action=(rounds[final].action + "; final").lstrip("; "))
    if final > 0:  # the chosen round's program is the stage's model.pte
        for src, dst in (
            (rounds[final].model_path, stage / MODEL),
            (rounds[final].model_path.with_name(ETRECORD), stage / ETRECORD),
        ):
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
    if len(rounds) > 1:
        ctx.progress.note(
            "refine: " + "; ".join(f"round {r.round} {r.arch} measured {r.measured_latency_ms:.4f} ms "
                                   f"({'met' if r.met else 'missed'})" for r in rounds)
            + f"; result: round {final}"
        )  # fmt: skip
    # the rounds' programs as they will be named once published
    rounds = [dataclasses.replace(r, model_path=ctx.out / r.model_path.relative_to(stage)) for r in rounds]
    return Refined(rounds, kept, final, notes)


def publish(out: Path) -> bool:
    """Move a complete stage (``DIR/.next``: its ``result.json`` is written last) into ``DIR``: the
    old ``result.json`` goes first, then the program, plot and round folders, then the new
    ``result.json``. A kill at any point leaves either the old finished run, or no ``result.json``
    and a complete stage that the next run (or this call again) finishes publishing. An incomplete
    stage (a run killed before its result) is removed. Returns whether a stage was published."""
    stage = out / STAGE
    if not stage.is_dir():
        return False
    if not (stage / RESULT).is_file():
        shutil.rmtree(stage)
        return False
    try:  # the round folders the new result names; the old run's others go with its result
        rounds = json.loads((stage / RESULT).read_text()).get("refine_rounds") or []
        keep: set[str] | None = {Path(r["model_path"]).parent.name for r in rounds}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        keep = None
    (out / RESULT).unlink(missing_ok=True)
    for old in out.glob("round-*"):
        if old.is_dir() and keep is not None and old.name not in keep:
            shutil.rmtree(old)
    for item in sorted(stage.iterdir()):
        if item.name == RESULT:
            continue
        dst = out / item.name
        if item.is_dir() and dst.is_dir():
            shutil.rmtree(dst)
        item.replace(dst)
    (stage / RESULT).replace(out / RESULT)
    stage.rmdir()
    return True


def assemble(
    ctx: Context,
    oracle: Oracle,
    lut: LutStep,
    predictors: Predictors,
    first: Winner,
    first_measured: Any,
    refined: Refined,
    bo: BoStep,
    seconds: dict[str, float],
) -> AdaptReport:
    """The report (``result.json``) from the steps' results: the chosen round's winner, its program
    (named as published: ``DIR/model.pte``), the notes every step left."""
    spec, space, out = ctx.spec, ctx.space, ctx.out
    chosen = refined.chosen
    winner, limits, measured = chosen.winner, chosen.limits, chosen.measured
    best = winner.best
    arch = best.arch
    latency, energy = winner.predictors.latency, winner.predictors.energy
    notes = [*predictors.notes, *limits.notes]
    first_arch, first_energy = first.best.arch, first.predictors.energy
    if n := first.predictors.latency.interpolated.get(first_arch):
        notes.append(f"the winner's prediction interpolates {n} op(s)")
    if first_energy is not None and (n := first_energy.interpolated.get(first_arch)):
        notes.append(f"the winner's energy prediction interpolates {n} op(s)")
    rows = first.predictors.lut.select(lut.mset).values()
    lut_fps = {str(r["device_fingerprint"]) for r in rows if r.get("device_fingerprint")}
    if first_measured.fingerprint and lut_fps and first_measured.fingerprint not in lut_fps:
        notes.append(
            f"the target's fingerprint ({first_measured.fingerprint}) differs from the LUT's "
            f"({', '.join(sorted(lut_fps))}): the LUT may describe other hardware or software"
        )
    if limits.energy_margin is not None and first_measured.energy_mj is None:
        notes.append(
            f"the winner's energy was not measured on {spec.target} "
            f"({first_measured.energy_error or 'no energy record'}): the energy limit is unchecked"
        )
    notes.extend(refined.notes)
    predicted_energy_mj, energy_calibrated = _winner_energy(
        space, arch, energy, winner.predictors.lut, lut.lut_path, lut.mset, ctx.large
    )
    known = bo.known
    oracle_accuracy: float | None = known.get(arch)
    if oracle_accuracy is None and isinstance(oracle, TableOracle):
        oracle_accuracy = float(oracle([arch])[0])  # a table look-up for the report, not a search query
    acc_note = getattr(oracle, "accuracy_note", None)
    if acc_note and spec.dtype.value == "int8":
        notes.append(acc_note)
    if best.known:  # a queried arch: the GP's prediction of it, for the report
        predicted_accuracy = float(bo.state.predict([arch], np.array([latency(arch)]))[0])
    else:
        predicted_accuracy = best.accuracy
    values = {d.name: v for d, v in zip(space.dimensions, arch, strict=True)}
    shape = [spec.batch, *space.input_shape(arch)[1:]]
    return AdaptReport(
        space=space.name,
        arch=space.format(arch),
        values=values,
        arch_json={
            "space": space.name,
            "arch": space.format(arch),
            "values": values,
            "input_shape": shape,
            "fit": space.fit_summary() or None,
            "macs": space.macs(arch),
            "params": space.params(arch),
            "ops": [op.key for op in space.ops(arch)],
        },
        spec=spec,
        margin=limits.margin,
        predicted_accuracy=predicted_accuracy,
        accuracy_known=best.known,
        predicted_latency_ms=best.costs["latency_ms"],
        calibrated=latency.model.calibrated,
        measured_latency_ms=measured.p50_ms,
        measured_runs_ms=[r.p50_ms for r in measured.runs],
        unstable=measured.unstable,
        oracle_accuracy=oracle_accuracy,
        oracle=oracle.name,
        queries=bo.queries,
        new_queries=bo.new_queries,
        search=winner.result,
        search_seconds=winner.seconds,
        seconds=seconds,
        model_path=out / MODEL,
        etrecord_path=out / ETRECORD,
        weights=chosen.exported.weights,
        runtime_version=measured.runtime_version,
        input_shape=shape,
        lut_path=lut.lut_path,
        profiled_ops=lut.profiled + sum(r.winner.profiled for r in refined.kept),
        calibration=limits.calibration,
        out=out,
        notes=notes,
        pareto=[c.to_json(space) for c in winner.result.front],
        refine_rounds=refined.rounds,
        accuracy_dtype=accuracy_dtype(oracle),
        accuracy_note=acc_note,
        oracle_accuracies=accuracies_of(oracle, arch) or None,
        int8_calibration=chosen.exported.int8_calibration,
        energy_margin=limits.energy_margin,
        predicted_energy_mj=predicted_energy_mj,
        energy_calibrated=energy_calibrated,
        energy_calibration=limits.energy_calibration,
        measured_energy_mj=measured.energy_mj,
        measured_runs_energy_mj=[r.energy_mj for r in measured.runs],
    )


def describe_program(
    ctx: Context, oracle: Oracle, report: AdaptReport, final: FinalTrained | None = None
) -> None:
    """Step 8: ``model.json`` beside the staged program, the manifest an app follows to feed it
    (:mod:`chamlab.host.workflows.manifest`): its input mapping (the training oracle's; shape only
    for a program with seeded weights), labels, the latency measured on the target with its runtime
    settings, and the accuracy figures. A trained program is evaluated through the ExecuTorch runtime
    on the oracle's validation split (:func:`~chamlab.host.workflows.evaluate.evaluate_program`), so
    the manifest and ``result.json`` report the shipped program's own accuracy beside the oracle's
    PyTorch figure; an evaluation that fails is a note, not a lost run. After a final training
    (``final``), the input mapping, split and PyTorch figures are the final schedule's, and the program
    of the other dtype with the same weights (fp32 beside an int8 program, int8 beside an fp32 one) is
    exported into a temporary folder and evaluated too (``program_accuracies``; it is not shipped).

    Resume: recomputed every run (the program may have changed); written into the stage, so it is
    published with ``result.json``."""
    from chamlab.chamnet.training import TrainingOracle
    from chamlab.chamnet.training.schedule import num_outputs
    from chamlab.host.workflows import manifest as mf

    spec, space = ctx.spec, ctx.space
    arch = space.parse(report.arch)
    pte = ctx.stage / MODEL
    dtype = spec.dtype.value
    trained = isinstance(oracle, TrainingOracle) and report.weights == "trained"
    shape = list(report.input_shape)
    if isinstance(oracle, TrainingOracle) and final is not None:
        schedule = final.result.schedule
        input_ = mf.input_spec(oracle.dataset, schedule, shape, prescale_side=oracle.data.image_size)
    elif isinstance(oracle, TrainingOracle):
        schedule = oracle.schedule
        input_ = mf.oracle_input_spec(oracle, shape) if trained else mf.InputSpec.without_data(shape)
    else:
        input_ = mf.InputSpec.without_data(shape)
    classes: Sequence[str] = oracle.dataset.classes if trained and isinstance(oracle, TrainingOracle) else ()
    accuracy = None
    if isinstance(oracle, TrainingOracle):
        pytorch = report.oracle_accuracies or {}
        if final is not None:
            pytorch = {"fp32": final.result.accuracy}
            if final.result.accuracy_int8 is not None:
                pytorch["int8"] = final.result.accuracy_int8
        figures = [
            mf.AccuracyFigure(runtime="pytorch", dtype=d, top1_pct=v)
            for d, v in sorted(pytorch.items())
            if d in ("fp32", "int8") and v is not None
        ]
        accuracy = mf.Accuracy(split=mf.Split.of(oracle.dataset, schedule), figures=figures)
    latency = mf.Latency(
        device=spec.target,
        backend=spec.backend.value,
        dtype=dtype,
        threads=spec.threads,
        batch=spec.batch,
        measured_ms=report.measured_latency_ms,
        runs_ms=list(report.measured_runs_ms),
        unstable=report.unstable,
        predicted_ms=report.predicted_latency_ms,
    )
    manifest = mf.build_manifest(
        pte,
        input=input_,
        num_outputs=num_outputs(space, arch),
        classes=classes,
        dtype=dtype,
        quant_recipe=spec.quant_recipe if dtype == "int8" else None,
        weights=report.weights,
        arch=mf.ArchSpec(
            space=space.name,
            arch=report.arch,
            values=report.values,
            fit=mf.SpaceFit(**space.fit_summary()) if space.fit_summary() else None,
        ),
        accuracy=accuracy,
        latency=latency,
        runtime=mf.RuntimeSpec(
            version=report.runtime_version, backend=spec.backend.value, threads=spec.threads
        ),
    )
    if trained and accuracy is not None:
        assert isinstance(oracle, TrainingOracle)
        ctx.progress.note(f"evaluating {MODEL} through ExecuTorch on the validation split")
        try:
            rep = _evaluate_program(ctx, pte, oracle, manifest)
        except ChamlabError as exc:
            report.notes.append(f"the program's own accuracy was not measured: {exc}")
        else:
            figure = mf.AccuracyFigure(
                runtime="executorch",
                runtime_version=rep.runtime_version,
                dtype=dtype,
                top1_pct=rep.accuracy_pct,
                n=rep.n,
                device=rep.device,
            )
            accuracy = mf.Accuracy(split=accuracy.split, figures=[*accuracy.figures, figure])
            manifest = manifest.model_copy(update={"accuracy": accuracy})
            report.program_accuracy = {**figure.model_dump(), "split": accuracy.split.model_dump()}
            if final is not None:
                report.program_accuracies = {dtype: rep.accuracy_pct}
                _evaluate_sibling(ctx, oracle, report, final, manifest)
    mf.write_manifest(ctx.stage / mf.manifest_path(pte).name, manifest)
    report.manifest_path = ctx.out / mf.manifest_path(pte).name


def _evaluate_program(ctx: Context, pte: Path, oracle: Any, manifest: Any) -> Any:
    """``pte`` through ExecuTorch on the oracle's validation split, as ``manifest`` maps the data, at
    the run's thread count, on this host or the target (``opts.evaluate_on``)."""
    from chamlab.host.workflows.evaluate import evaluate_program

    device: DeviceConfig | None = ctx.spec.device if ctx.opts.evaluate_on == "target" else None
    return evaluate_program(
        pte,
        oracle.data.source,
        manifest=manifest,
        threads=ctx.spec.threads,
        device=device,
        progress=ctx.progress.note,
    )


def _evaluate_sibling(
    ctx: Context, oracle: Any, report: AdaptReport, final: FinalTrained, manifest: Any
) -> None:
    """The final weights exported at the other dtype (into a temporary folder, never shipped) and
    evaluated through ExecuTorch like the shipped program: ``report.program_accuracies``."""
    import tempfile

    import torch

    from chamlab.chamnet.training.schedule import calibration_inputs
    from chamlab.host.measurement.networks import network_item
    from chamlab.host.workflows import manifest as mf
    from chamlab.operators.export import export_program

    spec, space = ctx.spec, ctx.space
    other = "fp32" if spec.dtype.value == "int8" else "int8"
    arch, schedule = final.arch, final.result.schedule
    recipe = oracle.quant_recipe  # the recipe of the final training's int8 accuracy
    calibration = None
    if other == "int8":
        batches = calibration_inputs(space, arch, oracle.dataset, schedule, recipe)
        calibration = [b.numpy() for b in batches]
    item = network_item(space, arch, spec.batch)
    ctx.progress.note(f"evaluating the {other} program of the same weights (not shipped) through ExecuTorch")
    try:
        with tempfile.TemporaryDirectory(prefix="chamlab-sibling-") as tmp:
            pte = Path(tmp) / MODEL
            export_program(
                ExportItem(item.name, item.op_keys, item.batch), spec.backend.value, pte,
                Path(tmp) / ETRECORD, dtype=other, recipe=recipe if other == "int8" else None,
                state_dict={k: torch.from_numpy(v.copy()) for k, v in final.result.state.items()},
                calibration=calibration,
            )  # fmt: skip
            sibling = mf.build_manifest(
                pte,
                input=manifest.input,
                num_outputs=manifest.output.shape[1],
                classes=oracle.dataset.classes,
                dtype=other,
                quant_recipe=recipe if other == "int8" else None,
                weights="trained",
                accuracy=mf.Accuracy(split=manifest.accuracy.split, figures=[]),
            )
            rep = _evaluate_program(ctx, pte, oracle, sibling)
    except ChamlabError as exc:
        report.notes.append(f"the {other} program's own accuracy was not measured: {exc}")
        return
    assert report.program_accuracies is not None
    report.program_accuracies[other] = rep.accuracy_pct


def _keep(model_path: Path, folder: Path) -> Path:
    """A copy of ``model_path`` and its ETRecord in ``folder``; the copy's path."""
    folder.mkdir(exist_ok=True)
    for src in (model_path, model_path.with_name(ETRECORD)):
        with atomic_path(folder / src.name) as tmp:
            shutil.copyfile(src, tmp)
    return folder / model_path.name


def _winner_energy(
    space: SearchSpace,
    arch: Arch,
    energy: CachedEnergy | None,
    lut: Lut,
    lut_path: Path,
    mset: MeasurementSet,
    interpolate: bool,
) -> tuple[float | None, bool]:
    """The winner's predicted energy (the search's model; without an energy limit, the LUT's energy
    rows when it has them, else None) and whether it is calibrated."""
    if energy is not None:
        return energy(arch), energy.model.calibrated
    if energy_refusal(lut, lut_path, mset) is not None:
        return None, False
    try:  # a report-only figure here: an energy the LUT cannot predict is left out, not an error
        model = EnergyModel(space, lut, lut_path, mset, interpolate=interpolate)
        return float(model.predict(arch).energy_mj), model.calibrated
    except ChamlabError:
        return None, False


_UNITS = {
    "latency_ms": ("--latency", "ms", "fastest predicted latency"),
    "energy_mj": ("--energy", "mJ", "lowest predicted energy"),
}


def _check_feasible(
    space: SearchSpace, costs: dict[str, CachedLatency], margins: dict[str, Margin], seed: int
) -> None:
    """An :class:`InputError` naming the lowest prediction when nothing fits under a limit's margin
    (each limit alone first, then all of them together)."""
    from chamlab.host.measurement.profiling import EXHAUSTIVE_LIMIT

    pool = latency_pool(space, seed)
    what = "of all" if space.size <= EXHAUSTIVE_LIMIT else "found among the references and samples of"
    for name, margin in margins.items():
        cost = costs[name]
        lowest = min(pool, key=cost)
        if cost(lowest) <= margin.effective:
            continue
        flag, unit, quantity = _UNITS[name]
        raise InputError(
            f"{flag} {margin.limit:g} {unit} is infeasible on this device: the {quantity} {what} "
            f"{space.name} is {cost(lowest):.4f} {unit} ({space.format(lowest)}), and the search limit "
            f"after the safety margin is {margin.effective:.4f} {unit}",
            hint=f"use {flag} {cost(lowest) / (margin.effective / margin.limit) * 1.01:.4g} or more",
        )
    if len(margins) > 1 and not any(
        all(costs[n](a) <= m.effective for n, m in margins.items()) for a in pool
    ):
        detail = " and ".join(f"{_UNITS[n][0]} {m.limit:g} {_UNITS[n][1]}" for n, m in margins.items())
        raise InputError(
            f"{detail} together are infeasible on this device: each alone is met, but no arch {what} "
            f"{space.name} is predicted under every limit after its safety margin",
            hint="raise one of the limits",
        )


def latency_pool(space: SearchSpace, seed: int) -> list[Arch]:
    """Every arch of a space small enough to profile exhaustively; else its references, its smallest
    arch (every dimension's first value) and 256 seeded samples."""
    from chamlab.host.measurement.profiling import EXHAUSTIVE_LIMIT

    if space.size <= EXHAUSTIVE_LIMIT:
        return list(space.enumerate())
    smallest = tuple(d.values[0] for d in space.dimensions)
    return [*space.references.values(), smallest, *space.sample(np.random.default_rng(seed), 256)]


def _export_winner(
    spec: RunSpec,
    space: SearchSpace,
    arch: Arch,
    model_path: Path,
    etrecord_path: Path,
    state_dict: Any,
    progress: Progress,
    calibration: Any = None,
) -> None:
    """``model.pte`` + ``model.etrecord``: the cached export for seeded weights, else a fresh one
    (int8: calibrated on ``calibration`` when given, the training oracle's batches)."""
    from chamlab.core.errors import ExportError
    from chamlab.host.measurement.networks import network_item
    from chamlab.host.measurement.pipeline import export_items
    from chamlab.operators.export import export_program

    item = network_item(space, arch, spec.batch)
    if state_dict is None:
        artifacts, failures, _ = export_items([item], spec, workers=1, progress=progress)
        if failures:
            raise ExportError(f"exporting {item.name} failed: {failures[0].error}")
        art = artifacts[item]
        for src, dst in ((art.pte_path, model_path), (art.etrecord_path, etrecord_path)):
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
        return
    progress.note(f"exporting {item.name} with the oracle's trained weights")
    export_program(
        ExportItem(item.name, item.op_keys, item.batch),
        spec.backend.value,
        model_path,
        etrecord_path,
        dtype=spec.dtype.value,
        recipe=spec.quant_recipe,
        state_dict=state_dict,
        calibration=calibration,
    )


def _plot(report: AdaptReport, queries: Sequence[Any], space: SearchSpace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=100)
    if queries:
        ax.scatter(
            [q.costs["latency_ms"] for q in queries],
            [q.accuracy for q in queries],
            s=12,
            c="tab:blue",
            alpha=0.6,
            label="queried (oracle accuracy, predicted latency)",
        )
    front = report.search.front
    ax.step(
        [c.costs["latency_ms"] for c in front],
        [c.accuracy for c in front],
        where="post",
        color="tab:green",
        label=f"predicted Pareto front ({report.search.method}, {report.search.evaluated} archs)",
    )
    ax.axvline(report.margin.limit, color="tab:red", ls="--", label=f"limit {report.margin.limit:g} ms")
    ax.axvline(
        report.margin.effective, color="grey", ls=":", label=f"search limit {report.margin.effective:.3g} ms"
    )
    ax.scatter(
        [report.predicted_latency_ms], [report.predicted_accuracy], marker="*", s=180, c="tab:red", zorder=5,
        label=f"winner {report.arch} (predicted)",
    )  # fmt: skip
    ax.scatter(
        [report.measured_latency_ms], [report.predicted_accuracy], marker="x", s=80, c="black", zorder=6,
        label=f"winner measured {report.measured_latency_ms:.3g} ms",
    )  # fmt: skip
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{space.name} on {report.spec.target}: {report.queries} queries")
    ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


__all__ = [
    "MEASURE_RUNS",
    "STAGE",
    "AdaptOptions",
    "AdaptReport",
    "BoStep",
    "CachedEnergy",
    "CachedLatency",
    "Checked",
    "Context",
    "Exported",
    "Limits",
    "LutStep",
    "Predictors",
    "Refined",
    "Round",
    "Winner",
    "assemble",
    "check_inputs",
    "constrained",
    "ensure_calibration",
    "ensure_lut",
    "export",
    "latency_pool",
    "plan_limits",
    "publish",
    "refine",
    "run_bo",
    "verify",
]
