"""A stand-in for ExecuTorch's C++ ``executor_runner`` (built with the event tracer), for tests.

No Android NDK here, so the real binary cannot be built: this script takes the real runner's flags
(gflags style, ``--flag value`` or ``--flag=value``: ``--model_path``, ``--num_executions``,
``--cpu_threads``, ``--method_name``, ``--etdump_path`` whose default is ``etdump.etdp`` as in
``executor_runner.cpp``), runs the program through the ExecuTorch Python runtime with ETDump
generation on, and writes a REAL ETDump where the real runner would. Like the real runner it prints
no timings. An unknown flag is an error (exit 1), as gflags makes it. With ``$CHAMLAB_STANDIN_BUSY``
set, that file exists while the executions run, holding ``<pid> <executions done>`` (updated every 50;
tests/powersim.py's busy device and tests/heatsim.py's hot one read it); with
``$CHAMLAB_STANDIN_LOG`` set, each call appends ``<start> <end> <cwd> <etdump path>`` (monotonic clock)
to that file.
"""

from __future__ import annotations

import os
import sys
import time

FLAGS = {"model_path": "model.pte", "num_executions": "1", "cpu_threads": "-1", "method_name": "forward"}
FLAGS["etdump_path"] = "etdump.etdp"


def parse(argv: list[str]) -> dict[str, str]:
    out = dict(FLAGS)
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.lstrip("-").partition("=")
        if not arg.startswith("--") or name not in FLAGS:
            print(f"ERROR: unknown command line flag '{arg}'", file=sys.stderr)
            sys.exit(1)
        if not eq:
            i += 1
            if i >= len(argv):
                print(f"ERROR: flag '{arg}' is missing its argument", file=sys.stderr)
                sys.exit(1)
            value = argv[i]
        out[name] = value
        i += 1
    return out


def _progress(busy: str, done: int) -> None:
    """``<pid> <executions done>`` into the busy file (tests/heatsim.py heats per execution)."""
    tmp = f"{busy}.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(f"{os.getpid()} {done}\n")
    os.replace(tmp, busy)


def main(argv: list[str]) -> int:
    flags = parse(argv)
    if not os.path.isfile(flags["model_path"]):  # the real runner fails here too, before any work
        print(f"E executor_runner: FileDataLoader::from() failed for {flags['model_path']}", file=sys.stderr)
        return 1
    import torch
    from executorch.extension.pybindings import _C as rt

    if int(flags["cpu_threads"]) > 0:
        rt._unsafe_reset_threadpool(int(flags["cpu_threads"]))
    print(f"I executor_runner: Model file {flags['model_path']} is loaded.")
    module = rt._load_for_executorch(flags["model_path"], enable_etdump=True, debug_buffer_size=0)
    meta = module.method_meta(flags["method_name"])
    gen = torch.Generator().manual_seed(0)
    inputs = [
        torch.randn(tuple(meta.input_tensor_meta(i).sizes()), generator=gen) for i in range(meta.num_inputs())
    ]
    busy = os.environ.get("CHAMLAB_STANDIN_BUSY")  # tests/powersim.py: the simulated device draws more
    if busy:
        _progress(busy, 0)
    t0 = time.monotonic()
    for i in range(int(flags["num_executions"])):
        module.run_method(flags["method_name"], inputs)
        if busy and i % 50 == 49:
            _progress(busy, i + 1)
    t1 = time.monotonic()
    if busy:
        os.remove(busy)
    calls = os.environ.get("CHAMLAB_STANDIN_LOG")  # bench/heat_gating.py: when each call executed
    if calls:
        with open(calls, "a", encoding="utf-8") as fh:
            fh.write(f"{t0} {t1} {os.getcwd()} {flags['etdump_path']}\n")
    print(f"I executor_runner: Model executed successfully {flags['num_executions']} time(s).")
    module.write_etdump_result_to_file(flags["etdump_path"])
    sys.stdout.flush()
    os._exit(0)  # end at once, as the C++ binary does (no interpreter teardown at idle power)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
