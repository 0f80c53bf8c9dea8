"""Runner shim: ``executor_runner``-compatible flags, driving the ExecuTorch Python runtime.

    python -m chamlab.agent.runner --model_path op.pte --num_executions 30 --cpu_threads 1 \\
        [--etdump_path op.etdp] [--result_path op.json] [policy flags]

Flags shared with ExecuTorch's ``executor_runner`` keep their meaning: ``--model_path``,
``--method_name``, ``--cpu_threads`` (0 = the runtime's default), ``--etdump_path``. ``--num_executions``
is the *minimum* number of timed executions (the measurement policy may run more to reach
``--min_time_ms``). The other flags are shim-only (``--help`` lists them).

Latency is the wall time of ``ExecuTorchMethod.execute()`` with inputs set once beforehand, so input
conversion and output copies are not timed (as in a C++ runner). When ``--etdump_path`` is given, a
*separate* profiled pass writes an ETDump (profiling adds overhead, so it never feeds the latency
samples); the host parses it with ``executorch.devtools.Inspector`` for a per-op breakdown.

On success the result is one line of JSON written atomically to ``--result_path`` (or stdout), and
the exit code is 0. On failure the message goes to stderr and the exit code is 1 (2 for bad flags).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
from importlib import metadata

from . import power, probe
from .measure import MeasurePolicy, measure, summarize

RESULT_SCHEMA = 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m chamlab.agent.runner",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model_path", required=True, help="ExecuTorch program (.pte)")
    p.add_argument("--method_name", default="forward")
    p.add_argument("--cpu_threads", type=int, default=0, help="runtime thread-pool size (0: runtime default)")
    p.add_argument("--etdump_path", default=None, help="write an ETDump of a separate profiled pass here")
    p.add_argument("--etdump_executions", type=int, default=10, help="executions in the profiled pass")
    p.add_argument("--result_path", default=None, help="write the JSON result here (default: stdout)")
    MeasurePolicy.add_arguments(p)  # --num_executions, --warmup_runs, ...: the policy's own fields
    p.add_argument("--cpufreq_root", default=probe.SysfsRoots.cpufreq_root)
    p.add_argument("--thermal_root", default=probe.SysfsRoots.thermal_root)
    p.add_argument("--power_supply_root", default=probe.SysfsRoots.power_supply_root)
    power.add_arguments(p)  # --power_reader etc.: energy above idle into the result's "energy"
    return p


def _inputs(meta):  # type: ignore[no-untyped-def]
    """Deterministic inputs for every input tensor of the method (floats: N(0, 1), others: zeros)."""
    import torch

    dtypes = {
        6: torch.float32,
        5: torch.float16,
        7: torch.float64,
        4: torch.int64,
        3: torch.int32,
        0: torch.uint8,
        1: torch.int8,
        11: torch.bool,
    }
    gen = torch.Generator().manual_seed(0)
    out = []
    for i in range(meta.num_inputs()):
        info = meta.input_tensor_meta(i)
        dtype = dtypes.get(info.dtype())
        if dtype is None:
            raise RuntimeError(
                f"input {i} has ExecuTorch dtype code {info.dtype()}, which the shim cannot fill"
            )
        shape = tuple(info.sizes())
        out.append(
            torch.randn(shape, generator=gen) if dtype.is_floating_point else torch.zeros(shape, dtype=dtype)
        )
    return out


def _write_json_atomic(path: str, obj: dict[str, object]) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(obj, separators=(",", ":")))
    os.replace(tmp, path)


def _runtime():  # type: ignore[no-untyped-def]
    """The ExecuTorch runtime bindings.

    ``portable_lib`` (the public module) imports all of ``executorch.exir`` for one warning class,
    which costs seconds per process (``bench/runtime_import.py`` measures it). The runner starts one
    process per op, so it loads the compiled ``_C`` extension directly (after torch, whose libraries
    it links against) and falls back to the public module if a release moves it.
    """
    import torch  # noqa: F401  (loads the libraries _C needs)

    try:
        from executorch.extension.pybindings import _C as rt
    except ImportError:
        from executorch.extension.pybindings import portable_lib as rt
    return rt


def run(args: argparse.Namespace) -> dict[str, object]:
    rt = _runtime()

    policy = MeasurePolicy.from_namespace(args)
    roots = probe.SysfsRoots(args.cpufreq_root, args.thermal_root, args.power_supply_root)
    if args.cpu_threads > 0:
        rt._unsafe_reset_threadpool(args.cpu_threads)
    threads = rt._threadpool_get_thread_count()
    started = _dt.datetime.now(_dt.UTC)

    program = rt._load_program(args.model_path)
    method = program.load_method(args.method_name)
    method.set_inputs(_inputs(method.method_meta()))
    result = measure(method.execute, policy, read_temp_c=lambda: probe.temperature_c(roots))
    kept = result.kept
    energy = power.energy_for_runner(args, method.execute) if args.power_reader else None

    etdump = None
    if args.etdump_path:
        module = rt._load_for_executorch(args.model_path, enable_etdump=True, debug_buffer_size=0)
        inputs = _inputs(module.method_meta(args.method_name))
        for _ in range(max(1, args.etdump_executions)):
            module.run_method(args.method_name, inputs)
        module.write_etdump_result_to_file(args.etdump_path)
        etdump = args.etdump_path

    return {
        "schema": RESULT_SCHEMA,
        "runner": "chamlab-shim",
        "model_path": args.model_path,
        "samples_ms": kept.samples_ms,
        **summarize(kept.samples_ms),
        "n_samples": len(kept.samples_ms),
        "warmup_runs": kept.warmup_runs,
        "robust_cv": kept.robust_cv,
        "drift": kept.drift,
        "unstable": result.unstable,
        "unstable_reasons": kept.reasons,
        "attempts": [a.to_json() for a in result.attempts],
        "threads": threads,
        "affinity": probe.affinity(),
        "governor": probe.governor(roots),
        "temp_before_c": kept.temp_before_c,
        "temp_after_c": kept.temp_after_c,
        "battery_pct": probe.battery_pct(roots),
        "runtime": "executorch",
        "runtime_version": metadata.version("executorch"),
        "fingerprint": probe.fingerprint(),
        "etdump_path": etdump,
        "energy": energy,
        "started_at": started.isoformat(),
        "ended_at": _dt.datetime.now(_dt.UTC).isoformat(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        MeasurePolicy.from_namespace(args)
    except ValueError as exc:
        parser.error(str(exc))  # exit 2: the host validates policies, so this is a usage error
    if not os.path.isfile(args.model_path):
        print(f"runner: model file {args.model_path} does not exist", file=sys.stderr)
        return 1
    try:
        result = run(args)
    except Exception as exc:  # report any runtime failure as data: the driver records the rc
        print(f"runner: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.result_path:
        _write_json_atomic(args.result_path, result)
    else:
        print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
