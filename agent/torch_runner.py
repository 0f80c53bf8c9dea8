"""The ``torch-cuda`` runner: times one op's ``torch.export`` program on a GPU (stdlib + torch only).

    python -m chamlab.agent.torch_runner --model_path op.pt2 [--mode graph|eager] \\
        [--num_executions 30] [--warmup_runs 10] [--result_path op.json] [--device cuda:0]

The artifact is a ``torch.export`` program saved with ``torch.export.save`` by chamlab's own export
(``backend = "cuda"``); its input shape (batch included) is the one it was exported with.
**Loading runs code from the file: only load programs you exported yourself** (``torch.export.load``
deserialises a graph whose operators are executed; never point this runner at an untrusted file).

Timing: by default the op is captured once as a **CUDA graph** and each sample is one graph replay
between two CUDA events (``--mode graph``): on a GPU, eager launches of a small op cost more than the
op itself, and timing replays keeps the launch overhead of the Python interpreter out of the LUT (see
NOTES: batch-1 eager per-op sums scatter 0.72-1.40 of the whole network, CUDA graphs stay steady).
``--mode eager`` times the plain call between events. ``--device cpu`` (eager only, wall clock) lets the
code path run on machines without a GPU; it says ``"timer": "perf_counter"`` in the result.

The result is one line of JSON in the shim runner's shape (``samples_ms``, ``p50_ms``, ...), written
atomically to ``--result_path`` or printed; exit 0 on success, 1 on a runtime failure, 2 on bad flags.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import sys
import time
from typing import Any

RESULT_SCHEMA = 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m chamlab.agent.torch_runner", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--model_path", required=True, help="torch.export program (.pt2) exported by chamlab")
    p.add_argument("--mode", choices=("graph", "eager"), default="graph")
    p.add_argument("--device", default="cuda", help="torch device (cpu: eager, wall clock; for tests)")
    p.add_argument("--num_executions", type=int, default=30)
    p.add_argument("--warmup_runs", type=int, default=10)
    p.add_argument("--result_path", default=None)
    return p


def _example_inputs(program: Any, device: Any) -> list[Any]:
    """Deterministic N(0, 1) inputs of the program's user input shapes (batch included)."""
    import torch

    names = set(program.graph_signature.user_inputs)
    gen = torch.Generator().manual_seed(0)
    out = []
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in names:
            val = node.meta["val"]
            out.append(torch.randn(tuple(val.shape), generator=gen, dtype=val.dtype).to(device))
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    if on_cuda and not torch.cuda.is_available():
        raise RuntimeError("no CUDA device is available to torch on this machine")
    if not on_cuda and args.mode == "graph":
        raise RuntimeError("--mode graph needs a CUDA device; use --mode eager with --device cpu")
    program = torch.export.load(args.model_path)  # our own exports only: see the module docstring
    module = program.module().to(device)
    inputs = _example_inputs(program, device)
    started = _dt.datetime.now(_dt.UTC)
    samples: list[float] = []
    with torch.inference_mode():
        if on_cuda:
            torch.backends.cudnn.benchmark = True
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # warm-up on a side stream, as graph capture requires
                for _ in range(max(1, args.warmup_runs)):
                    module(*inputs)
            torch.cuda.current_stream().wait_stream(stream)
            torch.cuda.synchronize()
            step = lambda: module(*inputs)  # noqa: E731
            if args.mode == "graph":
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    module(*inputs)
                step = graph.replay
                for _ in range(max(1, args.warmup_runs)):
                    step()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            for _ in range(args.num_executions):
                start.record()
                step()
                end.record()
                end.synchronize()
                samples.append(float(start.elapsed_time(end)))
            name = torch.cuda.get_device_name(device)
        else:
            for _ in range(max(1, args.warmup_runs)):
                module(*inputs)
            for _ in range(args.num_executions):
                t0 = time.perf_counter()
                module(*inputs)
                samples.append((time.perf_counter() - t0) * 1e3)
            name = "cpu"
    return {
        "schema": RESULT_SCHEMA,
        "runner": "torch-cuda",
        "model_path": args.model_path,
        "mode": args.mode if on_cuda else "eager",
        "timer": "cuda-event" if on_cuda else "perf_counter",
        "device": name,
        "input_shapes": [list(x.shape) for x in inputs],
        "samples_ms": samples,
        "p50_ms": statistics.median(samples),
        "n_samples": len(samples),
        "runtime": "torch",
        "runtime_version": torch.__version__,
        "started_at": started.isoformat(),
        "ended_at": _dt.datetime.now(_dt.UTC).isoformat(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.num_executions < 1 or args.warmup_runs < 0:
        parser.error("--num_executions must be >= 1 and --warmup_runs >= 0")
    if not os.path.isfile(args.model_path):
        print(f"torch_runner: model file {args.model_path} does not exist", file=sys.stderr)
        return 1
    try:
        result = run(args)
    except Exception as exc:
        print(f"torch_runner: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    text = json.dumps(result, separators=(",", ":"))
    if args.result_path:
        tmp = f"{args.result_path}.tmp.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, args.result_path)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
