"""ETDump parsing on the host with ``executorch.devtools.Inspector``.

Used for the per-op breakdown inside a delegate (``--breakdown``) and, for runners that print no
timings (``executor_runner``), as the source of the latency samples themselves
(:func:`runner_result` turns them into the shim's result record, stability judged on the host).
"""

from __future__ import annotations

import contextlib
import io
import math
import statistics
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chamlab.agent.heat import throttled_reason
from chamlab.core.errors import MeasurementError

if TYPE_CHECKING:
    from chamlab.agent.measure import MeasurePolicy

_SKIP = ("Method::", "Program::")


def parse(etdump_path: Path, etrecord_path: Path | None) -> dict[str, Any]:
    """``{"execute_ms": [...per execution...], "events": [{"event", "p50_ms", "delegated"}, ...]}``.

    Not cached: run directories are reused by resumed runs, so a path says nothing about the content.
    Callers parse each pulled file once and keep the result with the outcome.

    ``events`` lists the operator-level events (delegate-internal ops included) in execution order;
    runtime bookkeeping (``Method::*``, ``Program::*``, ``DELEGATE_CALL``) is left out.
    """
    from executorch.devtools import Inspector

    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Inspector warns about debug data we do not ask for
            inspector = Inspector(
                etdump_path=str(etdump_path), etrecord=str(etrecord_path) if etrecord_path else None
            )
            df = inspector.to_dataframe()
    except Exception as exc:
        raise MeasurementError(f"cannot parse ETDump {etdump_path}: {exc}") from exc
    execute_ms: list[float] = []
    events: list[dict[str, Any]] = []
    for row in df.itertuples(index=False):
        name = str(row.event_name)
        raw = [float(x) for x in (row.raw or [])]
        if name == "Method::execute":
            execute_ms.extend(raw)
        if name.startswith(_SKIP) or name == "DELEGATE_CALL" or not raw:
            continue
        delegated = bool(row.is_delegated_op) if not _isnan(row.is_delegated_op) else False
        events.append({"event": name, "p50_ms": statistics.median(raw), "delegated": delegated})
    return {"execute_ms": execute_ms, "events": events}


def _isnan(x: object) -> bool:
    return isinstance(x, float) and math.isnan(x)


def _max_temp_c(state: dict[str, Any] | None) -> float | None:
    temps = (state or {}).get("temp_mc") or {}
    values = [float(v) / 1000.0 for v in temps.values() if isinstance(v, (int, float))]
    return max(values) if values else None


def _mc(value: object) -> float | None:
    return float(value) / 1000.0 if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _checks_frequency(heat: dict[str, Any]) -> bool:
    """Whether the driver checked the window's frequency (it read one: ``min_freq_khz`` is set)."""
    return isinstance(heat.get("min_freq_khz"), int)


def _wall_ms(state: dict[str, Any] | None, executions: int) -> float | None:
    """The op's wall time per execution from the driver's call durations: (measured call - warm-up
    call) / executions, both including the runner's start-up; None without a warm-up call."""
    warm, call = (state or {}).get("warmup_cs"), (state or {}).get("call_cs")
    if not isinstance(warm, int) or not isinstance(call, int) or executions < 1:
        return None
    return max(0.0, (call - warm) * 10.0 / executions)


def runner_result(
    parsed: dict[str, Any],
    state: dict[str, Any] | None,
    policy: MeasurePolicy,
    *,
    warmup_runs: int,
    runtime_version: str | None,
) -> dict[str, Any]:
    """The shim-shaped result record of an ``executor_runner`` call, built on the host.

    ``parsed`` is :func:`parse`'s output; the first ``warmup_runs`` executions are the in-process
    warm-up the driver added (see agent/driver.sh) and are dropped; the rest are judged against
    ``policy`` (robust CV, drift, temperature rise between the driver's ``state`` before and after).
    """
    from chamlab.agent.measure import judge, summarize

    samples = [float(x) for x in parsed["execute_ms"]]
    if len(samples) <= warmup_runs:
        raise MeasurementError(
            f"the ETDump holds {len(samples)} execution(s), not more than the {warmup_runs} warm-up "
            "execution(s): the runner did not run --num_executions times"
        )
    samples = samples[warmup_runs:]
    before, after = (state or {}).get("before"), (state or {}).get("after")
    heat = (state or {}).get("heat")
    heat = heat if isinstance(heat, dict) else None
    attempt = judge(
        samples,
        policy,
        warmup_runs=warmup_runs,
        temp_before_c=_max_temp_c(before),
        temp_after_c=_max_temp_c(after),
        throttled=throttled_reason(heat),
    )
    if heat is not None:
        checked = isinstance(heat.get("samples"), int) and heat["samples"] > 0
        if checked and attempt.throttled is None and _checks_frequency(heat):
            attempt.throttled = False
        attempt.temp_max_c = _mc(heat.get("temp_max_mc"))
        if heat.get("cool_below_mc"):
            attempt.cool_wait_s = float(heat.get("cool_wait_cs") or 0) / 100.0
    governors = sorted({str(v) for v in ((before or {}).get("governor") or {}).values() if v})
    return {
        "runner": "executor_runner",
        "samples_ms": samples,
        **summarize(samples),
        "n_samples": len(samples),
        "warmup_runs": warmup_runs,
        "robust_cv": attempt.robust_cv,
        "drift": attempt.drift,
        "unstable": bool(attempt.reasons),
        "unstable_reasons": attempt.reasons,
        "attempts": [attempt.to_json()],
        "affinity": None,
        "governor": ",".join(governors) or None,
        "freq_khz_before": (before or {}).get("freq_khz"),
        "freq_khz_after": (after or {}).get("freq_khz"),
        "temp_before_c": attempt.temp_before_c,
        "temp_after_c": attempt.temp_after_c,
        "battery_pct": (before or {}).get("battery_pct"),
        "charging": (before or {}).get("charging"),
        "runtime": "executorch",
        "runtime_version": runtime_version,
        "fingerprint": (state or {}).get("fingerprint") or None,
        "wall_ms_per_execution": _wall_ms(state, len(samples)),
        "throttled": attempt.throttled,
        "heat": heat,
        "energy": None,
    }
