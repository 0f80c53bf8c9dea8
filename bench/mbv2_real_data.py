"""chamnet-mbv2 on real data: the training oracle's accuracies for the archs a BO search asks.

chamnet-mbv2 fitted to Fashion-MNIST (``--fit``, as ``adapt --fit`` does: 32-96 px, 10 classes) is
searched by the BO engine (:func:`chamlab.chamnet.search.search`, the engine ``adapt`` and ``search``
run) with the training oracle on the training files (never ``t10k``), under a MACs limit: the
``--percentile``-th percentile of the MACs of ``--pool`` uniform draws (a stand-in for a latency limit,
so that no LUT is needed). The figure: are the oracle's accuracies of the archs the BO asked above
chance (100 / classes) and spread? min / median / max over them. The proxy schedule is the shipped
default unless ``--schedule`` overrides fields; ``--subset N`` uses only N training images (the
result file says so). Trainings run in ``--workers`` worker processes, single-threaded each.

    python -m bench.mbv2_real_data --data /usr/share/datasets/fashion-mnist --budget 10
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import RESULTS, write_result
from chamlab.chamnet.search import EngineConfig, Problem, search
from chamlab.chamnet.spaces import SPACES
from chamlab.chamnet.training import FASHION_MNIST_DEBIAN, Schedule, TrainingOracle, load_dataset
from chamlab.chamnet.training.data import IDX_IMAGES, IDX_LABELS
from chamlab.host.workflows.oracles import fit_space


def subset_folder(source: str, n: int, seed: int, folder: Path) -> Path:
    """The first ``n`` images of a seeded permutation of an IDX dataset, written as IDX files."""
    data = load_dataset(source)
    keep = np.sort(np.random.default_rng((seed, 7)).permutation(len(data))[:n])
    images, labels = data.images[keep, 0], data.labels[keep].astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    side = images.shape[1:]
    (folder / f"{IDX_IMAGES}.gz").write_bytes(
        gzip.compress(struct.pack(">HBB3I", 0, 8, 3, len(keep), *side) + images.tobytes(), 1)
    )
    (folder / f"{IDX_LABELS}.gz").write_bytes(
        gzip.compress(struct.pack(">HBBI", 0, 8, 1, len(keep)) + labels.tobytes(), 1)
    )
    return folder


TITLE = "chamnet-mbv2 on real data: the training oracle's accuracies over the BO's archs"


def render(r: dict[str, Any], env: str) -> list[str]:
    """The docs/benchmarks.md section (called by bench/report.py)."""
    s, a = r["summary"], r["args"]
    sch = r["schedule"]
    chance = s["chance_pct"]
    out = [
        "## " + r.get("title", TITLE),
        "",
        f"`{r['command']}`",
        "",
        env,
        "",
        f"{r['space']} (chamnet-mbv2 fitted to the data) searched by the BO engine with the training oracle "
        f"on {r['dataset']} ({r['examples']} examples"
        + (f", **a subset of {a['subset']} of the training images**" if a.get("subset") else "")
        + f"; the training files only), {s['queries']} queries ({a['init']} initial), under a MACs limit "
        f"of {r['limit_macs'] / 1e6:.1f} M (the {a['percentile']}th percentile of {a['pool']} uniform "
        f"draws). Proxy schedule: {sch['optimizer']} lr {sch['lr']}, {sch['epochs']} epoch(s), batch "
        f"{sch['batch_size']}, at most {sch['max_train']} training / {sch['max_val']} validation examples. "
        f"Chance is {chance:.1f} %."
        + (
            f" **The proxy here trains on a subset of {sch['max_train']} training images** (the shipped "
            f"default uses {Schedule().max_train}), so that the benchmark fits the shared CPU."
            if sch["max_train"] < Schedule().max_train
            else ""
        ),
        "",
        f"**Validation accuracy over the {s['queries']} archs: min {s['min']:.1f} %, median "
        f"{s['median']:.1f} %, max {s['max']:.1f} %** (standard deviation {s['std']:.1f} points); "
        f"{s['above_chance']} of {s['queries']} above chance + 5 points. Median training time per arch "
        f"{s['train_seconds_median']:.0f} s ({a['workers']} worker processes on the shared 2-core machine); "
        f"whole run {r['seconds']:.0f} s.",
        "",
        "| # | arch | MMACs | accuracy % | train s |",
        "|---|---|---|---|---|",
    ]
    for i, q in enumerate(r["queries"], 1):
        mmacs, acc, secs = q["macs"] / 1e6, q["accuracy"], q["train_seconds"]
        out.append(f"| {i} | `{q['arch']}` | {mmacs:.1f} | {acc:.1f} | {secs:.0f} |")
    if r.get("note"):  # what the run's conditions were, added by whoever ran it
        out += ["", str(r["note"])]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(FASHION_MNIST_DEBIAN))
    p.add_argument("--budget", type=int, default=10)
    p.add_argument("--init", type=int, default=6)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--percentile", type=float, default=50.0)
    p.add_argument("--pool", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--schedule", default="", help="proxy schedule overrides (as --schedule)")
    p.add_argument("--subset", type=int, default=None, help="use only this many training images")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    t0 = time.perf_counter()
    space = fit_space(SPACES.get("chamnet-mbv2"), args.data)
    macs = [space.macs(a) for a in space.sample(np.random.default_rng(args.seed), args.pool)]
    limit = float(np.percentile(macs, args.percentile))
    schedule = Schedule.parse(args.schedule)
    records: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="mbv2-real-") as tmp:
        data = args.data
        if args.subset:
            data = str(subset_folder(args.data, args.subset, args.seed, Path(tmp) / "data"))

        def on_result(arch: Any, rec: Any) -> None:
            text = space.format(arch)
            records[text] = {
                "arch": text,
                "macs": space.macs(arch),
                "accuracy": rec.accuracy,
                "accuracy_int8": rec.accuracy_int8,
                "train_seconds": rec.train_seconds,
                "cached": rec.cached,
                "load_avg": os.getloadavg()[0],
            }
            print(f"[{len(records)}/{args.budget}] {records[text]}", flush=True)

        with TrainingOracle(
            space, data, schedule=schedule, workers=args.workers, on_result=on_result
        ) as oracle:
            dataset = oracle.dataset
            problem = Problem(space, oracle, {"macs": lambda a: float(space.macs(a))}, {"macs": limit})
            config = EngineConfig(n_init=args.init, batch_size=args.workers)
            result = search(problem, budget=args.budget, seed=args.seed, config=config, plot=False)
    queries = list(records.values())
    acc = np.array([q["accuracy"] for q in queries])
    chance = 100.0 / dataset.num_classes
    summary = {
        "queries": len(queries),
        "min": float(acc.min()),
        "median": float(np.median(acc)),
        "max": float(acc.max()),
        "std": float(acc.std()),
        "chance_pct": chance,
        "above_chance": int((acc > chance + 5).sum()),
        "train_seconds_median": float(np.median([q["train_seconds"] for q in queries])),
        "best_arch": result.arch,
    }
    command = "python -m bench.mbv2_real_data " + " ".join(
        f"--{k} {v}" for k, v in vars(args).items() if v not in (None, "") and k != "out"
    )
    path = write_result(
        "mbv2_real_data",
        {
            "command": command,
            "space": space.name,
            "fit": space.fit_summary(),
            "dataset": args.data + (f" (subset of {args.subset})" if args.subset else ""),
            "examples": len(dataset),
            "args": {k: v for k, v in vars(args).items() if k != "out"},
            "schedule": schedule.to_json(),
            "limit_macs": limit,
            "queries": queries,
            "summary": summary,
            "seconds": time.perf_counter() - t0,
        },
        args.out or RESULTS / "mbv2_real_data.json",
    )
    print(json.dumps(summary, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
