"""One-off conversion of NAS-Bench-Graph's light benchmark files into table spaces of the search suite.

Source: https://github.com/THUMNLab/NAS-Bench-Graph (Apache-2.0), ``nas-bench-graph/light/NAME.bench``;
README.md beside this script names the exact commit and what each column means.

The source files are Python pickles, the only form the authors publish them in. They are read here
with a restricted unpickler that refuses every global except the two numpy names a pickled numpy
float needs (``numpy.core.multiarray.scalar`` and ``numpy.dtype``): no other class can be built and
no code from the file can run. This script is a one-off conversion, never imported by chamlab.

    python bench/data/nas-bench-graph/convert.py DIR_WITH_BENCH_FILES cora arxiv

writes ``nas-bench-graph-NAME.parquet`` beside this script (atomically) for each NAME.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import Any

import pandas as pd

HERE = Path(__file__).resolve().parent
#: the source's link patterns (the input node of each of the 4 computing nodes) and operations, in
#: the order the source's integer keys index them (its ``link_list`` and ``gnn_list``)
LINKS = ("0000", "0001", "0011", "0012", "0013", "0111", "0112", "0122", "0123")
OPS = ("gat", "gcn", "gin", "cheb", "sage", "arma", "graph", "fc", "skip")
ALLOWED = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"), ("numpy", "dtype")}


class RestrictedUnpickler(pickle.Unpickler):
    """Builds plain containers and numpy scalars only; any other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name}")


def decode(key: int) -> tuple[str, str, str, str, str]:
    """The source key of a canonical architecture: link index, then the 4 op indices, base 10."""
    digits = []
    for _ in range(4):
        key, d = divmod(key, 10)
        digits.append(d)
    ops = [OPS[d] for d in reversed(digits)]
    return (LINKS[key], *ops)  # type: ignore[return-value]


def convert(path: Path) -> pd.DataFrame:
    with path.open("rb") as f:
        bench = RestrictedUnpickler(f).load()
    rows = []
    for key, info in bench.items():
        link, o1, o2, o3, o4 = decode(int(key))
        rows.append(
            {
                "link": link,
                "op1": o1,
                "op2": o2,
                "op3": o3,
                "op4": o4,
                "accuracy": 100.0 * float(info["perf"]),
                "latency_ms": 1000.0 * float(info["latency"]),
                "_valid_accuracy": 100.0 * float(info["valid_perf"]),
                "_params_m": float(info["para"]),
                "_key": int(key),
            }
        )
    return pd.DataFrame(rows).sort_values("_key", kind="stable").reset_index(drop=True)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    src = Path(argv[0])
    for name in argv[1:]:
        df = convert(src / f"{name}.bench")
        out = HERE / f"nas-bench-graph-{name}.parquet"
        tmp = out.with_suffix(".parquet.tmp")
        df.to_parquet(tmp, index=False)
        tmp.replace(out)
        print(f"{name}: {len(df)} architectures -> {out.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
