"""Constraint fidelity of ``adapt``: the measured latency of the exported winner at 5 limits per space.

For each space on this machine's CPU (``local-cpu`` of devices.toml, renamed ``bench-cpu`` so that
its device lock is not the one other long benchmarks hold; 1 thread), the benchmark builds the
predictors once exactly as ``adapt`` does (``profile`` what the LUT lacks into a LUT of its own work
folder, then ``calibrate``), chooses 5 limits spread over the calibrated predictions, and runs
:func:`chamlab.host.api.adapt` at each: the winner is exported to ``model.pte`` and measured in 3
separate runs. Per limit it records the prediction, the 3 measured p50s, and whether the median is
over the limit (a *miss*) and whether even the fastest run is (a *miss beyond the noise floor*: the
run-to-run spread of the very program that was measured).

* macro-cifar10: the LUT starts from bench/data's frozen one (missing ops, if any, are profiled);
  accuracy from the shipped table; limits at the 10/30/50/70/90th percentile of the predicted
  latency of all 6,561 archs.
* chamnet-mbv2: the LUT starts empty (the reference archs' ops are profiled, then each winner's
  interpolated ops, adaptively); it has no accuracy oracle yet, so a *proxy* stands in (log10 of the
  MACs, recorded as such): it drives every winner to the limit, the hardest case for fidelity, and
  says nothing about accuracy. Limits spread evenly from the fastest to the slowest reference.

Resumable: the results file is rewritten after every limit and finished limits are skipped; the
work folder (LUTs, run folders) is kept. The machine is shared: each record carries the load.

    .venv/bin/python -m bench.constraint_fidelity [--space macro-cifar10|chamnet-mbv2|both]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import RESULTS, write_result

FROZEN = Path(__file__).resolve().parent / "data" / "macro-cifar10-local-cpu.parquet"
BUDGET = 30
PCTS = (10, 30, 50, 70, 90)


#: local-cpu under its own name: its device lock is then not shared with other benchmarks of the lab
#: that hold local-cpu's for long (the measurements still share this machine's CPUs; see the load)
DEVICE = "bench-cpu"


def devices_file(work: Path) -> Path:
    """devices.toml with ``bench-cpu``: ``local-cpu`` of the repository's devices.toml (or of the file
    ``CHAMLAB_DEVICES`` names, e.g. one that pins the runner with ``affinity``), renamed."""
    import tomllib

    repo = Path(os.environ.get("CHAMLAB_DEVICES") or Path(__file__).resolve().parent.parent / "devices.toml")
    local = tomllib.loads(repo.read_text())["devices"]["local-cpu"]
    lines = [f"[devices.{DEVICE}]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in local.items() if not isinstance(v, dict)]
    lines += [f"[devices.{DEVICE}.measure]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in local.get("measure", {}).items()]
    work.mkdir(parents=True, exist_ok=True)
    path = work / "devices.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def relabel(src: Path, dst: Path, device: str) -> None:
    """The rows of ``src`` (a local-cpu LUT of this machine) as ``device``'s."""
    from chamlab.host.luts.lut import Lut, make_row

    lut, rows = Lut.read(src), []
    for mset in lut.combinations():
        for key, r in lut.select(mset).items():
            rows.append(
                make_row(
                    key, device=device, backend=mset.backend, dtype=mset.dtype, threads=mset.threads,
                    samples_ms=r["samples_ms"], run_id=r["run_id"], measured_at=r["measured_at"],
                    device_fingerprint=r["device_fingerprint"], runtime_version=r["runtime_version"],
                )
            )  # fmt: skip
    Lut.empty().upsert(rows).write(dst)


class ProxyAccuracy:
    """Bench-only stand-in for an accuracy oracle: log10(MACs) (bigger networks 'more accurate')."""

    name = "proxy: log10(MACs) (bench only, not an accuracy)"

    def __init__(self, space: Any) -> None:
        self.space = space

    def __call__(self, archs: Sequence[tuple[int, ...]]) -> list[float]:
        return [math.log10(self.space.macs(a)) for a in archs]


def save(payload: dict[str, Any], name: str, out: Path) -> None:
    """Write ``payload`` with this space's entry; other spaces' entries are re-read from ``out`` first, so
    one process per space can run side by side (``--space``)."""
    if out.exists():
        others = json.loads(out.read_text()).get("spaces", {})
        payload["spaces"] = {**others, name: payload["spaces"][name]}
    write_result("constraint_fidelity", payload, out)


def limits_for(space: Any, model: Any) -> list[float]:
    if space.name == "macro-cifar10":
        lat = np.array([model.predict(a).latency_ms for a in space.enumerate()])
        return [round(float(np.percentile(lat, p)), 4) for p in PCTS]
    lat = np.array([model.predict(a).latency_ms for a in space.references.values()])
    return [round(float(x), 3) for x in np.linspace(lat.min() * 1.05, lat.max(), len(PCTS))]


def run_space(name: str, work: Path, payload: dict[str, Any], out: Path) -> None:
    from chamlab.host import api
    from chamlab.host.prediction.calibrate import lookup
    from chamlab.host.prediction.predict import LatencyModel
    from chamlab.host.workflows.adapt import AdaptOptions

    space = api.SPACES.get(name)
    spec = api.resolve_run(api.load_registry(devices_file(work)).get(DEVICE), threads=1)
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    lut_path = folder / f"{DEVICE}.parquet"
    if name == "macro-cifar10" and not lut_path.exists():
        relabel(FROZEN, lut_path, DEVICE)
    entry = payload["spaces"].setdefault(name, {"limits": {}, "setup": {}})
    t0 = time.perf_counter()
    archs, _ = api.default_archs(space)
    rep = api.profile(spec, space, archs, out=lut_path, command="bench/constraint_fidelity.py")
    lut = api.Lut.read(lut_path)
    mset = lut.choose(lut_path, device=DEVICE, threads=1, backend="xnnpack", dtype="fp32", batch=1)
    found = lookup(lut, mset, name)
    if found is None or found.stale:
        n = 10 if space.size <= api.EXHAUSTIVE_LIMIT else len(space.references)
        api.calibrate(spec, space, lut_path=lut_path, n=n, seed=0, repeats=payload["calibrate_repeats"])
        lut = api.Lut.read(lut_path)
    model = LatencyModel(space, lut, lut_path, mset, interpolate=space.size > api.EXHAUSTIVE_LIMIT)
    if not entry["setup"]:
        entry["setup"] = {
            "profiled_ops": len(rep.measured),
            "lut_ops": len(lut.p50_by_key(mset)),
            "setup_seconds": round(time.perf_counter() - t0, 1),
            "calibration": model.found.summary() if model.found else None,
            "calibrate_repeats": payload["calibrate_repeats"],
            "limits_ms": limits_for(space, model),
            "oracle": "space's own table" if name == "macro-cifar10" else ProxyAccuracy.name,
        }
        save(payload, name, out)
    oracle = None if name == "macro-cifar10" else ProxyAccuracy(space)
    for i, limit in enumerate(entry["setup"]["limits_ms"]):
        key = f"{limit:g}"
        if key in entry["limits"]:
            continue
        load = os.getloadavg()
        options = AdaptOptions(latency_ms=limit, budget=BUDGET, out=folder / f"limit-{i}", lut_path=lut_path)
        t1 = time.perf_counter()
        r = api.adapt(spec, space, options, oracle=oracle, command="bench/constraint_fidelity.py").to_json()
        runs = r["measured_runs_ms"]
        entry["limits"][key] = {
            "limit_ms": limit,
            "search_limit_ms": r["search_limit_ms"],
            "margin_pct": r["margin"]["margin_pct"],
            "arch": r["arch"],
            "predicted_ms": r["predicted_latency_ms"],
            "measured_ms": r["measured_latency_ms"],
            "runs_ms": runs,
            "error_pct": r["error_pct"],
            "over_limit_pct": 100.0 * (r["measured_latency_ms"] - limit) / limit,
            "miss": not r["constraint_met"],
            "miss_beyond_noise": min(runs) > limit,
            "unstable": r["unstable"],
            "oracle_accuracy": r["oracle_accuracy"],
            "search_seconds": r["search_seconds"],
            "search_method": r["search_method"],
            "profiled_ops": r["profiled_ops"],
            "seconds": r["seconds"],
            "wall_s": round(time.perf_counter() - t1, 1),
            "load_avg": load,
        }
        save(payload, name, out)
        print(json.dumps({name: entry["limits"][key]}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", choices=("macro-cifar10", "chamnet-mbv2", "both"), default="both")
    p.add_argument("--out", type=Path, default=RESULTS / "constraint_fidelity.json")
    p.add_argument("--work", type=Path, default=None, help="work folder (default: <cache>/bench/fidelity)")
    p.add_argument(
        "--calibrate-repeats",
        type=int,
        default=1,
        help="calibration under the noise protocol (`chamlab calibrate --repeats N`); 1 = as adapt does",
    )
    args = p.parse_args()
    from chamlab.core.files import cache_root

    work = args.work or cache_root() / "bench" / "constraint_fidelity"
    payload: dict[str, Any] = {"spaces": {}}
    if args.out.exists():
        payload = {k: v for k, v in json.loads(args.out.read_text()).items() if k in ("spaces",)}
    payload.update(
        {
            "device": f"this machine's CPU as {DEVICE} (local-cpu's devices.toml entry and measurement "
            "policy under its own name), 1 thread, xnnpack fp32",
            "budget": BUDGET,
            "work": str(work),
            "calibrate_repeats": args.calibrate_repeats,
        }
    )
    spaces = ("macro-cifar10", "chamnet-mbv2") if args.space == "both" else (args.space,)
    for name in spaces:
        run_space(name, work, payload, args.out)


if __name__ == "__main__":
    main()


def render(r: dict[str, Any], env: str) -> list[str]:
    """The section of docs/benchmarks.md (bench/report.py)."""
    out = [
        "## Constraint fidelity of `adapt`: the exported winner measured at 5 limits",
        "",
        "`python -m bench.constraint_fidelity`",
        "",
        env,
        "",
        f"Device: {r['device']}. Each limit is one `adapt` run (budget {r['budget']} oracle queries, "
        "default safety margin: 1.645 x the robust spread of the calibration's leave-one-out errors): "
        "the winner's "
        "`model.pte` measured in 3 separate runs. *miss*: the median is over the limit; *beyond noise*: "
        "even the fastest of the 3 runs is. Load: the 1-minute load average when each run started "
        "(2 cores shared with other engineers).",
        "",
    ]
    for name, e in r["spaces"].items():
        s = e.get("setup", {})
        cal = s.get("calibration") or {}
        loo = cal.get("loo") or {}
        out += [
            f"### {name}",
            "",
            f"Oracle: {s.get('oracle')}. LUT: {s.get('lut_ops')} ops ({s.get('profiled_ops')} profiled "
            f"here); calibration ({cal.get('model', 'huber-ridge-relative-v1')}, fitted "
            f"{cal.get('created_at')}) on {cal.get('n_networks')} networks, leave-one-out MAPE "
            f"{loo.get('mape_pct', float('nan')):.1f} %, max {loo.get('max_abs_pct', float('nan')):.1f} %.",
            "",
            "| limit ms | searched under ms | winner | predicted ms | measured ms (3 runs) | error % | "
            "over limit % | miss | beyond noise | search s | load |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        rows = sorted(e["limits"].values(), key=lambda x: x["limit_ms"])
        for x in rows:
            runs = ", ".join(f"{v:.3f}" for v in x["runs_ms"])
            out.append(
                f"| {x['limit_ms']:g} | {x['search_limit_ms']:.4g} | `{x['arch']}` | "
                f"{x['predicted_ms']:.4g} | "
                f"{x['measured_ms']:.4g} ({runs}) | {x['error_pct']:+.1f} | {x['over_limit_pct']:+.1f} | "
                f"{'yes' if x['miss'] else 'no'} | {'yes' if x['miss_beyond_noise'] else 'no'} | "
                f"{x['search_seconds']:.2f} | {x['load_avg'][0]:.1f} |"
            )
        if rows:
            misses = sum(x["miss"] for x in rows)
            beyond = sum(x["miss_beyond_noise"] for x in rows)
            out += [
                "",
                f"**{misses} of {len(rows)} limits missed, {beyond} beyond the noise floor**; median "
                f"prediction error {float(np.median([x['error_pct'] for x in rows])):+.1f} %, median "
                f"measured/limit {float(np.median([x['measured_ms'] / x['limit_ms'] for x in rows])):.3f}.",
                "",
            ]
        missing = len(s.get("limits_ms", [])) - len(rows)
        if missing > 0:
            out += ["", f"_{missing} of the limits not run yet (the benchmark resumes)._", ""]
    return out
