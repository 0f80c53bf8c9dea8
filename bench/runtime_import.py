"""Runner start-up: seconds to import the ExecuTorch runtime, public module vs the compiled extension.

    python -m bench.runtime_import [--repeats 5]

The runner starts one process per op, so its import cost is paid per op. Each variant is timed as a
whole fresh interpreter (`python -c ...`), median of the repeats. Writes
``bench/results/runtime_import.json``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench._common import write_result

VARIANTS = {
    "python only": "pass",
    "import torch": "import torch",
    "torch + pybindings._C (what the runner loads)": (
        "import torch; from executorch.extension.pybindings import _C"
    ),
    "pybindings.portable_lib (the public module)": "from executorch.extension.pybindings import portable_lib",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rows = []
    for name, code in VARIANTS.items():
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
        rows.append({"variant": name, "code": code, "median_s": statistics.median(times), "times_s": times})
        print(f"{statistics.median(times):6.2f} s  {name}", flush=True)
    path = write_result(
        "runtime_import", {"args": {**vars(args), "out": str(args.out)}, "variants": rows}, args.out
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
