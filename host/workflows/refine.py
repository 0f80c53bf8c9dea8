"""Verify and refine: the measured winner of ``adapt`` joins the latency calibration (docs/adapt.md).

``adapt`` measures its exported winner on the target anyway. When that measurement misses the limit,
or its error is larger than the safety margin the search assumed, the winner lies where the
calibration's networks did not reach (typically the large-weight end a search under a limit pushes
to). :func:`refit` then adds the measured winner (its median p50 as the truth) to the networks of the
stored calibration, refits the same documented model
(:mod:`chamlab.chamnet.predictors.calibration`) with the winners at full weight (``trusted``: the
Huber weights that protect the fit from one disturbed calibration measurement would otherwise treat
a lone winner far from the other networks as that disturbance and barely move; a winner is the
median of separate runs), and stores the result in the LUT as the calibration
of that space and measurement set, so the margin (from the refit's leave-one-out spread) and every
later prediction, this adapt's next round and the next adapt on the device, use it. The record keeps
its networks (the winners among them, named in ``refined_with``) and the digest of the LUT rows of
all their ops, so the stale-digest rule of :func:`~chamlab.host.prediction.calibrate.lookup` still holds.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

from chamlab.chamnet.search.constrained import Margin
from chamlab.chamnet.spaces.base import Arch, SearchSpace
from chamlab.host.luts.lut import Lut, MeasurementSet

#: refine rounds of ``adapt`` by default (``--refine N``; 0: measure once, as before)
REFINE_ROUNDS = 2


class RefineSkipped(Exception):
    """Why the calibration cannot be refined with a measured winner (shown as a note)."""


@dataclasses.dataclass(frozen=True)
class RefineRound:
    """One measured winner of ``adapt``: round 0 is the first search, round i the i-th refinement."""

    round: int
    arch: str
    predicted_accuracy: float
    predicted_latency_ms: float
    measured_latency_ms: float
    limit_ms: float
    margin: Margin
    model_path: Path
    action: str = ""  # what followed this round: "refined", "stop: ...", "final"

    @property
    def met(self) -> bool:
        return self.measured_latency_ms <= self.limit_ms

    @property
    def error_pct(self) -> float:
        return 100.0 * (self.predicted_latency_ms - self.measured_latency_ms) / self.measured_latency_ms

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "arch": self.arch,
            "predicted_accuracy": self.predicted_accuracy,
            "predicted_latency_ms": self.predicted_latency_ms,
            "measured_latency_ms": self.measured_latency_ms,
            "error_pct": self.error_pct,
            "constraint_met": self.met,
            "search_limit_ms": self.margin.effective,
            "margin": self.margin.to_json(),
            "model_path": str(self.model_path),
            "action": self.action,
        }


def needs_refine(r: RefineRound) -> str | None:
    """Why round ``r`` calls for a refinement (None: it does not): a measured miss, or a measured
    error larger than the safety margin searched under."""
    margin_pct = 100.0 * (1.0 - r.margin.effective / r.margin.limit)
    if not r.met:
        return f"measured {r.measured_latency_ms:.4f} ms is over the {r.limit_ms:g} ms limit"
    if abs(r.error_pct) > margin_pct:
        error = f"{r.error_pct:+.1f} %"
        return f"its measured error {error} is larger than the {margin_pct:.1f} % margin searched with"
    return None


def choose(rounds: list[RefineRound]) -> int:
    """The index of the final round: the last if it met the limit, else the measured winner of the
    highest predicted accuracy that met it, else the last."""
    if rounds[-1].met:
        return len(rounds) - 1
    met = [i for i, r in enumerate(rounds) if r.met]
    if met:
        return max(met, key=lambda i: (rounds[i].predicted_accuracy, i))
    return len(rounds) - 1


def refit(
    space: SearchSpace,
    lut_path: Path,
    mset: MeasurementSet,
    arch: Arch,
    measured_ms: float,
    *,
    source: str,
) -> dict[str, Any]:
    """The stored latency calibration of ``space`` on ``mset`` refitted with ``arch`` measured at
    ``measured_ms`` (replacing an earlier measurement of the same arch), stored in the LUT at
    ``lut_path``; :class:`RefineSkipped` when there is no fresh calibration to refine or the LUT
    lacks one of the arch's ops (an interpolated op)."""
    from chamlab.host.prediction import calibrate as calib

    lut = Lut.read(lut_path)
    found = calib.lookup(lut, mset, space.name)
    if found is None:
        raise RefineSkipped("the LUT holds no calibration to refine (`chamlab calibrate` fits one)")
    if found.stale is not None:
        raise RefineSkipped(f"the stored calibration is stale ({found.stale})")
    rec = found.record
    name = space.format(arch)
    archs: list[Arch] = []
    values: list[float] = []
    for n in rec.get("networks", []):
        if n["name"] != name:
            archs.append(space.parse(n["name"]))
            values.append(float(n["measured_ms"]))
    archs.append(arch)
    values.append(float(measured_ms))
    p50 = lut.p50_by_key(mset)
    earlier = [w for w in rec.get("refined_with", []) if w.get("name") != name]
    try:
        new = calib.build_record(
            space,
            mset,
            p50,
            archs,
            values,
            seed=rec.get("seed"),
            measure=rec.get("measure"),
            trusted={name, *(w["name"] for w in earlier)},
            op_noise=rec.get("op_noise"),  # the same shrunk op values as the fit it refines
        )
    except KeyError as exc:
        raise RefineSkipped(f"the LUT lacks op {exc.args[0]} of {name} (interpolated)") from None
    new["refined_with"] = [
        *earlier,
        {
            "name": name,
            "measured_ms": float(measured_ms),
            "source": source,
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
    ]
    calib.store(lut_path, new)
    return new


__all__ = ["REFINE_ROUNDS", "RefineRound", "RefineSkipped", "choose", "needs_refine", "refit"]
