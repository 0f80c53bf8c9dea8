"""Calibration of LUT predictions against a few measured whole networks (numpy only).

A LUT sum misses what single-op microbenchmarks cannot see: each op's own invocation and thread-pool
start (paid once per op in the LUT, once per network on the device), cache effects that grow with
the weights a network streams through, and a fixed per-network cost. The calibration is a small
linear model of the measured p50 on features of the LUT prediction (model ``v2``, :data:`FEATURES`):

    measured_ms ~= b0 + b_sum * lut_sum_ms + b_ops * n_ops + b_sw * lut_sum_ms * weight_mib

``lut_sum_ms`` is the raw sum of the ops' p50, ``n_ops`` the number of op occurrences, ``weight_mib``
the weights in MiB at the LUT's element type. The interaction term is the cache effect: an op timed
alone finds its weights in cache, in a network they were evicted by the ops before it, and the
slowdown *per millisecond* grows with how much the network streams, so the correction is
multiplicative in the sum (``sum * (b_sum + b_sw * weight_mib)``), not a constant per MiB.
Measured by ``bench/calibration_features.py`` on the fidelity run's held-apart networks (fit on 10,
test on the rest, 300 random splits): chamnet-mbv2 at 1 thread 87.8 % -> 92.6 % within +/-10 %
(2 threads 70.4 % -> 76.3 %), macro-cifar10 99.4 % -> 99.7 %. Records fitted
with the v1 features (``weight_mib`` instead of the product) stay readable and apply as they were
fitted: a record names its own features and :func:`feature_values` provides every feature either
version uses.

The energy calibration is the same v2 model on :data:`ENERGY_FEATURES`: measured energy per
inference (mJ, above idle) on the sum of the ops' LUT energies (``lut_sum_mj``), the number of ops
and ``lut_sum_mj * weight_mib``. Energy above idle is power times the time a network runs, so the
cache effect that makes a network slower than its ops' sum makes it costlier by the same factor:
multiplicative in the sum, as for latency. Until 2026-12-07 it was the v1 model
(:data:`ENERGY_FEATURES_V1`, ``weight_mib`` added to the sum; records fitted so stay readable and
apply as fitted): on the energy calibrations of ``tests/host/test_energy.py`` (8 macro-cifar10
networks each, a simulated RAPL counter charging the runner's CPU time) its leave-one-out errors
were larger (``python -m bench.energy_features``, docs/benchmarks.md). Not measured against a real
power reader. Both fits are *robust* with the few networks they see (about 10):

* relative least squares: each network's residual is divided by its measured latency, so a 0.1 ms
  network weighs as much as a 10 ms one (the targets are relative errors);
* Huber weights (iteratively reweighted, threshold 1.345 robust sigmas, sigma from the MAD with a
  floor of 1 %): one disturbed measurement cannot drag the fit;
* ridge shrinkage towards the raw sum (``b_sum = 1``, the others 0) with strength :data:`RIDGE`,
  measured on each coefficient's typical relative effect;
* no more free coefficients than networks less one (:func:`free_coefficients`): with two networks
  only the sum's scale is fitted, with three the scale and the per-op term, and so on (the rest stay
  at the plain sum). The ridge alone did not stop a fit on two networks from running through both
  and extrapolating one disturbed measurement to the third.

:func:`leave_one_out` refits without each network in turn and predicts it: the honest error of the
fit on networks it did not see (what ``chamlab calibrate`` prints).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any, TypeGuard

import numpy as np

FEATURES: tuple[str, ...] = ("lut_sum_ms", "n_ops", "lut_sum_ms_x_weight_mib")
#: the features of records fitted before the v2 model (still applied as fitted)
FEATURES_V1: tuple[str, ...] = ("lut_sum_ms", "n_ops", "weight_mib")
ENERGY_FEATURES: tuple[str, ...] = ("lut_sum_mj", "n_ops", "lut_sum_mj_x_weight_mib")
#: the features of energy records fitted before the v2 energy model (still applied as fitted)
ENERGY_FEATURES_V1: tuple[str, ...] = ("lut_sum_mj", "n_ops", "weight_mib")
#: the plain sum: what the ridge shrinks towards (the first feature of either model has weight 1)
PRIOR: dict[str, float] = {
    "intercept_ms": 0.0,
    "lut_sum_ms": 1.0,
    "lut_sum_mj": 1.0,
    "n_ops": 0.0,
    "weight_mib": 0.0,
    "lut_sum_ms_x_weight_mib": 0.0,
    "lut_sum_mj_x_weight_mib": 0.0,
}
RIDGE = 0.01
HUBER_K = 1.345
MIN_SIGMA = 0.01
MODEL = "huber-ridge-relative-v2"
#: the name stored with a record, by its feature set
MODEL_NAMES: dict[tuple[str, ...], str] = {
    FEATURES: MODEL,
    FEATURES_V1: "huber-ridge-relative-v1",
    ENERGY_FEATURES: MODEL,
    ENERGY_FEATURES_V1: "huber-ridge-relative-v1",
}


#: every model name a stored record may carry (:func:`fit_report` falls back to the bare name)
MODELS: frozenset[str] = frozenset({*MODEL_NAMES.values(), "huber-ridge-relative"})
#: the largest magnitude of a stored coefficient. The fit is ridge-shrunk towards the plain sum
#: (``lut_sum`` 1, the rest 0) on relative residuals, so its coefficients are of the order of one
#: (ms per ms, ms per op, ms per MiB-ms); 1e6 already predicts a 1 ms network at 1000 s. Anything
#: larger is not a fit of measured networks but a damaged or edited record.
MAX_COEFFICIENT = 1e6
#: the key fields of a record: which LUT measurement set it calibrates (``batch``, ``quantity``:
#: optional in records written before they existed)
_KEY_FIELDS: dict[str, type] = {"space": str, "device": str, "backend": str, "dtype": str, "threads": int}


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def record_problems(record: Any) -> list[str]:
    """Every problem of a stored calibration record (``chamlab.calibrations``), one line each; empty
    when it can be applied as it is: the key fields, a known ``model``, a known feature set, exactly
    one finite coefficient of sane size (:data:`MAX_COEFFICIENT`) per feature plus the intercept,
    leave-one-out figures that are finite and in range when there are any, the rows it was fitted on
    and, when present, op-noise weights in [0, 1]. A record with problems is never applied (the
    prediction layer treats it as not usable, ``chamlab lut validate`` lists the problems)."""
    if not isinstance(record, Mapping):
        return [f"not a JSON object but {type(record).__name__}"]
    out: list[str] = []
    for key, typ in _KEY_FIELDS.items():
        v = record.get(key)
        bad_int = typ is int and (not isinstance(v, int) or v < 1)
        if not isinstance(v, typ) or isinstance(v, bool) or bad_int or v == "":
            out.append(f"{key} is {v!r}; it must be {'an integer >= 1' if typ is int else 'a name'}")
    batch = record.get("batch", 1)
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        out.append(f"batch is {batch!r}; it must be an integer >= 1")
    if record.get("quantity", "latency") not in ("latency", "energy"):
        out.append(f"quantity {record.get('quantity')!r} is unknown; known: latency, energy")
    model = record.get("model")
    if model not in MODELS:
        out.append(f"model {model!r} is unknown; known: {', '.join(sorted(MODELS))}")
    features = record.get("features")
    known_sets = [list(f) for f in MODEL_NAMES]
    if features not in known_sets:
        out.append(
            f"features {features!r} are not a known feature set ("
            + "; ".join(", ".join(f) for f in known_sets)
            + ")"
        )
        features = None
    coef = record.get("coefficients")
    if not isinstance(coef, Mapping):
        out.append(f"coefficients is {coef!r}; it must be an object of numbers")
    else:
        if features is not None:
            want = {"intercept_ms", *features}
            missing, extra = sorted(want - set(coef)), sorted(set(coef) - want)
            if missing:
                out.append(f"coefficients lack {', '.join(missing)}")
            if extra:
                out.append(f"coefficients hold unknown {', '.join(map(str, extra))}")
        for name, v in coef.items():
            if not _number(v) or not math.isfinite(v):
                out.append(f"coefficient {name} is {v!r}; it must be a finite number")
            elif abs(v) > MAX_COEFFICIENT:
                out.append(
                    f"coefficient {name} is {v:g}, beyond +/-{MAX_COEFFICIENT:g}: "
                    "not a fit of measured networks"
                )
    loo = record.get("loo")
    if not isinstance(loo, Mapping) or not isinstance(loo.get("n"), int) or loo["n"] < 0:
        out.append(f"loo is {loo!r}; it must be an object with a count n")
    elif loo["n"] > 0:  # with fewer than 3 networks there is no leave-one-out (NaN figures, n 0)
        for name, (lo, hi) in (
            ("mape_pct", (0.0, math.inf)),
            ("max_abs_pct", (0.0, math.inf)),
            ("within_5pct", (0.0, 1.0)),
            ("within_10pct", (0.0, 1.0)),
        ):
            v = loo.get(name)
            if not _number(v) or not math.isfinite(v) or not lo <= v <= hi:
                out.append(f"loo {name} is {v!r}; it must be a finite number in [{lo:g}, {hi:g}]")
    networks = record.get("networks")
    if not isinstance(networks, list) or not all(isinstance(n, Mapping) for n in networks):
        out.append("networks is not a list of objects")
    else:
        for n in networks:
            e = n.get("loo_error_pct")
            if e is not None and (not _number(e) or not math.isfinite(e)):
                out.append(f"network {n.get('name')!r}: loo_error_pct is {e!r}; it must be finite or null")
    rows = record.get("rows")
    if (
        not isinstance(rows, Mapping)
        or not isinstance(rows.get("digest"), str)
        or not isinstance(rows.get("op_keys"), list)
        or not all(isinstance(k, str) for k in rows["op_keys"])
    ):
        out.append("rows must hold the digest and op_keys of the LUT rows it was fitted on")
    noise = record.get("op_noise")
    if noise is not None:
        weights = noise.get("weights") if isinstance(noise, Mapping) else None
        if not isinstance(weights, Mapping) or not all(
            _number(w) and math.isfinite(w) and 0.0 <= w <= 1.0 for w in weights.values()
        ):
            out.append("op_noise weights must be an object of numbers in [0, 1]")
    return out


def feature_values(total: float, n_ops: int, weight_mib: float, unit: str = "ms") -> dict[str, float]:
    """Every calibration feature of one network, for either model version and quantity: the LUT sum
    (``lut_sum_<unit>``), ``n_ops``, ``weight_mib`` and the product ``lut_sum_<unit>_x_weight_mib``."""
    return {
        f"lut_sum_{unit}": float(total),
        "n_ops": float(n_ops),
        "weight_mib": float(weight_mib),
        f"lut_sum_{unit}_x_weight_mib": float(total) * float(weight_mib),
    }


@dataclasses.dataclass(frozen=True)
class CalibrationPoint:
    """One measured network: its name, its LUT features and its measured value: the p50 in ms for a
    latency calibration, the energy per inference in mJ for an energy one (the fit is unit-free;
    the record names the unit, :func:`fit_report`)."""

    name: str
    features: Mapping[str, float]
    measured: float


@dataclasses.dataclass(frozen=True)
class CalibrationFit:
    """Coefficients by name (``intercept_ms`` and one per feature; the intercept keeps its historical
    name in an energy fit, where it is in mJ)."""

    features: tuple[str, ...]
    coef: Mapping[str, float]

    def predict(self, features: Mapping[str, float]) -> float:
        return float(
            self.coef["intercept_ms"] + sum(self.coef[f] * float(features[f]) for f in self.features)
        )


def _design(points: Sequence[CalibrationPoint], features: Sequence[str]) -> np.ndarray:
    return np.array([[1.0, *(float(p.features[f]) for f in features)] for p in points])


def free_coefficients(features: Sequence[str], n_points: int) -> tuple[str, ...]:
    """The coefficients a fit on ``n_points`` networks estimates: at most ``n_points - 1`` of them, in
    the order of ``features`` (the LUT sum's scale first) and the intercept last; the others stay at
    :data:`PRIOR` (the plain sum). A fit with as many coefficients as networks runs through every
    network whatever its noise, and a leave-one-out fit on two networks then extrapolates that noise
    to the third: with one of three networks measured 2x slow, the stored spread left ``adapt`` no
    latency budget in 69.5-73.5 % of random sets of the fidelity run's networks with all four
    coefficients free, 3.5-30 % with this rule (``python -m bench.calibration_few``,
    docs/benchmarks.md). A fit on five or more networks frees all four, so the fit itself is unchanged
    from five on, and its leave-one-out spread (fits on one network fewer) from six on."""
    order = (*features, "intercept_ms")
    return order[: max(1, min(len(order), n_points - 1))]


def fit(
    points: Sequence[CalibrationPoint],
    features: Sequence[str] = FEATURES,
    *,
    ridge: float = RIDGE,
    iterations: int = 20,
    trusted: Collection[str] = (),
    free: Collection[str] | None = None,
) -> CalibrationFit:
    """Fit the calibration (module docstring) to ``points``; needs at least two of them, and fits
    only the :func:`free_coefficients` their number supports (``free`` names them instead: what
    ``bench/calibration_few.py`` compares against). Points named
    in ``trusted`` keep full weight whatever their residual (the Huber weights apply to the others):
    ``adapt``'s measured winners, each the median of separate runs, that the model must learn from
    even when they alone lie where the calibration's networks did not reach."""
    if len(points) < 2:
        raise ValueError(f"a calibration needs at least 2 measured networks, got {len(points)}")
    features = tuple(features)
    y = np.array([p.measured for p in points], dtype=float)
    if np.any(~np.isfinite(y)) or np.any(y <= 0):
        raise ValueError("measured values must be positive and finite")
    x = _design(points, features)
    names = ("intercept_ms", *features)
    prior = np.array([PRIOR.get(n, 0.0) for n in names])
    mask = np.isin(names, list(free_coefficients(features, len(points)) if free is None else free))
    # relative rows: residual_i / y_i; scale of each coefficient = RMS of its relative effect
    xr = x / y[:, None]
    scale = np.sqrt(np.mean(xr**2, axis=0))
    scale[scale == 0] = 1.0
    # the coefficients held at the prior leave a fixed part of each relative row; the free ones fit the rest
    xf, rest = xr[:, mask], 1.0 - xr[:, ~mask] @ prior[~mask]
    penalty = ridge * len(points) * np.diag(scale[mask] ** 2)
    w = np.ones(len(points))
    keep = np.array([p.name in trusted for p in points])
    beta = prior.copy()
    for _ in range(iterations):
        a = xf.T @ (w[:, None] * xf) + penalty
        b = xf.T @ (w * rest) + penalty @ prior[mask]
        new = prior.copy()
        new[mask] = np.linalg.solve(a, b)
        r = 1.0 - xr @ new  # relative residuals
        sigma = max(1.4826 * float(np.median(np.abs(r - np.median(r)))), MIN_SIGMA)
        u = np.abs(r) / (HUBER_K * sigma)
        w = np.where((u <= 1.0) | keep, 1.0, 1.0 / np.maximum(u, 1e-12))
        if np.allclose(new, beta, rtol=1e-9, atol=1e-12):
            beta = new
            break
        beta = new
    return CalibrationFit(features, {n: float(v) for n, v in zip(names, beta, strict=True)})


def leave_one_out(
    points: Sequence[CalibrationPoint],
    features: Sequence[str] = FEATURES,
    *,
    ridge: float = RIDGE,
    trusted: Collection[str] = (),
    free: Collection[str] | None = None,
) -> list[float]:
    """Per network, the % error of the fit made without it: ``100 * (pred - measured) / measured``."""
    out = []
    for i, p in enumerate(points):
        rest = [q for j, q in enumerate(points) if j != i]
        f = fit(rest, features, ridge=ridge, trusted=trusted, free=free)
        out.append(100.0 * (f.predict(p.features) - p.measured) / p.measured)
    return out


def error_summary(errors_pct: Sequence[float]) -> dict[str, float]:
    """Mean absolute error and the shares within +/-5 % and +/-10 % (of ``errors_pct``)."""
    e = np.abs(np.asarray(errors_pct, dtype=float))
    if e.size == 0:
        return {"n": 0, "mape_pct": float("nan"), "within_5pct": float("nan"), "within_10pct": float("nan")}
    return {
        "n": int(e.size),
        "mape_pct": float(e.mean()),
        "max_abs_pct": float(e.max()),
        "within_5pct": float(np.mean(e <= 5.0)),
        "within_10pct": float(np.mean(e <= 10.0)),
    }


def rows_digest(p50_by_key: Mapping[str, float]) -> str:
    """SHA-256 (16 hex digits) of the LUT rows a calibration used: sorted ``op_key=p50`` lines."""
    text = "".join(f"{k}={float(v)!r}\n" for k, v in sorted(p50_by_key.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def spread_selection(candidates: Sequence[Sequence[float]], n: int, rng: np.random.Generator) -> list[int]:
    """Indices of ``n`` candidates spread over their (standardised, log-scaled) feature vectors:
    the lowest and highest of the first feature first, then greedy farthest-point (ties broken by
    ``rng``). Candidates are feature vectors such as (LUT sum, weight bytes, depth)."""
    m = np.log1p(np.maximum(np.asarray(candidates, dtype=float), 0.0))
    if len(m) <= n:
        return list(range(len(m)))
    sd = m.std(axis=0)
    sd[sd == 0] = 1.0
    z = (m - m.mean(axis=0)) / sd
    z = z + rng.normal(0.0, 1e-6, size=z.shape)  # seeded tie-breaking
    chosen = [int(np.argmin(z[:, 0])), int(np.argmax(z[:, 0]))][: max(n, 1)]
    chosen = list(dict.fromkeys(chosen))
    dist = np.min(np.linalg.norm(z[:, None, :] - z[chosen][None, :, :], axis=2), axis=1)
    while len(chosen) < n:
        i = int(np.argmax(dist))
        chosen.append(i)
        dist = np.minimum(dist, np.linalg.norm(z - z[i], axis=1))
    return chosen


def fit_report(
    points: Sequence[CalibrationPoint],
    features: Sequence[str] = FEATURES,
    *,
    unit: str = "ms",
    trusted: Collection[str] = (),
) -> dict[str, Any]:
    """Fit, in-sample residuals and leave-one-out errors of ``points`` as one JSON-able record; each
    network's ``measured_<unit>`` and ``fitted_<unit>``, and ``raw_sum``: the error of the plain
    sum (the first feature)."""
    f = fit(points, features, trusted=trusted)
    loo = leave_one_out(points, features, trusted=trusted) if len(points) >= 3 else []
    networks = []
    loo_or_none: list[float | None] = list(loo) if loo else [None] * len(points)
    for p, e in zip(points, loo_or_none, strict=True):
        pred = f.predict(p.features)
        networks.append(
            {
                "name": p.name,
                "features": {k: float(p.features[k]) for k in f.features},
                f"measured_{unit}": p.measured,
                f"fitted_{unit}": pred,
                "residual_pct": 100.0 * (pred - p.measured) / p.measured,
                "loo_error_pct": e,
            }
        )
    raw = [100.0 * (p.features[f.features[0]] - p.measured) / p.measured for p in points]
    return {
        "model": MODEL_NAMES.get(f.features, "huber-ridge-relative"),
        "features": list(f.features),
        "coefficients": dict(f.coef),
        "ridge": RIDGE,
        "free": list(free_coefficients(f.features, len(points))),
        "trusted": sorted(set(trusted) & {p.name for p in points}),
        "networks": networks,
        "loo": error_summary(loo),
        "raw_sum": error_summary(raw),
    }
