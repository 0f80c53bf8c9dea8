"""GPU check of the cuda backend: the torch-cuda runner through the real pipeline, on a CUDA machine.

Run it from the repository root of a source checkout, with nothing installed but torch (with CUDA),
numpy, pandas, pyarrow, typer, rich, pydantic and, for energy, pynvml (nvidia-ml-py)::

    python -m bench.gpu_check            # writes bench/results/gpu_check.json

It needs no ``pip install`` of chamlab: it links the source folders (core, host, agent, operators,
chamnet) into a temporary ``chamlab`` namespace package and puts that first on ``PYTHONPATH`` (for
itself and every child: export workers, the driver's runner). It also makes ``executorch``
unimportable for itself and those children, so a run proves that the cuda path (export of ``.pt2``
programs, the host, the POSIX driver, ``chamlab.agent.torch_runner``) never uses ExecuTorch.

What it measures, through ``chamlab.host.measurement.pipeline.run_items`` on a local ``runner = "torch-cuda"``
device: every op of three macro-cifar10 networks and the three whole networks, at batch 1 and 16,
timed as CUDA-graph replays and as eager launches (CUDA events); per network, the sum of its ops'
medians over the whole network's median (the LUT's additivity, see NOTES). Then one op's energy
above idle from NVML's total-energy counter (``power_reader = "nvml"``).

Without a CUDA device it stops at once with exit code 2 and says so; nothing is written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "host", "agent", "operators", "chamnet")
ARCHS = ("all-k3t3", "all-k5t6", "01201201")
SETTINGS = [(mode, batch) for batch in (1, 16) for mode in ("graph", "eager")]


def source_namespace(work: Path) -> str:
    """A ``chamlab`` namespace package of symlinks to the checkout's folders, and an ``executorch``
    that refuses to import; returns the PYTHONPATH prefix that selects both."""
    ns = work / "src" / "chamlab"
    ns.mkdir(parents=True)
    for name in PACKAGES:
        if not (REPO / name).is_dir():
            raise SystemExit(f"gpu_check: {REPO / name} is missing: run this from a chamlab source checkout")
        (ns / name).symlink_to(REPO / name, target_is_directory=True)
    blocker = work / "blocker" / "executorch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text(
        'raise ImportError("executorch is made unimportable by bench/gpu_check.py: '
        'the cuda path must not need it")\n'
    )
    return os.pathsep.join([str(work / "src"), str(blocker.parent)])


def require_cuda() -> Any:
    try:
        import torch
    except ImportError:
        print("gpu_check: torch is not installed: install torch with CUDA support", file=sys.stderr)
        raise SystemExit(2) from None
    if not torch.cuda.is_available():
        print(
            f"gpu_check: no CUDA device: torch {torch.__version__} "
            f"(CUDA build: {torch.version.cuda or 'none'}) sees no GPU here; "
            "run it on a machine with an NVIDIA GPU and its driver",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return torch


def nvml_facts() -> dict[str, Any]:
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        return {
            "driver": pynvml.nvmlSystemGetDriverVersion(),
            "power_w": pynvml.nvmlDeviceGetPowerUsage(h) / 1e3,
        }
    except Exception as exc:  # absent or unsupported: reported, not fatal
        return {"error": f"{type(exc).__name__}: {exc}"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "gpu_check.json")
    parser.add_argument("--num-executions", type=int, default=100)
    parser.add_argument(
        "--cpu-dry-run",
        action="store_true",
        help="check the script's plumbing without a GPU: eager on the CPU, wall clock, batch 1 only, "
        "no energy; writes --out (default: a temporary file), never the results",
    )
    args = parser.parse_args()
    if args.cpu_dry_run:
        import torch

        if args.out == parser.get_default("out"):
            args.out = Path(tempfile.mkdtemp(prefix="gpu-check-dry-")) / "gpu_check.json"
    else:
        torch = require_cuda()
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="chamlab-gpu-check-"))
    prefix = source_namespace(work)
    sys.path[:0] = prefix.split(os.pathsep)
    os.environ["PYTHONPATH"] = prefix + (
        os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""
    )
    os.environ["CHAMLAB_CACHE"] = str(work / "cache")  # fresh exports, the lab's cache untouched

    from chamlab.agent.measure import MeasurePolicy
    from chamlab.chamnet.spaces import SPACES
    from chamlab.core.files import atomic_write_text
    from chamlab.host.devices.transports import LocalConfig
    from chamlab.host.measurement.networks import network_item
    from chamlab.host.measurement.pipeline import resolve_run, run_items
    from chamlab.operators.export import ExportItem

    space = SPACES.get("macro-cifar10")
    archs = [space.references.get(a) or space.parse(a) for a in ARCHS]
    ops = {op.key: op for a in archs for op in space.ops(a)}
    policy = MeasurePolicy(
        num_executions=args.num_executions, warmup_runs=20, warmup_ms=50, min_time_ms=100, retries=1
    )
    settings = []
    where = "cpu" if args.cpu_dry_run else "cuda"
    for mode, batch in [("eager", 1)] if args.cpu_dry_run else SETTINGS:
        device = LocalConfig(
            name=f"gpu-{mode}",
            runner="torch-cuda",
            backend="cuda",
            torch_mode=mode,
            torch_device=where,
            measure=policy,
        )  # type: ignore[arg-type]
        spec = resolve_run(device, batch=batch)
        nets = [network_item(space, a, batch) for a in archs]
        items = [ExportItem.for_op(op, batch) for op in ops.values()] + nets
        t0 = time.perf_counter()
        run = run_items(spec, items)
        seconds = time.perf_counter() - t0
        run.finish()
        if run.failed:
            raise SystemExit(f"gpu_check: {len(run.failed)} item(s) failed, first: {run.failed[0]}")
        p50 = {m.item.name: statistics.median(m.samples_ms) for m in run.measured.values()}
        networks = []
        for arch, net in zip(archs, nets, strict=True):
            op_sum = sum(p50[op.key] for op in space.ops(arch))
            networks.append(
                {
                    "arch": space.format(arch),
                    "n_ops": len(space.ops(arch)),
                    "whole_p50_ms": p50[net.name],
                    "sum_of_ops_p50_ms": op_sum,
                    "sum_over_whole": op_sum / p50[net.name],
                }
            )
        unstable = sorted(
            k for k, m in ((m.item.name, m) for m in run.measured.values()) if m.result["unstable"]
        )
        timer = {m.result["timer"] for m in run.measured.values()}
        settings.append(
            {
                "mode": mode,
                "batch": batch,
                "timer": sorted(timer),
                "ops_p50_ms": {k: p50[k] for k in ops},
                "networks": networks,
                "unstable": unstable,
                "export_s": round(run.export_s, 2),
                "measure_s": round(run.measure_s, 2),
                "wall_s": round(seconds, 2),
            }
        )
        print(
            f"{mode:5s} batch {batch:2d}: {len(ops)} ops + {len(nets)} networks in {seconds:.1f} s; "
            "sum/whole " + ", ".join(f"{n['arch']} {n['sum_over_whole']:.3f}" for n in networks),
            flush=True,
        )

    # one op's energy above idle from NVML (graph replays, batch 16: the largest op of the set)
    energy: dict[str, Any]
    biggest = max(ops.values(), key=lambda op: op.macs)
    device = LocalConfig(
        name="gpu-nvml",
        runner="torch-cuda",
        backend="cuda",
        measure=policy,
        power_reader="nvml",
        power_window_s=2.0,
    )  # type: ignore[arg-type]
    spec = resolve_run(device, batch=16)
    run = run_items(spec, [ExportItem.for_op(biggest, 16)]) if not args.cpu_dry_run else None
    if run is None:
        energy = {"op_key": biggest.key, "error": "skipped: --cpu-dry-run"}
    elif run.failed:
        run.finish()
        energy = {"op_key": biggest.key, "error": run.failed[0][1]}
    else:
        run.finish()
        rec = next(iter(run.measured.values())).result.get("energy") or {}
        energy = {"op_key": biggest.key, "batch": 16, **{k: v for k, v in rec.items() if k != "trace"}}
        energy["trace_samples"] = len(rec.get("trace") or [])
    print(f"energy: {json.dumps({k: v for k, v in energy.items() if k != 'op_key'})}", flush=True)

    result = {
        "benchmark": "gpu_check",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "gpu": "none (--cpu-dry-run)" if args.cpu_dry_run else torch.cuda.get_device_name(0),
        "dry_run": args.cpu_dry_run,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "nvml": nvml_facts(),
        "executorch_importable": False,  # made unimportable above; the run would have failed otherwise
        "space": space.name,
        "archs": list(ARCHS),
        "policy": policy.to_json(),
        "settings": settings,
        "energy": energy,
        "elapsed_s": round(time.perf_counter() - t_start, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out} in {result['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
