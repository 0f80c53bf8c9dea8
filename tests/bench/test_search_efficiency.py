"""The search benchmark's smoke run (CI): every method runs through the harness and the report renders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_smoke_run_and_render(tmp_path: Path) -> None:
    out = tmp_path / "search_efficiency.json"
    cmd = [sys.executable, "-m", "bench.search_efficiency", "--smoke", "--out", str(out)]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["smoke"] is True
    methods = r["summary"]["flops"]["50"]
    assert set(methods) == {"engine", "plain-gp-ei", "random", "regularized-evolution", "optuna-tpe"}
    for v in methods.values():
        assert v["seeds"] == 1 and v["median_regret50"] >= 0
    assert set(r["predictor_quality"]) >= {"uniform", "sobol", "imbalanced-sobol"}
    # the smoke run has one engine configuration and the main seed only: nothing to pair, no extra seeds
    assert r["summary_paired"] == {} and r["summary_extra_seeds"] == {}
    # resumable: a second run finds every run done and only re-renders
    res = subprocess.run(
        [*cmd, "--skip-quality"], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert res.returncode == 0 and "flops|50|engine|0 {" not in res.stdout
    from bench.search_efficiency import render

    text = "\n".join(render(json.loads(out.read_text()), "_env_"))
    assert "## Search sample efficiency" in text and "| engine |" in text


def _runs(hits: dict[str, int | None]) -> dict[str, dict[str, object]]:
    return {k: {"hit": h, "queries": 50, "regret50": 0.0, "seconds": 1.0} for k, h in hits.items()}


def test_paired_comparison_and_extra_seeds_against_hand_computed_values() -> None:
    from bench.search_efficiency import (
        extra_seeds,
        extra_seeds_table,
        paired_comparison,
        paired_table,
        summarise,
    )

    base = [10, 20, 30, None, 50, 60]  # "v1" stands for the default here; None: a miss, counted as 151
    other = [7, 19, 32, 147, 45, 60]  # differences -3, -1, +2, -4, -5, 0
    hits: dict[str, int | None] = {}
    for seed, (b, o) in enumerate(zip(base, other, strict=True)):
        hits[f"flops|25|v1|{seed}"], hits[f"flops|25|yj-init20|{seed}"] = b, o
    hits["flops|25|yj-init20|6"] = 5  # no default run to pair with: left out of the pairs
    hits["lut_latency|50|v1|0"] = hits["lut_latency|50|yj-init20|0"] = 12  # a tie
    hits["flops|25|v1|10"], hits["flops|25|v1|11"] = 15, None  # extra seeds: not in the main summary
    runs = _runs(hits)
    budgets = {"v1": 150, "yj-init20": 150}
    s = summarise(runs, budgets)
    assert s["flops"]["25"]["v1"]["seeds"] == 6 and s["flops"]["25"]["v1"]["median_hit"] == 40.0
    p = paired_comparison(runs, "v1", s)
    assert set(p) == {"yj-init20"}
    v = p["yj-init20"]
    # differences -3, -1, +2, -4, -5, 0, 0: the median is -1; Wilcoxon on the 5 non-zero ones: ranks
    # 3, 1, 2, 4, 5, W+ = 2, and 3 of the 2^5 sign patterns have W+ <= 2: p = 2 * 3/32 = 0.1875
    assert (v["pairs"], v["cells"], v["better"], v["worse"], v["tied"]) == (7, 2, 4, 1, 2)
    assert v["median_difference"] == -1.0 and v["mean_difference"] == round(-11 / 7, 2)
    assert v["wilcoxon_p"] == 0.188  # 0.1875 to 3 significant figures
    # 10-seed medians: flops p25 32 (7 seeds) vs 40, lut p50 12 vs 12: the worst cell is +0
    assert v["worst_cell_median_excess"] == 0.0
    row = "| yj-init20 | 2 | 7 | 4 / 1 / 2 | -1 | -1.6 | 0.19 | +0 |"
    assert row in paired_table(p, "v1", {"runs": runs})

    e = extra_seeds(runs)
    assert set(e) == {"v1"} and set(e["v1"]) == {"flops"} and set(e["v1"]["flops"]) == {"25"}
    x = e["v1"]["flops"]["25"]
    # all 8 seeds: 10, 15, 20, 30, 50, 60, 151, 151 -> median 40, 6 found
    assert (x["seeds"], x["median_hit"], x["found"]) == (8, 40.0, 6)
    lo, hi = x["bootstrap_median_95"]
    assert 10 <= lo <= 40 <= hi <= 151 and 0 < x["bootstrap_share_le_35"] < 1
    assert extra_seeds(runs) == e  # seeded: the same interval every time
    table = "\n".join(extra_seeds_table(e, s))
    assert f"| FLOPs p25 | 40 | 8 | 40 (6/8) | {lo:g} .. " in table
