"""Proxy fidelity: does the training oracle's proxy schedule rank architectures as a longer one does?

For one space (``--space``; ``--fit`` fits it to the data first, as ``adapt --fit`` does), ``--archs``
archs spanning the space: ``--pool`` archs drawn uniformly with ``--seed`` (one per network: archs that
build the same op list count once), sorted by MACs, cut into ``--archs`` equal strata, and the middle
arch of each taken. Each is trained with the proxy schedule (``--proxy``: the shipped default
:class:`~chamlab.chamnet.training.Schedule` with these fields replaced; default none) and with a
schedule ``--factor`` times longer: with ``--longer epochs`` (the default) the proxy's epochs times the
factor, everything else the same (the same training and validation examples, learning rate, batch);
with ``--longer data`` the proxy's ``max_train`` times the factor, everything else the same (the
proxy's training examples are the first of the longer schedule's, the validation examples the same:
a reference closer to a final training, which sees the whole training split, and one that does not
overfit a small subset), each training single-threaded,
``--workers`` archs at a time in worker processes (the most expensive first). The figure is Kendall's
tau between the two accuracies over the archs (target >= 0.6), with the proxy's training seconds per
arch. ``--subset N`` uses only the first N examples of a seeded permutation of the training files (the
result file says so). Results are written after every arch, and a re-run with the same arguments
continues where it stopped.

    python -m bench.proxy_fidelity --space macro-cifar10 --data /usr/share/datasets/fashion-mnist
    python -m bench.proxy_fidelity --space chamnet-mbv2 --fit --data /usr/share/datasets/fashion-mnist

"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import RESULTS, write_result
from chamlab.chamnet.spaces import SPACES
from chamlab.chamnet.spaces.base import Arch, SearchSpace
from chamlab.chamnet.training import FASHION_MNIST_DEBIAN, Schedule, load_dataset
from chamlab.chamnet.training.data import Dataset
from chamlab.chamnet.training.schedule import train

TARGET_TAU = 0.6


def spanning_archs(space: SearchSpace, n: int, pool: int, seed: int) -> list[Arch]:
    """``n`` archs spanning ``pool`` uniform draws (distinct networks) sorted by MACs: the middle arch of
    each of ``n`` equal strata (from the 1/(2n) to the 1 - 1/(2n) quantile)."""
    drawn: dict[Any, Arch] = {}
    for a in space.sample(np.random.default_rng(seed), pool):
        drawn.setdefault(space.equivalence_key(a), a)
    ranked = sorted(drawn.values(), key=lambda a: (space.macs(a), space.format(a)))
    n = min(n, len(ranked))
    picks = (((np.arange(n) + 0.5) / n) * len(ranked)).astype(int)  # the middle of n equal strata
    return [ranked[i] for i in dict.fromkeys(picks.tolist())]


def subset(data: Dataset, n: int | None, seed: int) -> Dataset:
    if n is None or n >= len(data):
        return data
    from chamlab.chamnet.training.data import _make

    keep = np.sort(np.random.default_rng((seed, 7)).permutation(len(data))[:n])
    return _make(f"{data.name}[subset {n}]", data.images[keep], data.labels[keep], data.classes)


def train_pair(
    space: SearchSpace,
    arch: Arch,
    source: str,
    n_subset: int | None,
    seed: int,
    proxy: Schedule,
    long: Schedule,
) -> dict[str, Any]:
    """What a worker runs: one arch trained with the proxy and with the longer schedule."""
    data = _dataset(source, n_subset, seed)
    load = os.getloadavg()[0]
    t = train(space, arch, data, proxy)
    run: dict[str, Any] = {
        "arch": space.format(arch),
        "macs": space.macs(arch),
        "proxy_accuracy": t.accuracy,
        "proxy_seconds": round(t.train_seconds, 2),
        "proxy_final_loss": t.final_loss,
        "train_examples": t.train_examples,
        "val_examples": t.val_examples,
        "load_avg_before": load,
    }
    t = train(space, arch, data, long)
    run.update(
        long_accuracy=t.accuracy,
        long_seconds=round(t.train_seconds, 2),
        long_final_loss=t.final_loss,
        load_avg_after=os.getloadavg()[0],
    )
    return run


@functools.lru_cache(maxsize=1)
def _dataset(source: str, n_subset: int | None, seed: int) -> Dataset:
    return subset(load_dataset(source, image_size=32), n_subset, seed)


def kendall(x: list[float], y: list[float]) -> tuple[float, float]:
    from scipy.stats import kendalltau

    tau, p = kendalltau(x, y)
    return float(tau), float(p)


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    done = [r for r in runs if "long_accuracy" in r]
    if len(done) < 3:
        return {"archs_done": len(done)}
    proxy = [r["proxy_accuracy"] for r in done]
    long = [r["long_accuracy"] for r in done]
    tau, p = kendall(proxy, long)
    from scipy.stats import spearmanr

    secs = [r["proxy_seconds"] for r in done]
    return {
        "archs_done": len(done),
        "kendall_tau": tau,
        "kendall_p": p,
        "spearman": float(spearmanr(proxy, long).statistic),
        "target_tau": TARGET_TAU,
        "target_met": tau >= TARGET_TAU,
        "proxy_seconds_median": float(np.median(secs)),
        "proxy_seconds_mean": float(np.mean(secs)),
        "proxy_seconds_max": float(np.max(secs)),
        "long_seconds_median": float(np.median([r["long_seconds"] for r in done])),
        "proxy_accuracy_range": [min(proxy), max(proxy)],
        "long_accuracy_range": [min(long), max(long)],
    }


def render(r: dict[str, Any], env: str) -> list[str]:
    """The docs/benchmarks.md section (called by bench/report.py)."""
    s, a = r.get("summary", {}), r["args"]
    default = Schedule()
    out = [
        "## "
        + (
            r.get("title")  # set by whoever ran it, where the command alone does not say what the run was
            or f"Proxy fidelity: {r['space']}" + (f" with `--proxy {a['proxy']}`" if a.get("proxy") else "")
        ),
        "",
        f"`{r['command']}`",
        "",
        env,
        "",
        f"{len(r['runs'])} archs spanning {r['space']} (the middle arch of each of {a['archs']} equal MAC "
        f"strata of {a['pool']} uniform draws, seed {a['seed']}) trained on {r['dataset']} ({r['examples']} "
        "examples"
        + (f", **a subset of {a['subset']} of the training images**" if a.get("subset") else "")
        + f") with the proxy schedule ({_sched(r['proxy'])}) and a schedule {a['factor']}x longer "
        + (
            f"({r['long']['max_train']} training examples at most, the proxy's among them, the rest the same)"
            if a.get("longer") == "data"
            else f"({r['long']['epochs']} epochs, the rest the same)"
        )
        + "; validation accuracy in percent on the "
        "schedule's validation split (the training files only)."
        + (
            f" **The proxy here trains on at most {r['proxy']['max_train']} training images** (the "
            f"shipped default: {default.max_train})."
            if r["proxy"]["max_train"] < default.max_train
            else ""
        )
        + f" Each training single-threaded, {a.get('workers', 1)} archs at a time in worker processes "
        "on the shared 2-core machine: seconds are wall time under the load listed.",
        "",
    ]
    if len(r["runs"]) < a["archs"]:
        out += [
            f"**Partial: {len(r['runs'])} of the {a['archs']} archs had finished both schedules when the run "
            "was stopped** (the most expensive were trained first; the same command continues it).",
            "",
        ]
    if "kendall_tau" in s:
        verdict = "met" if s["target_met"] else "**not met**"
        out += [
            f"**Kendall tau {s['kendall_tau']:.3f}** (p = {s['kendall_p']:.3g}; Spearman "
            f"{s['spearman']:.3f}) over {s['archs_done']} archs: target >= {s['target_tau']} {verdict}. "
            f"Proxy cost per arch: median {s['proxy_seconds_median']:.1f} s, mean "
            f"{s['proxy_seconds_mean']:.1f} s, max {s['proxy_seconds_max']:.1f} s (the longer schedule: "
            f"median {s['long_seconds_median']:.1f} s).",
            "",
        ]
    else:
        out += [f"_{s.get('archs_done', 0)} archs done: too few for a figure_", ""]
    out += [
        "| arch | MMACs | proxy % | proxy s | longer % | longer s | load avg |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in r["runs"]:
        long_acc = f"{run['long_accuracy']:.1f}" if "long_accuracy" in run else "-"
        long_s = f"{run['long_seconds']:.1f}" if "long_seconds" in run else "-"
        out.append(
            f"| `{run['arch']}` | {run['macs'] / 1e6:.1f} | {run['proxy_accuracy']:.1f} | "
            f"{run['proxy_seconds']:.1f} | {long_acc} | {long_s} | {run['load_avg_before']:.1f} |"
        )
    if r.get("note"):  # what the run's conditions were, added by whoever ran it
        out += ["", str(r["note"])]
    return out


def _sched(s: dict[str, Any]) -> str:
    return (
        f"{s.get('optimizer', 'sgd')} lr {s['lr']}, {s['epochs']} epoch(s), batch {s['batch_size']}, at most "
        f"{s['max_train']} training / {s['max_val']} validation examples, batch-norm statistics re-estimated "
        f"over {s.get('bn_batches', 0)} batches"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="macro-cifar10")
    p.add_argument("--fit", action="store_true", help="fit the space to --data (as adapt --fit)")
    p.add_argument("--data", default=str(FASHION_MNIST_DEBIAN))
    p.add_argument("--archs", type=int, default=12)
    p.add_argument("--pool", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--proxy", default="", help="proxy schedule overrides (as --schedule), default none")
    p.add_argument("--factor", type=int, default=4, help="the longer schedule's steps / the proxy's")
    p.add_argument(
        "--longer",
        choices=("epochs", "data"),
        default="epochs",
        help="what the longer schedule scales by --factor: the epochs, or the training examples (max_train)",
    )
    p.add_argument("--subset", type=int, default=None, help="use only this many training images")
    p.add_argument("--workers", type=int, default=1, help="archs trained at a time (worker processes)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.factor < 4:
        p.error("--factor must be at least 4 (the benchmark compares with a schedule >= 4x longer)")
    space = SPACES.get(args.space)
    if args.fit:
        from chamlab.host.workflows.oracles import fit_space

        space = fit_space(space, args.data)
    proxy = Schedule.parse(args.proxy)
    if args.longer == "data":
        long = dataclasses.replace(proxy, max_train=proxy.max_train * args.factor)
    else:
        long = dataclasses.replace(proxy, epochs=proxy.epochs * args.factor)
    data = _dataset(args.data, args.subset, args.seed)
    out = args.out or RESULTS / f"proxy_fidelity-{space.base_name}.json"
    # (a run scaling the epochs, the only kind before --longer, keeps the identity it had)
    ident = {k: v for k, v in vars(args).items() if k not in ("out", "workers", "longer")}
    if args.longer != "epochs":
        ident["longer"] = args.longer
    ident |= {"space_name": space.name, "proxy_schedule": proxy.to_json()}
    runs: list[dict[str, Any]] = []
    if out.is_file():  # continue a run with the same arguments
        old = json.loads(out.read_text())
        if old.get("ident") == ident:
            runs = [r for r in old["runs"] if "long_accuracy" in r]
    archs = spanning_archs(space, args.archs, args.pool, args.seed)
    print(
        f"{space.name}: {len(archs)} archs, proxy {proxy.to_json()}, "
        f"longer: {long.epochs} epochs over at most {long.max_train} examples",
        flush=True,
    )
    command = "python -m bench.proxy_fidelity " + " ".join(
        f"--{k.replace('_', '-')} {v}" if not isinstance(v, bool) else f"--{k}"
        for k, v in vars(args).items()
        if v not in (None, False, "") and k != "out" and not (k == "longer" and v == "epochs")
    )

    def save() -> None:
        write_result(
            "proxy_fidelity",
            {
                "ident": ident,
                "command": command,
                "space": space.name,
                "fit": space.fit_summary() or None,
                "dataset": data.name,
                "examples": len(data),
                "args": {k: v for k, v in vars(args).items() if k != "out"},
                "proxy": proxy.to_json(),
                "long": long.to_json(),
                "runs": runs,
                "summary": summary(runs),
            },
            out,
        )

    done = {r["arch"] for r in runs}
    todo = sorted((a for a in archs if space.format(a) not in done), key=space.macs, reverse=True)
    from chamlab.core.procs import process_pool, stop_pool

    pool = process_pool(max(1, args.workers))
    try:
        futures = [
            pool.submit(train_pair, space, a, args.data, args.subset, args.seed, proxy, long) for a in todo
        ]
        for fut in cf.as_completed(futures):
            finished = fut.result()
            runs.append(finished)
            runs.sort(key=lambda r: r["macs"])
            save()
            print(f"[{len(runs)}/{len(archs)}] {finished}", flush=True)
    finally:
        stop_pool(pool, abort=True)
    save()
    print(json.dumps(summary(runs), indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
