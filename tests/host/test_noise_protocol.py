"""The whole-network noise protocol (`measure_repeated`): interleaved separate sessions, disturbed
windows re-measured, the median kept. Sessions are simulated here (a real run is in
tests/host/test_calibrate.py: `calibrate --repeats 2`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chamlab.chamnet.spaces import SPACES
from chamlab.core.errors import InputError
from chamlab.host import api
from chamlab.host.measurement.networks import NetworkMeasurement

MACRO = SPACES.get("macro-cifar10")
ARCHS = [MACRO.parse(a) for a in ("00000000", "01201201", "22222222", "10101010")]
TRUE_MS = {a: 0.1 + 0.3 * sum(a) for a in ARCHS}


class Sessions:
    """Each call is one session; ``bursts`` maps (session index, arch) to a slowdown factor."""

    def __init__(self, bursts: dict[tuple[int, tuple], float]) -> None:  # type: ignore[type-arg]
        self.bursts = bursts
        self.orders: list[list[str]] = []

    def __call__(self, archs: list) -> list[NetworkMeasurement]:  # type: ignore[type-arg]
        i = len(self.orders)
        self.orders.append([MACRO.format(a) for a in archs])
        out = []
        for a in archs:
            ms = TRUE_MS[a] * self.bursts.get((i, a), 1.0)
            stats = {"p50_ms": ms, "p10_ms": ms, "p90_ms": ms, "mean_ms": ms}
            energy = {"reader": "rapl", "energy_mj": 2.0 * ms}
            out.append(NetworkMeasurement("n", stats, (ms,), False, (), Path("x.pte"), None, None, energy))
        return out


def test_interleaved_sessions_and_disturbed_windows_are_re_measured(tmp_path: Path) -> None:
    busy = ARCHS[1]
    sessions = Sessions({(1, busy): 1.4})  # a neighbour's burst in the second session
    policy = api.RepeatPolicy(repeats=3, redo_pct=3.0, max_redo=2)
    res = api.measure_repeated(None, MACRO, ARCHS, policy, measure=sessions)  # type: ignore[arg-type]
    names = [MACRO.format(a) for a in ARCHS]
    assert sessions.orders[:3] == [names, names[1:] + names[:1], names[2:] + names[:2]]  # rotated
    assert sessions.orders[3:] == [[MACRO.format(busy)]]  # only the disturbed window, once more
    by = dict(zip(names, res, strict=True))
    hit = by[MACRO.format(busy)]
    assert hit.first_p50s_ms[1] == pytest.approx(1.4 * TRUE_MS[busy]) and hit.first_cv_pct > 10
    assert hit.replaced_ms == (pytest.approx(1.4 * TRUE_MS[busy]),)
    assert hit.p50s_ms == pytest.approx((TRUE_MS[busy],) * 3) and hit.cv_pct == pytest.approx(0.0)
    assert hit.energy_mj == pytest.approx(2.0 * TRUE_MS[busy])
    for a in ARCHS:
        assert by[MACRO.format(a)].p50_ms == pytest.approx(TRUE_MS[a])
        assert len(by[MACRO.format(a)].p50s_ms) == 3


def test_a_steady_device_needs_no_extra_session_and_bad_policies_are_refused() -> None:
    sessions = Sessions({})
    res = api.measure_repeated(None, MACRO, ARCHS, api.RepeatPolicy(repeats=2), measure=sessions)  # type: ignore[arg-type]
    assert len(sessions.orders) == 2 and all(not r.replaced_ms for r in res)
    # a burst that persists through every re-measurement: at most max_redo extra passes
    stubborn = Sessions({(i, ARCHS[0]): 1.5 for i in range(1, 10)})
    res = api.measure_repeated(
        None,  # type: ignore[arg-type]
        MACRO,
        ARCHS,
        api.RepeatPolicy(repeats=3, max_redo=1),
        measure=stubborn,
    )
    assert len(stubborn.orders) == 3 + 1
    for bad in ({"repeats": 0}, {"redo_pct": 0.0}, {"max_redo": -1}):
        with pytest.raises(InputError):
            api.RepeatPolicy(**bad)  # type: ignore[arg-type]
