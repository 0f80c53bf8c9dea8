"""``calibrate``: measure a few whole networks, fit the LUT-to-device calibration, store it in the LUT.

The model and its fit live in :mod:`chamlab.chamnet.predictors.calibration` (numpy only). Here:

* :func:`select_networks` picks ``n`` networks that span the space (seeded): a pool of the space's
  reference archs, the archs profiled into the LUT (its provenance records the networks named to
  ``profile --arch/--sample``: :func:`profiled_archs`) and random ones, those whose ops the LUT
  holds, spread over (LUT sum, weight bytes, depth) by farthest-point selection; networks named
  with ``calibrate --arch`` are measured outright (the rest, up to ``--n``, selected);
* :func:`calibrate` measures them through the one pipeline
  (:func:`~chamlab.host.measurement.networks.measure_networks`:
  device lock, resumable run), fits, and stores the record with :func:`store`. Until the record is
  stored, the network measurements are kept beside the LUT (``.<lut>.calibrate-<digest>.json``), so
  a run killed during the op recheck re-measures none of them when it is run again;
* :func:`store` writes the record into the LUT file's metadata (``chamlab.calibrations``, a JSON
  list; one record per (space, device, backend, dtype, threads), a new one replaces the old) under
  the LUT's sibling lock, re-reading the file inside it like :func:`~chamlab.host.luts.lut.add_rows`;
* :func:`recheck_ops` (``calibrate --recheck K``, default 32) re-measures K of the networks' ops
  in this session: how far op timings moved since the LUT was profiled. Where they moved about as
  much as the op-level model misses (on a 2-vCPU VM at 2 threads), the fit and every prediction
  from it sum op values shrunk towards the model (the record's ``op_noise``); where they reproduce,
  the weights are near 0 and the LUT counts as measured;
* :func:`lookup` finds the record a prediction may use and says whether it is *stale*: the digest of
  the LUT rows it was fitted on (the ops of the networks it saw) no longer matches the LUT, e.g.
  after ``profile --force``. A stale calibration is reported and never applied.

Energy (``quantity`` = ``energy``): where the device has a power reader (devices.toml
``power_reader``), the LUT rows hold each op's energy per execution above idle and the measured
networks their whole-network energy; :func:`calibrate` then fits a second record, the same model on
(LUT energy sum, ops, weight MiB) to the measured mJ, stored and checked for staleness the same way
(its digest covers the ops' energies). Without a reader it says why and fits latency only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import tempfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chamlab.chamnet.predictors import calibration as model
from chamlab.chamnet.spaces.base import Arch, SearchSpace
from chamlab.core.errors import ChamlabError, InputError
from chamlab.host.devices.transports.base import Transport
from chamlab.host.luts.lut import Lut, MeasurementSet
from chamlab.host.measurement.pipeline import NullProgress, Progress, RunSpec
from chamlab.host.prediction.records import (
    QUANTITIES,
    Found,
    apply,
    build_record,
    lookup,
    lut_features,
    needed_ops,
    store,
    values_of,
)
from chamlab.operators import INVOCATION_PROBE

POOL = 256  # random candidates drawn per calibration (plus the space's references)
#: ops ``calibrate`` re-measures by default (:func:`recheck_ops`), and the fewest it accepts
RECHECK_OPS = 32
MIN_RECHECK = 8
OP_SHRINKAGE = "op-model-shrinkage-v1"


def profiled_archs(lut: Lut, space: SearchSpace) -> list[Arch]:
    """The archs of ``space`` that runs named to ``profile`` (``--arch``/``--sample``) into this LUT,
    from its provenance entries' ``archs`` (oldest first, each once; a form the space cannot parse is
    skipped: the provenance of another version of the space)."""
    out: dict[Arch, None] = {}
    for entry in lut.provenance:
        if not isinstance(entry, dict) or entry.get("space") != space.name:
            continue
        for text in entry.get("archs") or []:
            try:
                out.setdefault(space.parse(str(text)))
            except ChamlabError:
                continue
    return list(out)


def select_networks(
    space: SearchSpace,
    p50_ms: Mapping[str, float],
    dtype: str,
    n: int,
    rng: np.random.Generator,
    *,
    exclude: Collection[Arch] = (),
    candidates: Sequence[Arch] | None = None,
    profiled: Sequence[Arch] = (),
    named: Sequence[Arch] = (),
) -> list[Arch]:
    """``n`` archs whose ops ``p50_ms`` holds, spread over (LUT sum, weight bytes, depth); never one
    of ``exclude`` (networks held apart for evaluation). The pool is ``candidates`` when given (e.g.
    the archs just profiled for this), else the space's references, ``profiled`` (the archs profiled
    into the LUT, :func:`profiled_archs`) and :data:`POOL` random archs. ``named`` (``--arch``) are
    taken first, whatever the spread; each must have all its ops in the LUT."""
    banned = set(exclude)
    chosen = list(dict.fromkeys(named))
    for a in chosen:
        lacking = [op.key for op in needed_ops(space.ops(a), dtype) if op.key not in p50_ms]
        if lacking:
            raise InputError(
                f"--arch {space.format(a)}: the LUT lacks {len(lacking)} of its ops ({', '.join(lacking[:3])}"
                + (", ..." if len(lacking) > 3 else "")
                + ")",
                hint=f"profile it first (`chamlab profile --space {space.name} --arch {space.format(a)}`)",
            )
    if len(chosen) >= n:
        return chosen
    drawn = (
        [*space.references.values(), *profiled, *space.sample(rng, POOL)]
        if candidates is None
        else candidates
    )
    pool = [a for a in dict.fromkeys(drawn) if a not in banned and a not in chosen]
    covered = [a for a in pool if all(op.key in p50_ms for op in needed_ops(space.ops(a), dtype))]
    need = n - len(chosen)
    if len(covered) < need:
        where = (
            f"the space's references, the {len(profiled)} archs profiled into the LUT and {POOL} random ones"
            if candidates is None
            else "the candidates given"
        )
        raise InputError(
            f"the LUT holds every op of only {len(covered)} of {len(pool)} candidate {space.name} "
            f"networks ({where}), fewer than --n {n}" + (f" less the {len(chosen)} named" if chosen else ""),
            hint="name networks whose ops it holds with --arch (repeatable), profile more archs first "
            "(`chamlab profile --arch A` or `--sample N`), or lower --n",
        )
    feats = [lut_features(space, a, p50_ms, dtype) for a in covered]
    idx = model.spread_selection([[f["lut_sum_ms"], f["weight_mib"], f["n_ops"]] for f in feats], need, rng)
    return [*chosen, *(covered[i] for i in idx)]


@dataclasses.dataclass(frozen=True)
class CalibrationReport:
    """The latency calibration stored, and the energy one (or why there is none)."""

    lut_path: Path
    record: dict[str, Any]
    energy_record: dict[str, Any] | None = None
    energy_note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "lut": str(self.lut_path),
            **self.record,
            "energy": self.energy_record,
            "energy_note": self.energy_note,
        }


def calibrate(
    spec: RunSpec,
    space: SearchSpace,
    *,
    lut_path: Path,
    n: int = 10,
    seed: int = 0,
    transport: Transport | None = None,
    progress: Progress | None = None,
    no_wait: bool = False,
    repeats: int = 3,
    recheck: int = RECHECK_OPS,
    archs: Sequence[Arch] = (),
) -> CalibrationReport:
    """Measure ``n`` spread networks of ``space`` on ``spec``, fit and store the calibration.
    ``archs`` (``--arch``) are measured outright; the rest up to ``n`` are selected
    (:func:`select_networks`, among them the archs profiled into the LUT).

    ``repeats`` > 1 (the default 3) measures them under the noise protocol
    (:func:`~.measuring.measure_repeated`: separate interleaved sessions, disturbed windows
    re-measured, the median kept); 1 measures each once. The default is 3 because the leave-one-out
    spread stored here sizes ``adapt``'s safety margin, and one disturbed window inflates it: on the
    fidelity run's macro-cifar10 networks at 2 threads, five networks measured once gave a p95
    spread of 26.1 %, their protocol medians 2.3 % (``python -m bench.calibration_repeats``,
    docs/benchmarks.md). ``recheck`` > 0
    re-measures that many of the networks' ops (:func:`recheck_ops`) and fits on op values shrunk towards
    the op-level model as far as op timings moved since profiling; 0 fits on the LUT as measured."""
    from chamlab.host.measurement.networks import RepeatPolicy, measure_networks, measure_repeated

    if n < 3:
        raise InputError(f"--n must be at least 3 (a fit plus a leave-one-out check), got {n}")
    if 0 < recheck < MIN_RECHECK:
        raise InputError(
            f"--recheck must be 0 (off) or at least {MIN_RECHECK} ops (a spread from fewer is noise), "
            f"got {recheck}"
        )
    progress = progress or NullProgress()
    lut = Lut.read(lut_path)
    mset = spec.choose_in(lut, lut_path)
    from chamlab.host.prediction.predict import check_recipe

    recipe = check_recipe(lut, mset, lut_path)
    if recipe is not None and recipe != spec.quant_recipe:
        raise InputError(
            f"LUT {lut_path} holds int8 rows of quantization recipe {recipe}, this run uses "
            f"{spec.quant_recipe}: "
            "a calibration must measure networks quantized like the ops it calibrates",
            hint=f"pass --quant-recipe {recipe}",
        )
    p50 = lut.p50_by_key(mset)
    archs = select_networks(
        space,
        p50,
        mset.dtype,
        n,
        np.random.default_rng(seed),
        profiled=profiled_archs(lut, space),
        named=archs,
    )
    progress.note(
        f"calibrating from {len(archs)} {space.name} networks: {', '.join(map(space.format, archs))}"
    )
    protocol = RepeatPolicy(repeats=repeats)
    checkpoint = _checkpoint(lut_path, spec, space, archs, protocol)
    kept = _read_checkpoint(checkpoint)
    if kept is not None:
        values, energies = kept["values"], [tuple(e) for e in kept["energies"]]
        progress.note(
            f"reusing the {len(values)} network measurements of an interrupted calibration "
            f"({kept['measured_at']}, {checkpoint})"
        )
    elif repeats > 1:
        rep = measure_repeated(
            spec, space, archs, protocol, transport=transport, progress=progress, no_wait=no_wait
        )
        values = [r.p50_ms for r in rep]
        energies = [(r.energy_mj, r.first.energy) for r in rep]
    else:
        measured = measure_networks(
            spec, space, archs, transport=transport, progress=progress, no_wait=no_wait
        )
        for a, m in zip(archs, measured, strict=True):
            if m.unstable:
                progress.note(f"{space.format(a)}: unstable measurement ({'; '.join(m.unstable_reasons)})")
        values = [m.p50_ms for m in measured]
        energies = [(m.energy_mj, m.energy) for m in measured]
    if kept is None:  # the op recheck takes a while: a kill during it keeps these networks
        _write_checkpoint(checkpoint, values, energies)
    how = {**spec.policy.to_json(), "protocol": protocol.to_json()}
    op_noise = None
    if recheck:
        try:
            op_noise = recheck_ops(
                spec,
                space,
                lut,
                mset,
                archs,
                recheck,
                np.random.default_rng(seed),
                transport=transport,
                progress=progress,
                no_wait=no_wait,
            )
        except NoRecheck as exc:
            progress.note(f"fitting on the LUT as measured: {exc}")
    record = build_record(space, mset, p50, archs, values, seed=seed, measure=how, op_noise=op_noise)
    store(lut_path, record)
    energy_record, energy_note = None, None
    try:
        energy_record = _energy_record(spec, space, lut, mset, archs, energies, seed, how)
        store(lut_path, energy_record)
    except NoEnergyCalibration as exc:
        energy_note = str(exc)
    checkpoint.unlink(missing_ok=True)
    return CalibrationReport(Path(lut_path), record, energy_record, energy_note)


def _checkpoint(
    lut_path: Path, spec: RunSpec, space: SearchSpace, archs: Sequence[Arch], protocol: Any
) -> Path:
    """Where :func:`calibrate` keeps its network measurements until the record is stored:
    ``.<lut>.calibrate-<digest>.json`` beside the LUT, the digest of what was measured and how."""
    ident = {
        "device": spec.target,
        "backend": spec.backend.value,
        "dtype": spec.dtype.value,
        "threads": spec.threads,
        "batch": spec.batch,
        "quant_recipe": spec.quant_recipe,
        "policy": spec.policy.to_json(),
        "protocol": protocol.to_json(),
        "space": space.name,
        "networks": [space.format(a) for a in archs],
    }
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]
    lut_path = Path(lut_path)
    return lut_path.with_name(f".{lut_path.name}.calibrate-{digest}.json")


def _read_checkpoint(path: Path) -> dict[str, Any] | None:
    """The measurements an interrupted calibration kept (None: none, or unreadable: measure again)."""
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(kept, dict) or not {"values", "energies", "measured_at"} <= set(kept):
        return None
    return kept


def _write_checkpoint(path: Path, values: list[float], energies: list[Any]) -> None:
    from chamlab.core.files import atomic_write_text

    text = json.dumps(
        {
            "values": values,
            "energies": [list(e) for e in energies],
            "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
        default=str,
    )
    with contextlib.suppress(OSError):  # a checkpoint that cannot be written only costs a re-measure
        atomic_write_text(path, text + "\n")


class NoRecheck(Exception):
    """Why a calibration run fits on the LUT as measured (the message is shown to the user)."""


def recheck_ops(
    spec: RunSpec,
    space: SearchSpace,
    lut: Lut,
    mset: MeasurementSet,
    archs: Sequence[Arch],
    k: int,
    rng: np.random.Generator,
    *,
    transport: Transport | None = None,
    progress: Progress | None = None,
    no_wait: bool = False,
) -> dict[str, Any]:
    """Re-measure ``k`` ops of ``archs`` (seeded) in this session and weigh the op-level model
    against the LUT's measured ops accordingly: the ``op_noise`` of a calibration record.

    The ops are profiled into a scratch LUT (the user's LUT is not touched: its rows stay as
    profiled, and the calibration's digest with them). :func:`~chamlab.chamnet.predictors.op_model.
    session_noise` turns the pairs into one session's noise variance in log p50 (the median change,
    a whole-device shift, is left to the calibration's coefficients);
    :func:`~chamlab.chamnet.predictors.op_model.shrinkage_weights` turns that and the model's
    scatter about the LUT's ops into one weight per op kind of the rechecked ops. Raises
    :class:`NoRecheck` when fewer than :data:`MIN_RECHECK` ops could be compared."""
    from chamlab.chamnet.predictors import op_model as om
    from chamlab.host.measurement.profiling import profile
    from chamlab.host.prediction.op_values import op_model

    p50 = lut.p50_by_key(mset)
    pool = {o.key: o for a in archs for o in space.ops(a) if o.key in p50 and o.key != INVOCATION_PROBE.key}
    keys = sorted(pool)
    if len(keys) < MIN_RECHECK:
        raise NoRecheck(f"these networks have {len(keys)} distinct ops, fewer than {MIN_RECHECK} to re-check")
    picked = [pool[keys[i]] for i in sorted(rng.choice(len(keys), size=min(k, len(keys)), replace=False))]
    (progress or NullProgress()).note(
        f"re-measuring {len(picked)} of their ops to see how far op timings moved since profiling"
    )
    with tempfile.TemporaryDirectory(prefix="chamlab-recheck-") as tmp:
        scratch = Path(tmp) / "recheck.parquet"
        profile(
            spec,
            space,
            None,
            out=scratch,
            force=True,
            transport=transport,
            progress=progress,
            no_wait=no_wait,
            run_tag="recheck",
            ops=picked,
            command="calibrate (op recheck)",
        )
        again = Lut.read_or_empty(scratch).p50_by_key(mset)
    now = {o.key: again[o.key] for o in picked if o.key in again}
    if len(now) < MIN_RECHECK:
        raise NoRecheck(
            f"only {len(now)} of {len(picked)} re-measured ops came back (fewer than {MIN_RECHECK})"
        )
    noise = om.session_noise({kk: p50[kk] for kk in now}, now)
    kinds = {o.op_type for o in picked}
    scatter = {kind: v for kind, v in op_model(lut, mset).misfit_log_var().items() if kind in kinds}
    return {
        "method": OP_SHRINKAGE,
        **noise,
        "op_keys": sorted(now),
        "misfit_log_var": scatter,
        "weights": om.shrinkage_weights(scatter, noise["log_var"]),
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


class NoEnergyCalibration(Exception):
    """Why a calibration run fitted latency only (the message is shown to the user)."""


def _energy_record(
    spec: RunSpec,
    space: SearchSpace,
    lut: Lut,
    mset: MeasurementSet,
    archs: list[Arch],
    measured: list[tuple[float | None, dict[str, Any] | None]],
    seed: int,
    how: dict[str, Any],
) -> dict[str, Any]:
    if not spec.device.power_reader:
        raise NoEnergyCalibration(
            f"device {spec.target} has no power reader (set power_reader in [devices.{spec.target}] "
            "of devices.toml where it has one)"
        )
    energy = lut.energy_by_key(mset)
    lacking = sorted({op.key for a in archs for op in space.ops(a) if op.key not in energy})
    if lacking:
        raise NoEnergyCalibration(
            f"the LUT has no energy for {len(lacking)} op(s) of these networks (e.g. {lacking[0]}): "
            f"re-profile them with the power reader (`chamlab profile --target {spec.target} --force ...`)"
        )
    values = []
    for a, (value, record) in zip(archs, measured, strict=True):
        if value is None:
            why = (record or {}).get("error", "no energy record")
            raise NoEnergyCalibration(f"{space.format(a)}: no energy measured ({why})")
        if not value > 0:
            raise NoEnergyCalibration(
                f"{space.format(a)}: {value:.4g} mJ above idle measured (the reader cannot "
                "tell this network from idle; use a longer power_window_s)"
            )
        values.append(float(value))
    return build_record(space, mset, energy, archs, values, seed=seed, measure=how, quantity="energy")


__all__ = [
    "QUANTITIES",
    "CalibrationReport",
    "Found",
    "NoEnergyCalibration",
    "NoRecheck",
    "apply",
    "build_record",
    "calibrate",
    "lookup",
    "lut_features",
    "recheck_ops",
    "select_networks",
    "store",
    "values_of",
]
