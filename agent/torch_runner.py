"""The ``torch-cuda`` runner: times ops' ``torch.export`` programs on a GPU (stdlib + torch only).

    python -m chamlab.agent.torch_runner --model_path op.pt2 [--mode graph|eager] [--device cuda:0] \\
        [--result_path op.json] [policy flags: --num_executions 30 --warmup_runs 5 --min_time_ms 300 ...]
    python -m chamlab.agent.torch_runner --tasks tasks.tsv --results results.jsonl ...   (batch mode)

The artifact is a ``torch.export`` program saved with ``torch.export.save`` by chamlab's own export
(``backend = "cuda"``); its input shape (batch included) is the one it was exported with.
**Loading runs code from the file: only load programs you exported yourself** (``torch.export.load``
deserialises a graph whose operators are executed; never point this runner at an untrusted file).
This module imports torch and chamlab's agent only, never ExecuTorch: a GPU machine needs no
ExecuTorch to measure.

Timing: by default the op is captured once as a **CUDA graph** and each sample is one graph replay
between two CUDA events (``--mode graph``): on a GPU, eager launches of a small op cost more than the
op itself, and timing replays keeps the launch overhead of the Python interpreter out of the LUT (see
NOTES: batch-1 eager per-op sums scatter 0.72-1.40 of the whole network, CUDA graphs stay steady).
``--mode eager`` times the plain call between events. ``--device cpu`` (eager only, wall clock) lets the
code path run on machines without a GPU; it says ``"timer": "perf_counter"`` in the result.

The measurement policy is the shim's (:class:`~chamlab.agent.measure.MeasurePolicy`, same flags):
warm-up, then samples until both ``num_executions`` and ``min_time_ms`` are reached, instability
(robust CV, drift) re-measured up to ``retries`` times. ``--power_reader nvml`` adds the op's energy
above idle from NVML's total-energy counter (:mod:`chamlab.agent.power`).

Batch mode (``--tasks``, what ``agent/driver.sh`` starts with ``BATCH=1``) is the shim's
(:func:`chamlab.agent.runner.run_batch`): one process measures every task, one crash-safe result line
per op. The result is one line of JSON in the shim runner's shape (``samples_ms``, ``p50_ms``, ...),
written atomically to ``--result_path`` or printed; exit 0 on success, 1 on a runtime failure, 2 on
bad flags.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
from typing import Any

from . import power, probe
from .measure import MeasurePolicy, measure
from .runner import result_record, run_batch, run_single


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m chamlab.agent.torch_runner", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--model_path", default=None, help="torch.export program (.pt2) exported by chamlab")
    p.add_argument("--mode", choices=("graph", "eager"), default="graph")
    p.add_argument("--device", default="cuda", help="torch device (cpu: eager, wall clock; for tests)")
    p.add_argument("--cpu_threads", type=int, default=0, help="torch's CPU threads (0: torch's default)")
    p.add_argument("--etdump_path", default=None, help="not supported: torch programs have no ETDump")
    p.add_argument("--result_path", default=None)
    MeasurePolicy.add_arguments(p)
    p.add_argument("--cpufreq_root", default=probe.SysfsRoots.cpufreq_root)
    p.add_argument("--thermal_root", default=probe.SysfsRoots.thermal_root)
    p.add_argument("--power_supply_root", default=probe.SysfsRoots.power_supply_root)
    b = p.add_argument_group("batch mode (driven by agent/driver.sh)")
    b.add_argument("--tasks", default=None, help="measure every task of this tasks.tsv in turn")
    b.add_argument("--results", default="results.jsonl")
    b.add_argument("--results_from", type=int, default=0)
    b.add_argument("--out_dir", default="out")
    b.add_argument("--etdump", action="store_true", help="not supported: torch programs have no ETDump")
    b.add_argument("--op_timeout_s", type=float, default=0.0)
    b.add_argument("--op_cooldown_s", type=float, default=0.0)
    power.add_arguments(p)
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


def measure_program(args: argparse.Namespace, model_path: str) -> dict[str, Any]:
    """Measure one ``.pt2`` program under ``args``' mode, device and policy."""
    import torch

    policy = MeasurePolicy.from_namespace(args)
    roots = probe.SysfsRoots(args.cpufreq_root, args.thermal_root, args.power_supply_root)
    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    if on_cuda and not torch.cuda.is_available():
        raise RuntimeError("no CUDA device is available to torch on this machine")
    if not on_cuda and args.mode == "graph":
        raise RuntimeError("--mode graph needs a CUDA device; use --mode eager with --device cpu")
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"model file {model_path} does not exist")
    program = torch.export.load(model_path)  # our own exports only: see the module docstring
    module = program.module().to(device)
    inputs = _example_inputs(program, device)
    started = _dt.datetime.now(_dt.UTC)
    with torch.inference_mode():
        if on_cuda:
            torch.backends.cudnn.benchmark = True
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # warm-up on a side stream, as graph capture requires
                for _ in range(max(1, policy.warmup_runs)):
                    module(*inputs)
            torch.cuda.current_stream().wait_stream(stream)
            torch.cuda.synchronize()
            step: Any = lambda: module(*inputs)  # noqa: E731
            if args.mode == "graph":
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    module(*inputs)
                step = graph.replay
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

            def time_once() -> float:
                start.record()
                step()
                end.record()
                end.synchronize()
                return float(start.elapsed_time(end))

            def run_once() -> None:
                step()
                torch.cuda.synchronize()

            result = measure(
                run_once, policy, time_once=time_once, read_temp_c=lambda: probe.temperature_c(roots)
            )
            name = torch.cuda.get_device_name(device)
        else:
            run_once = lambda: module(*inputs)  # noqa: E731
            result = measure(run_once, policy, read_temp_c=lambda: probe.temperature_c(roots))
            name = "cpu"
        energy = power.energy_for_runner(args, run_once) if args.power_reader else None
    return result_record(
        result,
        runner="torch-cuda",
        model_path=model_path,
        mode=args.mode if on_cuda else "eager",
        timer="cuda-event" if on_cuda else "perf_counter",
        device=name,
        input_shapes=[list(x.shape) for x in inputs],
        threads=torch.get_num_threads(),
        roots=roots,
        runtime="torch",
        runtime_version=f"torch {torch.__version__}" + (f" cuda {torch.version.cuda}" if on_cuda else ""),
        fingerprint=f"{probe.fingerprint()}|{name}",
        etdump_path=None,
        energy=energy,
        started=started,
    )


def _batch_measure(args: argparse.Namespace, model_path: str, etdump_path: str | None) -> dict[str, object]:
    return measure_program(args, model_path)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        MeasurePolicy.from_namespace(args)
    except ValueError as exc:
        parser.error(str(exc))
    if args.etdump_path or args.etdump:
        parser.error(
            "torch programs have no ETDump: --etdump_path/--etdump are not supported (no --breakdown)"
        )
    if args.cpu_threads > 0:
        import torch

        torch.set_num_threads(args.cpu_threads)
    if args.tasks is not None:
        return run_batch(args, _batch_measure)
    return run_single(parser, args, "torch_runner", lambda: measure_program(args, args.model_path))


if __name__ == "__main__":
    sys.exit(main())
