"""Energy predictor fidelity on a simulated device with a known power model (this machine has no
energy counter: no RAPL, no battery, no NVML).

    python -m bench.energy_fidelity [--archs 8] [--calibrate 5] [--seed 0] [--out PATH]

The device is ``local-cpu``'s runner with a RAPL tree prepared by ``tests/powersim.py``
(``CpuPowerModelRapl``): its counter advances at 4 W idle plus 10 W per CPU-second of the runners
reading it, so every op's and network's energy above idle is known (10 mJ per CPU-ms). Steps:
profile every macro-cifar10 op with the reader (energy above idle per op), ``calibrate`` on
``--calibrate`` spread networks (latency and energy), then measure ``--archs`` random networks that
calibration never saw, in one session, and compare their measured energy with the raw LUT energy
sum, the probe-corrected sum and the calibrated prediction. Writes
``bench/results/energy_fidelity.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._common import write_result
from chamlab.chamnet.spaces import SPACES
from chamlab.host import api
from chamlab.host.devices.config import load_registry
from tests.powersim import CpuPowerModelRapl

IDLE_W, W_PER_CORE = 4.0, 10.0


def summarize(pred: list[float], truth: list[float]) -> dict[str, float]:
    errs = [100.0 * (p - t) / t for p, t in zip(pred, truth, strict=True)]
    return {
        "n": len(errs),
        "within_10pct": sum(abs(e) <= 10 for e in errs) / len(errs),
        "within_5pct": sum(abs(e) <= 5 for e in errs) / len(errs),
        "mape_pct": statistics.fmean(abs(e) for e in errs),
        "mean_error_pct": statistics.fmean(errs),
        "max_abs_error_pct": max(abs(e) for e in errs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archs", type=int, default=8)
    ap.add_argument("--calibrate", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", default="local-cpu")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    space = SPACES.get("macro-cifar10")
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="chamlab-energy-") as tmp:
        root = Path(tmp) / "powercap"
        device = (
            load_registry()
            .get(args.target)
            .model_copy(update={"power_reader": "rapl", "power_root": str(root), "power_window_s": 0.5})
        )
        spec = api.resolve_run(device, threads=1)
        lut = Path(tmp) / "lut.parquet"
        with CpuPowerModelRapl(root, IDLE_W, W_PER_CORE):
            t0 = time.perf_counter()
            api.profile(spec, space, None, out=lut)
            profile_s = time.perf_counter() - t0
            cal = api.calibrate(spec, space, lut_path=lut, n=args.calibrate, seed=args.seed)
            seen = {n["name"] for n in cal.record["networks"]}
            rng = np.random.default_rng(args.seed + 7)
            tests = [a for a in space.sample(rng, 4 * args.archs) if space.format(a) not in seen]
            tests = list(dict.fromkeys(tests))[: args.archs]
            measured = api.measure_networks(spec, space, tests)
        table = api.Lut.read(lut)
        pairs = []
        for arch, m in zip(tests, measured, strict=True):
            mset = spec.measurement_set
            raw = api.predict_energy(space, arch, table, lut, mset, raw=True)
            full = api.predict_energy(space, arch, table, lut, mset)
            pairs.append(
                {
                    "arch": space.format(arch),
                    "measured_mj": m.energy_mj,
                    "measured_p50_ms": m.p50_ms,
                    "raw_mj": raw.energy_mj,
                    "corrected_mj": full.uncalibrated_mj if full.calibrated else full.energy_mj,
                    "calibrated_mj": full.energy_mj,
                    "calibrated": full.calibrated,
                }
            )
    truth = [p["measured_mj"] for p in pairs]
    result = {
        "args": vars(args) | {"out": str(args.out)},
        "model": {"idle_w": IDLE_W, "w_per_cpu_core": W_PER_CORE},
        "calibration": {
            "networks": sorted(seen),
            "loo": cal.energy_record["loo"] if cal.energy_record else None,
            "note": cal.energy_note,
        },
        "summaries": {
            v: summarize([p[f"{v}_mj"] for p in pairs], truth) for v in ("raw", "corrected", "calibrated")
        },
        "profile_s": profile_s,
        "load_avg_start": load_start,
        "load_avg_end": os.getloadavg(),
        "pairs": pairs,
    }
    for v, s in result["summaries"].items():
        print(f"{v:>10}: within +/-10% {s['within_10pct']:.0%}, MAPE {s['mape_pct']:.1f}% (n={s['n']})")
    print(f"wrote {write_result('energy_fidelity', result, args.out)}")


if __name__ == "__main__":
    main()
