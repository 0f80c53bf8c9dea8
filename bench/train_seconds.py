"""Seconds to train one architecture with the training oracle's default proxy schedule.

For a few macro-cifar10 archs (the cheapest, a mixed one, the most expensive): train with the default
:class:`~chamlab.chamnet.training.Schedule` (2 epochs, at most 10,000 training and 2,000 validation
examples, batch 64, 1 torch thread) on scikit-learn's digits (1,797 8x8 images: 1,438 train / 359
validation) and on Fashion-MNIST (60,000 28x28 images: 10,000 train / 2,000 validation used), both
mapped onto the space's 3x32x32 input. One process, archs in turn: wall seconds of one single-threaded
training on this (shared, noisy) machine; the load average before each is recorded.

    python -m bench.train_seconds [--fashion-mnist /usr/share/datasets/fashion-mnist] [--archs A,B]
        [--fashion-archs A,B]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from bench._common import write_result
from chamlab.chamnet.spaces import SPACES
from chamlab.chamnet.training import FASHION_MNIST_DEBIAN, Schedule, load_dataset
from chamlab.chamnet.training.schedule import train

ARCHS = ("00000000", "01201201", "22222222")


def render(r: dict, env: str) -> list[str]:
    """The docs/benchmarks.md section (called by bench/report.py)."""
    s = r["schedule"]
    out = [
        "## Training oracle: seconds to train one arch (default proxy schedule)",
        "",
        "`python -m bench.train_seconds --fashion-mnist DIR`",
        "",
        env,
        "",
        f"macro-cifar10 archs trained in one process, one after another, with the default schedule "
        f"({s['epochs']} epochs, batch {s['batch_size']}, at most {s['max_train']} training and "
        f"{s['max_val']} validation examples, {s['threads']} torch thread), both datasets mapped onto the "
        "3x32x32 input. Wall seconds of a single-threaded training on a 2-core machine shared with other "
        "jobs: the load average before each training is listed; at loads far above 2 a training got a "
        "fraction of a core, so these are upper bounds. Accuracy is the proxy's validation accuracy "
        "(percent) after this short schedule, not a reported result.",
        "",
        "| dataset | arch | MMACs | train / val examples | train s | accuracy % | load avg |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in r["runs"]:
        out.append(
            f"| {run['dataset']} | `{run['arch']}` | {run['macs'] / 1e6:.1f} | {run['train_examples']} / "
            f"{run['val_examples']} | {run['train_seconds']:.1f} | {run['accuracy']:.1f} | "
            f"{run['load_avg_before']:.1f} |"
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fashion-mnist", type=Path, default=FASHION_MNIST_DEBIAN)
    p.add_argument("--archs", default=",".join(ARCHS), help="archs trained on digits")
    p.add_argument("--fashion-archs", default=",".join(ARCHS), help="archs trained on Fashion-MNIST")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    space = SPACES.get("macro-cifar10")
    schedule = Schedule()
    datasets = {"digits": ("digits", args.archs), "fashion-mnist": (args.fashion_mnist, args.fashion_archs)}
    runs = []
    for label, (source, archs) in datasets.items():
        t0 = time.perf_counter()
        data = load_dataset(source, image_size=32)
        load_s = time.perf_counter() - t0
        for text in archs.split(","):
            arch = space.parse(text)
            load = os.getloadavg()[0]
            trained = train(space, arch, data, schedule)
            runs.append(
                {
                    "dataset": label,
                    "examples": len(data),
                    "load_s": round(load_s, 3),
                    "arch": text,
                    "macs": space.macs(arch),
                    "train_examples": trained.train_examples,
                    "val_examples": trained.val_examples,
                    "train_seconds": round(trained.train_seconds, 2),
                    "accuracy": trained.accuracy,
                    "load_avg_before": load,
                }
            )
            print(runs[-1], flush=True)
    path = write_result("train_seconds", {"schedule": schedule.to_json(), "runs": runs}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
