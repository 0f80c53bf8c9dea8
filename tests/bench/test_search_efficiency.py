"""The search benchmark's smoke run (CI): every method runs through the harness and the report renders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_smoke_run_and_render(tmp_path: Path) -> None:
    out = tmp_path / "search_efficiency.json"
    cmd = [sys.executable, str(REPO / "bench" / "search_efficiency.py"), "--smoke", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["smoke"] is True
    methods = r["summary"]["flops"]["50"]
    assert set(methods) == {"engine", "plain-gp-ei", "random", "regularized-evolution", "optuna-tpe"}
    for v in methods.values():
        assert v["seeds"] == 1 and v["median_regret50"] >= 0
    assert set(r["predictor_quality"]) >= {"uniform", "sobol", "imbalanced-sobol"}
    # resumable: a second run finds every run done and only re-renders
    res = subprocess.run([*cmd, "--skip-quality"], capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0 and "flops|50|engine|0 {" not in res.stdout
    sys.path.insert(0, str(REPO / "bench"))
    from search_efficiency import render

    text = "\n".join(render(json.loads(out.read_text()), "_env_"))
    assert "## Search sample efficiency" in text and "| engine |" in text
