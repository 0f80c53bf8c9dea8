"""`chamlab search` end to end: macro-cifar10 with the frozen LUT, a user's CSV, bad inputs, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from conftest import REPO, chamlab

LUT = REPO / "bench" / "data" / "macro-cifar10-local-cpu.parquet"


def user_csv(tmp_path: Path) -> Path:
    rows = [
        {
            "width": w,
            "block": b,
            "accuracy": 50 + 8 * np.log(w) + (2.0 if b == "mb" else 0),
            "latency_ms": w * (1.5 if b == "mb" else 1.0),
            "_id": f"{w}{b}",
        }
        for w in range(1, 9)
        for b in ("conv", "mb", "fused")
    ]
    path = tmp_path / "bench.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_search_macro_cifar10_with_the_frozen_lut(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [
        "search",
        "--space",
        "macro-cifar10",
        "--latency",
        "0.3",
        "--lut",
        LUT,
        "--threads",
        "1",
        "--batch",
        "1",
        "--budget",
        "6",
        "--init",
        "4",
    ]
    res = chamlab(*args, "--out", out, "--json")
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    for key in (
        "arch",
        "predicted_accuracy",
        "oracle_accuracy",
        "predicted_latency_ms",
        "queries",
        "search_seconds",
    ):
        assert key in result
    assert result["queries"] == 6 and result["predicted_latency_ms"] <= 0.3
    assert len(result["arch"]) == 8 and 0 < result["oracle_accuracy"] < 100
    hist = pd.read_parquet(out / "history.parquet")
    assert hist["query"].tolist() == [1, 2, 3, 4, 5, 6]
    assert [f"layer{i}" for i in range(1, 9)] == list(hist.columns[1:9]) and "accuracy" in hist.columns
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "result.json").read_text())["arch"] == result["arch"]
    # the GP's file says what it holds; model.json is left for the exported program's manifest
    assert "lengthscales" in json.loads((out / "accuracy_gp.json").read_text())
    assert not (out / "model.json").exists()
    meta = json.loads(pq.read_schema(out / "history.parquet").metadata[b"chamlab.search"])
    assert meta["lut"]["threads"] == 1 and meta["lut"]["batch"] == 1

    res = chamlab(*args, "--out", out, "--seed", "1")
    assert res.returncode == 2 and "other arguments" in res.stderr and "seed" in res.stderr
    res = chamlab(*args, "--out", out, "--ask-every-name")  # the engine field that differs is named
    assert res.returncode == 2 and "engine.merge_equivalent: True there, False now" in res.stderr
    res = chamlab(*args, "--out", out, "--no-cost-feature")  # the default's GP had the cost as an input
    assert res.returncode == 2 and "engine.cost_feature: True there, False now" in res.stderr
    assert "--cost-feature" in res.stderr
    res = chamlab(*args[:-2], "--budget", "7", "--init", "4", "--out", out, "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["new_queries"] == 1


def test_the_engine_flags_default_to_the_engine_defaults() -> None:
    """search and adapt spell the engine's defaults as literals (the CLI imports no engine on start-up):
    they must stay the engine's."""
    import inspect

    from chamlab.chamnet.search import EngineConfig
    from chamlab.host.cli.adapt import adapt
    from chamlab.host.cli.search import search

    default = EngineConfig()
    for command in (search, adapt):
        params = inspect.signature(command).parameters
        for name in ("cost_feature", "local_search", "merge_equivalent"):
            assert params[name].default == getattr(default, name), (command.__name__, name)


def test_search_on_a_user_csv(tmp_path: Path) -> None:
    path = user_csv(tmp_path)
    out = tmp_path / "run"
    res = chamlab(
        "search",
        "--space",
        f"table:{path}",
        "--latency",
        "6",
        "--budget",
        "8",
        "--init",
        "4",
        "--out",
        out,
        "--json",
    )
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    assert result["queries"] == 8 and result["predicted_latency_ms"] <= 6
    assert set(result["values"]) == {"width", "block"}
    hist = pd.read_parquet(out / "history.parquet")
    assert list(hist.columns[:4]) == ["query", "width", "block", "accuracy"]
    res = chamlab(
        "search",
        "--space",
        f"table:{path}",
        "--latency",
        "6",
        "--out",
        tmp_path / "human",
        "--budget",
        "5",
        "--init",
        "3",
    )
    assert res.returncode == 0, res.stderr
    assert "after 5 queries" in res.stdout


def test_search_bad_inputs(tmp_path: Path) -> None:
    path = user_csv(tmp_path)
    cases = [
        (["--space", "chamnet-mbv2", "--latency", "5", "--lut", LUT], "no accuracy oracle"),
        (["--space", "macro-cifar10", "--latency", "5"], "needs a latency LUT"),
        (["--space", "macro-cifar10", "--latency", "5", "--lut", LUT, "--dims", "a"], "--dims applies"),
        (
            ["--space", "macro-cifar10", "--latency", "5", "--lut", LUT, "--energy", "3"],
            "no energy predictor",
        ),
        (["--space", f"table:{path}", "--latency", "5", "--energy", "3"], "no 'energy_mj' column"),
        (["--space", f"table:{path}", "--latency", "5", "--dims", "nope"], "names 'nope'"),
        (["--space", f"table:{tmp_path / 'none.csv'}", "--latency", "5"], "does not exist"),
        (["--space", f"table:{path}", "--latency", "5", "--sampler", "grid"], "unknown sampler"),
        (["--space", f"table:{path}", "--latency", "5", "--output-warp", "log"], "unknown output warp"),
        (["--space", f"table:{path}", "--latency", "5", "--accuracy", "int8"], "holds fp32 accuracy only"),
        (["--space", "macro-cifar10", "--latency", "5", "--lut", LUT, "--accuracy", "int8"], "fp32 accuracy"),
        (["--space", f"table:{path}", "--latency", "5", "--lut", LUT], "choose a network space's LUT rows"),
        (["--space", f"table:{path}", "--latency", "5", "--threads", "2"], "choose a network space's LUT"),
        (["--space", f"table:{path}", "--latency", "5", "--batch", "8"], "choose a network space's LUT"),
        # the LUT's rows are chosen as `chamlab predict` chooses them: the frozen LUT holds batch 1 only
        (["--space", "macro-cifar10", "--latency", "5", "--lut", LUT, "--batch", "8"], "batch=8"),
    ]
    for args, msg in cases:
        res = chamlab("search", *args, "--out", tmp_path / "never", env={"COLUMNS": "300"})
        assert res.returncode == 2, (args, res.stderr)
        assert msg in res.stderr, (args, res.stderr)
    assert not (tmp_path / "never").exists()


def test_a_run_made_before_the_gp_file_was_renamed_resumes(tmp_path: Path) -> None:
    """Its model.json (the GP's hyperparameters then) becomes accuracy_gp.json: model.json is left
    for the exported program's manifest."""
    out = tmp_path / "run"
    args = ["search", "--space", "macro-cifar10", "--latency", "0.3", "--lut", LUT, "--threads", "1"]
    args += ["--init", "4", "--out", out, "--json"]
    assert chamlab(*args, "--budget", "4").returncode == 0
    (out / "accuracy_gp.json").replace(out / "model.json")  # as a run made before wrote it
    res = chamlab(*args, "--budget", "5")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["new_queries"] == 1 and not (out / "model.json").exists()
    assert "lengthscales" in json.loads((out / "accuracy_gp.json").read_text())


def three_sets(tmp_path: Path) -> Path:
    """The frozen LUT's rows as local-cpu's at 1 thread fp32, 2 threads fp32 and 1 thread int8."""
    from lut_factory import write

    from chamlab.host.luts.lut import Lut, make_row

    lut = Lut.read(LUT)
    rows = []
    sets = ((1, "fp32", 1.0), (2, "fp32", 0.7), (1, "int8", 0.5))
    for mset in lut.combinations():
        for key, r in lut.select(mset).items():
            for threads, dtype, scale in sets:
                samples = [scale * x for x in r["samples_ms"]]
                when, fp = r["measured_at"], r["device_fingerprint"]
                where = {"device": "local-cpu", "backend": mset.backend, "dtype": dtype, "threads": threads}
                row = make_row(key, **where, samples_ms=samples, run_id="sets", measured_at=when,
                               device_fingerprint=fp)  # fmt: skip
                rows.append(row)
    return write(tmp_path / "three.parquet", rows)


def test_search_chooses_the_lut_rows_as_predict_does(tmp_path: Path) -> None:
    """A LUT with local-cpu's 1- and 2-thread fp32 rows and int8 rows: --target local-cpu takes the
    device's devices.toml defaults (fp32, 1 thread) in predict and search alike (search refused:
    'holds several measurement sets')."""
    lut = three_sets(tmp_path)
    pred = chamlab(
        "predict", "--space", "macro-cifar10", "--arch", "01201201", "--lut", lut, "--target", "local-cpu",
        "--json", cwd=tmp_path,
    )  # fmt: skip
    assert pred.returncode == 0, pred.stderr
    assert json.loads(pred.stdout)["lut"] | {"path": None} == {
        "path": None, "target": "local-cpu", "backend": "xnnpack", "dtype": "fp32", "threads": 1, "batch": 1,
    }  # fmt: skip
    out = tmp_path / "run"
    res = chamlab(
        "search", "--space", "macro-cifar10", "--latency", "0.3", "--lut", lut, "--target", "local-cpu",
        "--budget", "4", "--init", "4", "--out", out, "--json", cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    meta = json.loads(pq.read_schema(out / "history.parquet").metadata[b"chamlab.search"])
    assert meta["lut"]["threads"] == 1
    hist = pd.read_parquet(out / "history.parquet")
    # the latencies are the fp32 1-thread rows' (the 2-thread and int8 ones are scaled by 0.7 and 0.5)
    arch = tuple(int(hist.iloc[0][f"layer{i}"]) for i in range(1, 9))
    one = chamlab(
        "predict", "--space", "macro-cifar10", "--arch", "".join(map(str, arch)), "--lut", lut,
        "--target", "local-cpu", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert hist.iloc[0]["latency_ms"] == json.loads(one.stdout)["latency_ms"]


def test_search_refuses_what_adapt_refuses_before_creating_anything(tmp_path: Path) -> None:
    base = ["search", "--space", "macro-cifar10", "--latency", "0.3", "--lut", LUT, "--threads", "1"]
    out = tmp_path / "run"
    res = chamlab(*base, "--init", "20", "--budget", "12", "--out", out)
    assert res.returncode == 2 and "--budget 12 is below the initial design of --init 20" in res.stderr
    assert not out.exists()
    res = chamlab(*base, "--out", "/proc/self/x")  # an output that cannot be written: exit 2 as elsewhere
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith("error: search --out path /proc/self/x"), res.stderr


def test_ctrl_c_says_the_accuracy_queries_are_kept(tmp_path: Path) -> None:
    import signal

    from conftest import spawn_chamlab, wait_for

    out = tmp_path / "run"
    args = ["search", "--space", "macro-cifar10", "--latency", "0.3", "--lut", LUT, "--threads", "1"]
    proc = spawn_chamlab(*args, "--budget", "20", "--init", "4", "--out", out, env={})
    wait_for(lambda: (out / "history.parquet").exists(), "the first queries in the history", 300)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    said = " ".join(stderr.split())
    assert "the accuracy queries answered so far are kept in" in said and "finished ops" not in said
    assert "the same --out" in said
    res = chamlab(*args, "--budget", "20", "--init", "4", "--out", out, "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["new_queries"] < 20
