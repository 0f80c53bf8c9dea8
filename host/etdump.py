"""ETDump parsing on the host with ``executorch.devtools.Inspector``.

Used for the per-op breakdown inside a delegate (``--breakdown``) and, for runners that print no
timings (``executor_runner``), as the source of the latency samples themselves.
"""

from __future__ import annotations

import contextlib
import io
import math
import statistics
import warnings
from pathlib import Path
from typing import Any

from chamlab.core.errors import MeasurementError

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
