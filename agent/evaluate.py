"""On-device evaluation: run an ExecuTorch program over input batches the host mapped, keep the argmax.

    python -m chamlab.agent.evaluate --model_path model.pte --inputs DIR --predictions preds.npy \\
        [--cpu_threads N]

``DIR`` holds ``inputs-NNNN.npy`` files (read in name order), each a float32 array ``(n, C, H, W)``
whose ``n`` is a multiple of the program's batch: the host maps the images exactly as the training
oracle does and pads the last batch, so this side needs numpy and the ExecuTorch runtime, nothing of
the host's. ``--predictions`` receives the predicted class (int64) of every row, in order, written
atomically. The last line on standard output is ``chamlab-evaluate-done {json}`` (seconds, rows,
runtime version, thread-pool size). On failure the message goes to standard error and the exit code
is 1 (2 for bad flags).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from importlib import metadata

from .runner import _runtime

DONE = "chamlab-evaluate-done "
METHOD = "forward"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m chamlab.agent.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model_path", required=True, help="ExecuTorch program (.pte)")
    p.add_argument("--inputs", required=True, help="folder of inputs-NNNN.npy float32 batches")
    p.add_argument("--predictions", required=True, help="write the int64 argmax of every row here (.npy)")
    p.add_argument("--cpu_threads", type=int, default=0, help="runtime thread-pool size (0: runtime default)")
    return p


def evaluate(args: argparse.Namespace) -> dict[str, object]:
    import numpy as np
    import torch

    rt = _runtime()
    if args.cpu_threads > 0:
        rt._unsafe_reset_threadpool(args.cpu_threads)
    method = rt._load_program(args.model_path).load_method(METHOD)
    batch = int(method.method_meta().input_tensor_meta(0).sizes()[0])
    files = sorted(f for f in os.listdir(args.inputs) if f.startswith("inputs-") and f.endswith(".npy"))
    if not files:
        raise RuntimeError(f"no inputs-NNNN.npy file in {args.inputs}")
    t0 = time.perf_counter()
    preds = []
    for name in files:
        x = np.load(os.path.join(args.inputs, name), allow_pickle=False)
        if x.dtype != np.float32 or x.ndim != 4 or len(x) % batch:
            raise RuntimeError(
                f"{name}: expected float32 (n, C, H, W) with n a multiple of {batch}, got {x.dtype} {x.shape}"
            )
        for b in range(0, len(x), batch):
            [logits] = method.call([torch.from_numpy(x[b : b + batch])])
            preds.append(logits.argmax(dim=1).numpy().astype(np.int64))
    seconds = time.perf_counter() - t0
    out = np.concatenate(preds)
    tmp = f"{args.predictions}.tmp.{os.getpid()}.npy"
    np.save(tmp, out, allow_pickle=False)
    os.replace(tmp, args.predictions)
    return {
        "seconds": seconds,
        "rows": len(out),
        "runtime_version": metadata.version("executorch"),
        "threads": int(rt._threadpool_get_thread_count()),
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        done = evaluate(args)
    except Exception as exc:  # one line for the host, which names the device
        print(f"{type(exc).__name__}: {exc}".replace("\n", " "), file=sys.stderr)
        return 1
    print(DONE + json.dumps(done), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
