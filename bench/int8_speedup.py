"""int8 vs fp32 latency on this machine's CPU (XNNPACK), per op kind and for whole reference networks.

    python -m bench.int8_speedup [--threads 1 2] [--repeats 2] [--resolution 224] [--target local-cpu]
                                 [--out PATH]

1. Per op: the distinct ops of MobileNetV2-1.0 (``--resolution``) are profiled into ONE LUT with
   ``--dtype fp32`` and ``--dtype int8`` (side by side, as ``chamlab profile`` stores them), at each
   thread count; the ratio ``int8 p50 / fp32 p50`` is taken per op, then its median per op kind.
   The int8 plan also holds the quant_edge probes (the quantize/dequantize pair at each op boundary):
   reported as their share of the int8 LUT sum.
2. Whole networks: ChamNet-A..F and MobileNetV2-1.0 are measured (``api.measure_networks``, the
   same pipeline as ``chamlab measure``) as fp32 and int8 back to back, ``--repeats`` times at each
   thread count; the ratio is ``median int8 / median fp32``. Alternating the two within one run
   keeps the machine's (shared, loaded) state the same for both.
3. Interleaved (``--interleaved N``): the same exported programs loaded side by side in ONE process
   (ExecuTorch runtime, ``_unsafe_reset_threadpool(threads)``) and executed alternately, fp32 then
   int8, N rounds after 3 warm-up rounds. Both see the same moments of a fluctuating load; the
   *minimum* of each is its least-disturbed execution, and the ratio of the minimums is the figure
   to trust on a heavily loaded machine (medians are recorded too: there, a preempted execution
   lasts 10-50x its compute). ``--interleaved-only`` adds this part to an existing result file.

Writes ``bench/results/int8_speedup.json`` with the load average at the start and end of each part.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import RESULTS, write_result
from chamlab.chamnet.spaces import SPACES
from chamlab.chamnet.spaces.base import Arch, SearchSpace
from chamlab.host import api
from chamlab.host.luts.lut import Lut


def at_resolution(space: SearchSpace, arch: Arch, resolution: int) -> Arch:
    i = [d.name for d in space.dimensions].index("resolution")
    return (*arch[:i], resolution, *arch[i + 1 :])


def per_op(space: SearchSpace, arch: Arch, device: Any, threads: int, lut_path: Path) -> dict[str, Any]:
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    for dtype in ("fp32", "int8"):
        report = api.profile(
            api.resolve_run(device, threads=threads, dtype=dtype), space, [arch], out=lut_path
        )
        if report.failed:
            raise SystemExit(f"profiling {dtype} failed: {report.failed[:3]}")
    lut = Lut.read(lut_path)
    fp = lut.p50_by_key(api.MeasurementSet(device.name, "xnnpack", "fp32", threads, 1))
    q = lut.p50_by_key(api.MeasurementSet(device.name, "xnnpack", "int8", threads, 1))
    ops = space.ops(arch)
    rows = [
        {"op_key": op.key, "op_type": op.op_type, "fp32_ms": fp[op.key], "int8_ms": q[op.key]}
        for op in dict.fromkeys(ops)
    ]
    kinds: dict[str, list[float]] = {}
    for r in rows:
        r["ratio"] = r["int8_ms"] / r["fp32_ms"]
        kinds.setdefault(r["op_type"], []).append(r["ratio"])
    pred = api.predict_latency(
        space, arch, lut, lut_path, lut.choose(lut_path, dtype="int8", threads=threads)
    )
    return {
        "threads": threads,
        "ops": rows,
        "by_kind": {k: {"median_ratio": statistics.median(v), "n": len(v)} for k, v in sorted(kinds.items())},
        "int8_lut_sum_ms": pred.lut_sum_ms,
        "int8_quant_edge_ms": pred.quant_edge_ms,
        "quant_edge_share_of_sum": (pred.quant_edge_ms or 0.0) / pred.lut_sum_ms,
        "seconds": time.perf_counter() - t0,
        "load_avg_start": load_start,
        "load_avg_end": os.getloadavg(),
    }


def networks(
    space: SearchSpace, archs: dict[str, Arch], device: Any, threads: int, repeats: int
) -> dict[str, Any]:
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    runs: dict[str, dict[str, list[float]]] = {name: {"fp32": [], "int8": []} for name in archs}
    for _ in range(repeats):
        for dtype in ("fp32", "int8"):
            spec = api.resolve_run(device, threads=threads, dtype=dtype)
            measured = api.measure_networks(spec, space, list(archs.values()))
            for name, m in zip(archs, measured, strict=True):
                runs[name][dtype].append(m.p50_ms)
    out = {}
    for name, r in runs.items():
        f, q = statistics.median(r["fp32"]), statistics.median(r["int8"])
        out[name] = {"fp32_ms": r["fp32"], "int8_ms": r["int8"], "ratio": q / f}
    return {
        "threads": threads,
        "networks": out,
        "median_ratio": statistics.median(v["ratio"] for v in out.values()),
        "seconds": time.perf_counter() - t0,
        "load_avg_start": load_start,
        "load_avg_end": os.getloadavg(),
    }


def interleaved(space: SearchSpace, archs: dict[str, Arch], threads: int, rounds: int) -> dict[str, Any]:
    import torch
    from executorch.extension.pybindings import _C as rt

    from chamlab.operators import quant
    from chamlab.operators.export import ArtifactCache

    rt._unsafe_reset_threadpool(threads)
    load_start = os.getloadavg()
    cache, out = ArtifactCache(), {}
    for name, arch in archs.items():
        item = api.network_item(space, arch)
        f = cache.lookup(item, "xnnpack", "fp32")
        q = cache.lookup(item, "xnnpack", "int8", quant.DEFAULT_RECIPE)
        if f is None or q is None:
            raise SystemExit(f"{name}: export it first (run without --interleaved-only)")
        methods = [rt._load_program(str(a.pte_path)).load_method("forward") for a in (f, q)]
        x = torch.randn(space.input_shape(arch), generator=torch.Generator().manual_seed(0))
        times: list[list[float]] = [[], []]
        for r in range(rounds + 3):
            for i, m in enumerate(methods):
                t = time.perf_counter()
                m.call([x])
                if r >= 3:
                    times[i].append(1e3 * (time.perf_counter() - t))
        fp, q8 = min(times[0]), min(times[1])
        out[name] = {
            "fp32_min_ms": fp,
            "int8_min_ms": q8,
            "ratio_min": q8 / fp,
            "fp32_median_ms": statistics.median(times[0]),
            "int8_median_ms": statistics.median(times[1]),
            "ratio_median": statistics.median(times[1]) / statistics.median(times[0]),
        }
    return {
        "threads": threads,
        "rounds": rounds,
        "networks": out,
        "median_ratio_min": statistics.median(v["ratio_min"] for v in out.values()),
        "load_avg_start": load_start,
        "load_avg_end": os.getloadavg(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--target", default="local-cpu")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--interleaved", type=int, default=20, help="rounds of the interleaved part (0: none)")
    ap.add_argument("--interleaved-only", action="store_true", help="add part 3 to an existing result")
    args = ap.parse_args()

    device = api.load_registry().get(args.target)
    space = SPACES.get("chamnet-mbv2")
    refs = {n: at_resolution(space, a, args.resolution) for n, a in space.references.items()}
    if args.interleaved_only:
        import json

        path = args.out or RESULTS / "int8_speedup.json"
        previous = json.loads(path.read_text())
        previous.pop("benchmark")
        previous["environment_parts_1_2"] = previous.pop("environment")
        previous["interleaved"] = [interleaved(space, refs, t, args.interleaved) for t in args.threads]
        previous["args"] |= {"interleaved": args.interleaved}
        for r in previous["interleaved"]:
            print(
                f"threads={r['threads']} interleaved: "
                + ", ".join(f"{n} {v['ratio_min']:.2f}x" for n, v in r["networks"].items())
            )
        print(f"wrote {write_result('int8_speedup', previous, args.out)}")
        return
    ops_part, nets_part = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for threads in args.threads:
            r = per_op(space, refs["mobilenetv2-1.0"], device, threads, Path(tmp) / "lut.parquet")
            print(
                f"threads={threads} ops: "
                + ", ".join(f"{k} {v['median_ratio']:.2f}x" for k, v in r["by_kind"].items())
                + f"; quant_edge share of the int8 sum {r['quant_edge_share_of_sum']:.1%}",
                flush=True,
            )
            ops_part.append(r)
    payload = {"args": vars(args) | {"out": str(args.out)}, "per_op": ops_part, "networks": nets_part}
    write_result("int8_speedup", payload, args.out)  # the per-op part is kept if the rest is interrupted
    for threads in args.threads:
        r = networks(space, refs, device, threads, args.repeats)
        print(
            f"threads={threads} networks: "
            + ", ".join(f"{n} {v['ratio']:.2f}x" for n, v in r["networks"].items()),
            flush=True,
        )
        nets_part.append(r)
        path = write_result("int8_speedup", payload, args.out)
    if args.interleaved:
        payload["interleaved"] = [interleaved(space, refs, t, args.interleaved) for t in args.threads]
        path = write_result("int8_speedup", payload, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
