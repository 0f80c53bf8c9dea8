"""Accuracy cost of int8 quantization on the training oracle's proxy task.

Ten macro-cifar10 networks, chosen seeded to span the space: 200 archs sampled with
``numpy.random.default_rng(SEED)``, sorted by MACs, and the ones at the 5th, 15th, ..., 95th
percentile taken (the very largest are left out: one of them trains for minutes on this machine).
Each is trained by the training oracle (:class:`~chamlab.chamnet.training.TrainingOracle`, process
executor, one worker, one torch thread) with the default proxy schedule (``--schedule`` overrides it;
the run's schedule is in its result file) on scikit-learn's digits (1,438 training / 359 validation
images mapped onto the 3x32x32 input), then quantized after training by the default recipe
(``xnnpack-int8-pc-v1``, calibrated on 8 seeded batches of the training split) and evaluated on the
same 359 validation images.
Drop = fp32 accuracy - int8 accuracy, in percentage points.

Resumable: trained networks stay in the oracle's cache (``$CHAMLAB_CACHE/training``) and the result
file is rewritten after each network (``complete: false`` until the last).

    python -m bench.int8_accuracy [--networks 10] [--schedule epochs=2] [--data digits] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from bench._common import write_result
from chamlab.chamnet.spaces import SPACES
from chamlab.chamnet.training import Schedule, TrainingOracle
from chamlab.operators.quant import DEFAULT_RECIPE

SEED = 0
POOL = 200
NAME = "int8_accuracy"


def choose(space, n: int) -> list[tuple]:  # type: ignore[no-untyped-def,type-arg]
    """``n`` archs at evenly spaced MAC percentiles (5th .. 95th) of a seeded sample of the space."""
    pool = sorted(dict.fromkeys(space.sample(np.random.default_rng(SEED), POOL)), key=space.macs)
    picks = [round((q / 100) * (len(pool) - 1)) for q in np.linspace(5, 95, n)]
    return [pool[i] for i in picks]


def render(r: dict, env: str) -> list[str]:
    """The docs/benchmarks.md section (called by bench/report.py)."""
    s = r["schedule"]
    rows = r["networks"]
    drops = [n["drop_pp"] for n in rows]
    loads = [n["load_avg_before"] for n in rows] or [float("nan")]
    out = [
        "## int8 accuracy cost on the training oracle's proxy task",
        "",
        f"`{r['command']}`",
        "",
        env,
        "",
        f"{len(rows)} macro-cifar10 networks chosen seeded across the space (MACs percentiles 5..95 of "
        f"{r['pool']} samples drawn with seed {r['seed']}), each trained by the training oracle on "
        f"{r['data']} with the proxy schedule ({s['epochs']} epochs, batch {s['batch_size']}, "
        f"lr {s['lr']}, at most {s['max_train']} training / {s['max_val']} validation examples), then "
        f"quantized after training by `{r['quant_recipe']}` (PT2E, XNNPACKQuantizer; calibrated on 8 seeded "
        "batches of the training split) and evaluated on the same validation split. Drop = fp32 - int8 "
        "in percentage points (positive: int8 is worse). Chance is 10 %. Accuracy figures do not depend "
        "on the machine's load; the seconds do: wall seconds of one torch thread on a 2-core machine shared "
        f"with other jobs (load average {min(loads):.1f}-{max(loads):.1f} before the networks), so upper "
        "bounds.",
        "",
        "| arch | MMACs | fp32 % | int8 % | drop (pp) | train s | quantize + eval s |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in rows:
        out.append(
            f"| `{n['arch']}` | {n['macs'] / 1e6:.1f} | {n['fp32']:.2f} | {n['int8']:.2f} | "
            f"{n['drop_pp']:+.2f} | {n['train_seconds']:.0f} | {n['quant_seconds']:.1f} |"
        )
    if drops:
        out += [
            "",
            f"Median drop {statistics.median(drops):+.2f} pp (min {min(drops):+.2f}, max {max(drops):+.2f}) "
            f"over {len(drops)} networks{'' if r.get('complete') else ' (run incomplete)'}; one validation "
            f"image is {100 / rows[0]['val_examples']:.2f} pp, so drops within about +/-1 pp are a few "
            "images either way.",
        ]
    if r.get("note"):  # what the run's conditions were, added by whoever ran it
        out += ["", str(r["note"])]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--networks", type=int, default=10)
    p.add_argument("--schedule", default="", help="NAME=VALUE,... over the default proxy schedule")
    p.add_argument("--data", default="digits")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    space = SPACES.get("macro-cifar10")
    schedule = Schedule.parse(args.schedule)
    command = "python -m bench.int8_accuracy" + "".join(
        f" --{k} {v}" for k, v in (("networks", args.networks), ("schedule", args.schedule)) if v
    )
    if args.data != "digits":
        command += f" --data {args.data}"
    rows: list[dict] = []
    payload = {
        "command": command,
        "seed": SEED,
        "pool": POOL,
        "data": args.data,
        "schedule": schedule.to_json(),
        "quant_recipe": DEFAULT_RECIPE,
        "networks": rows,
        "complete": False,
    }
    archs = choose(space, args.networks)
    oracle = TrainingOracle(space, args.data, schedule=schedule, workers=1, quant_recipe=DEFAULT_RECIPE)
    with oracle:
        for arch in archs:
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            oracle([arch])
            rec = oracle.record(arch)
            assert rec is not None and rec.accuracy_int8 is not None
            meta = oracle.cache.paths(rec.key)[0]
            import json

            int8 = json.loads(meta.read_text())["int8"][DEFAULT_RECIPE]
            rows.append(
                {
                    "arch": space.format(arch),
                    "macs": space.macs(arch),
                    "fp32": rec.accuracy,
                    "int8": rec.accuracy_int8,
                    "drop_pp": rec.accuracy - rec.accuracy_int8,
                    "train_seconds": rec.train_seconds,
                    "quant_seconds": float(int8["quant_seconds"]),
                    "cached": rec.cached,
                    "wall_s": round(time.perf_counter() - t0, 2),
                    "load_avg_before": load,
                    "val_examples": rec.val_examples,
                }
            )
            print(rows[-1], flush=True)
            write_result(NAME, payload, args.out)
    payload["complete"] = True
    drops = [r["drop_pp"] for r in rows]
    payload["median_drop_pp"] = statistics.median(drops)
    path = write_result(NAME, payload, args.out)
    print(f"wrote {path}; median drop {payload['median_drop_pp']:+.2f} pp")


if __name__ == "__main__":
    main()
