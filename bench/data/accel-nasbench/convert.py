"""One-off conversion of the Accel-NASBench training dataset into the table space of the search suite.

Source: https://github.com/afzalxo/Accel-NASBench (Apache-2.0), file
``anb_dataset/anb_dataset_jsons.tar.gz``; README.md beside this script names the exact commit and
what each column means. The archive holds one JSON document per trained architecture
(``result_N.json``); only ``json.load`` reads it (no pickle, no code from the source is run).

    python bench/data/accel-nasbench/convert.py PATH/TO/anb_dataset_jsons.tar.gz

writes ``accel-nasbench.parquet`` beside this script (atomically) and prints the duplicate-pair
statistics quoted in README.md.
"""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
OUT = HERE / "accel-nasbench.parquet"
BLOCKS = 7
FIELDS = ("e", "k", "l", "se")  # expansion factor, kernel size, layers, squeeze-excite


def records(archive: Path) -> list[dict[str, object]]:
    out = []
    with tarfile.open(archive, "r:gz") as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            if not (member.isfile() and member.name.endswith(".json")):
                continue
            f = tar.extractfile(member)
            assert f is not None
            d = json.load(f)
            arch = d["architecture"]
            perf = d["platform_perf"]
            row: dict[str, object] = {
                f"b{b}_{x}": arch[f"block{b}_{x}"] for b in range(BLOCKS) for x in FIELDS
            }
            row["accuracy"] = float(d["metrics"]["val_top1"])
            row["latency_ms"] = perf["latency_zcu102"]["latency_mean"]
            row["_latency_vck190_ms"] = perf["latency_vck190"]["latency_mean"]
            row["_macs_m"] = float(d["model_info"]["macs"])
            row["_params_m"] = float(d["model_info"]["params"])
            row["_source"] = Path(member.name).name
            out.append(row)
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    df = pd.DataFrame(records(Path(argv[0])))
    dims = [c for c in df.columns if not c.startswith("_") and c not in ("accuracy", "latency_ms")]
    n_all = len(df)
    # rows without an FPGA latency measurement cannot be placed under a latency limit
    missing = df["latency_ms"].isna() | df["_latency_vck190_ms"].isna()
    df = df[~missing]
    # an architecture trained twice: its two accuracies estimate the noise of a single training run
    groups = df.groupby(dims, sort=False)
    dup = [g["accuracy"].to_numpy() for _, g in groups if len(g) > 1]
    diffs = np.array([a[0] - a[1] for a in dup if len(a) == 2])
    df = df.assign(_trainings=1)
    agg: dict[str, object] = {
        c: "mean" for c in ("accuracy", "latency_ms", "_latency_vck190_ms", "_macs_m", "_params_m")
    }
    agg["_trainings"] = "sum"
    agg["_source"] = "+".join
    df = df.groupby(dims, sort=False).agg(agg).reset_index()
    df = df[
        [
            *dims,
            "accuracy",
            "latency_ms",
            "_latency_vck190_ms",
            "_macs_m",
            "_params_m",
            "_trainings",
            "_source",
        ]
    ]
    df = df.sort_values("_source", kind="stable").reset_index(drop=True)
    tmp = OUT.with_suffix(".parquet.tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(OUT)
    sd = float(np.std(diffs, ddof=0) / np.sqrt(2)) if len(diffs) else float("nan")
    print(
        f"{n_all} documents, {int(missing.sum())} without an FPGA latency dropped, {len(df)} architectures; "
        f"{len(dup)} trained twice: |difference| median {np.median(np.abs(diffs)):.3f}, "
        f"max {np.max(np.abs(diffs)):.3f} pt; single-run noise sd ~ {sd:.3f} pt (rms difference / sqrt 2)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
