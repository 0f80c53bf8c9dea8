"""The `chamlab` console script end to end: real profile/predict/measure runs and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import chamlab, profile_macro

from chamlab.chamnet.spaces import SPACES
from chamlab.chamnet.spaces.macro_cifar10 import accuracy_table
from chamlab.operators import INVOCATION_PROBE

MACRO = SPACES.get("macro-cifar10")


def test_help_teaches_the_commands() -> None:
    res = chamlab("--help")
    assert res.returncode == 0
    for cmd in ("devices", "spaces", "profile", "predict", "measure"):
        assert cmd in res.stdout
    res = chamlab("profile", "--help", env={"COLUMNS": "200"})
    assert "--target" in res.stdout and "luts/<target>.parquet" in res.stdout


def test_devices_and_spaces_json(fast_devices: Path) -> None:
    res = chamlab("devices", "--devices", fast_devices, "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["source"] == str(fast_devices) and [d["name"] for d in data["devices"]] == ["test-cpu"]
    assert data["devices"][0]["measure"]["num_executions"] == 5
    spaces = {s["name"]: s for s in json.loads(chamlab("spaces", "--json").stdout)}
    assert spaces["macro-cifar10"]["size"] == "6561"
    assert spaces["chamnet-mbv2"]["references"]["chamnet-b"].startswith("r192_s24_")


def test_profile_builds_the_whole_lut(profiled_lut: tuple[Path, dict]) -> None:
    path, report = profiled_lut
    assert report["planned_ops"] == 19 and report["measured_ops"] == 19 and report["failed_ops"] == []
    df = pd.read_parquet(path)
    assert len(df) == 19 and set(df["device"]) == {"test-cpu"} and set(df["threads"]) == {1}
    assert INVOCATION_PROBE.key in set(df["op_key"])
    assert (df["n_samples"] >= 5).all() and (df["p50_ms"] > 0).all()
    assert df["run_id"].nunique() == 1 and df["runtime_version"].str.startswith("1.").all()


def test_profile_again_is_a_no_op(profiled_lut: tuple[Path, dict], fast_devices: Path) -> None:
    path, _ = profiled_lut
    before = path.read_bytes()
    res = profile_macro(path, fast_devices)
    assert res.returncode == 0, res.stderr
    assert "nothing to measure: all 19 ops are already in" in res.stderr
    assert path.read_bytes() == before


def test_predict_sums_the_lut(profiled_lut: tuple[Path, dict]) -> None:
    path, _ = profiled_lut
    arch = "01201201"
    res = chamlab("predict", "--space", "macro-cifar10", "--arch", arch, "--lut", path, "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    row = accuracy_table().set_index("arch").loc[arch]
    assert (out["macs"], out["params"]) == (row["macs"], row["params"])
    p50 = pd.read_parquet(path).set_index("op_key")["p50_ms"]
    ops = MACRO.ops(MACRO.parse(arch))
    assert out["lut_sum_ms"] == pytest.approx(sum(p50[o.key] for o in ops))
    overhead = p50[INVOCATION_PROBE.key]
    assert out["invocation_overhead_ms"] == pytest.approx(overhead)
    assert out["latency_ms"] == pytest.approx(out["lut_sum_ms"] - (len(ops) - 1) * overhead)
    assert sum(o["count"] for o in out["ops"]) == len(ops)
    assert out["lut"] == {
        "path": str(path),
        "target": "test-cpu",
        "backend": "xnnpack",
        "dtype": "fp32",
        "threads": 1,
        "batch": 1,
    }
    raw = json.loads(
        chamlab("predict", "-s", "macro-cifar10", "-a", arch, "--lut", path, "--raw", "--json").stdout
    )
    assert raw["latency_ms"] == pytest.approx(out["lut_sum_ms"]) and raw["invocation_overhead_ms"] is None


def test_predict_without_a_lut_gives_counts_only() -> None:
    res = chamlab("predict", "--space", "chamnet-mbv2", "--arch", "chamnet-a", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["latency_ms"] is None and out["ops"] is None and out["input_shape"] == [1, 3, 224, 224]
    assert out["arch"] == "r224_s32_1x24x1_4x40x2_6x48x3_4x96x4_4x160x3_4x248x3_6x480x1_l2016"


def test_measure_beside_the_prediction(profiled_lut: tuple[Path, dict], fast_devices: Path) -> None:
    path, _ = profiled_lut
    res = chamlab(
        "measure",
        "--target",
        "test-cpu",
        "--space",
        "macro-cifar10",
        "--arch",
        "all-k3t3",
        "--lut",
        path,
        "--devices",
        fast_devices,
        "--json",
        "--breakdown",
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["arch"] == "11111111" and out["measured_p50_ms"] > 0 and out["n_samples"] >= 5
    assert out["predicted_ms"] > 0
    assert out["error_pct"] == pytest.approx(
        100 * (out["predicted_ms"] - out["measured_p50_ms"]) / out["measured_p50_ms"]
    )
    assert Path(out["artifact"]).is_file()
    assert sum("Convolution" in e["event"] for e in out["breakdown"]) >= 8


def test_missing_lut_entries_name_the_ops_and_the_fix(tmp_path: Path, fast_devices: Path) -> None:
    lut = tmp_path / "small.parquet"
    res = profile_macro(lut, fast_devices, "--arch", "00000000")
    assert res.returncode == 0, res.stderr
    assert len(pd.read_parquet(lut)) == 7  # 6 ops of the all-identity net + the invocation probe
    res = chamlab("predict", "--space", "macro-cifar10", "--arch", "22222222", "--lut", lut)
    assert res.returncode == 2
    assert "has no entry for 6 distinct op(s) of this network: inverted_residual:" in res.stderr
    assert f"chamlab profile --target test-cpu --space macro-cifar10 --threads 1 --out {lut}" in res.stderr


def test_ambiguous_lut_asks_for_a_choice(profiled_lut: tuple[Path, dict], tmp_path: Path) -> None:
    path, _ = profiled_lut
    table = pq.read_table(path)
    other = table.set_column(
        table.schema.get_field_index("threads"),
        table.schema.field("threads"),
        pa.array([2] * table.num_rows, pa.int32()),
    )
    both = tmp_path / "both.parquet"
    pq.write_table(pa.concat_tables([table, other]).replace_schema_metadata(table.schema.metadata), both)
    res = chamlab("predict", "-s", "macro-cifar10", "-a", "01201201", "--lut", both)
    assert res.returncode == 2 and "holds several measurement sets" in res.stderr
    res = chamlab(
        "predict", "-s", "macro-cifar10", "-a", "01201201", "--lut", both, "--threads", "2", "--json"
    )
    assert res.returncode == 0 and json.loads(res.stdout)["lut"]["threads"] == 2
    res = chamlab("predict", "-s", "macro-cifar10", "-a", "01201201", "--lut", both, "--threads", "4")
    assert res.returncode == 2 and "no rows for target=* backend=* dtype=* threads=4" in res.stderr


def _one_line_error(res, code: int = 2) -> str:
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    assert res.stderr.startswith("error: ")
    assert "Traceback" not in res.stderr
    return res.stderr


def test_bad_names(fast_devices: Path) -> None:
    err = _one_line_error(
        chamlab("profile", "--target", "nope", "--space", "macro-cifar10", "--devices", fast_devices)
    )
    assert "unknown target 'nope'; known: test-cpu" in err
    err = _one_line_error(chamlab("predict", "--space", "imagenet", "--arch", "x"))
    assert "unknown search space 'imagenet'; known: chamnet-mbv2, macro-cifar10" in err
    err = _one_line_error(chamlab("predict", "--space", "macro-cifar10", "--arch", "0120120"))
    assert "macro-cifar10 arch '0120120' must be 8 digits" in err


def test_bad_devices_files(tmp_path: Path) -> None:
    bad = tmp_path / "devices.toml"
    bad.write_text("[devices.x]\ntreads = 2\n")
    err = _one_line_error(chamlab("devices", "--devices", bad))
    assert f"{bad}: [devices.x] key 'treads' is unknown" in err
    bad.write_text("[devices.x\n")
    assert "not valid TOML" in _one_line_error(chamlab("devices", "--devices", bad))
    assert "does not exist" in _one_line_error(chamlab("devices", "--devices", tmp_path / "none.toml"))
    env_err = _one_line_error(chamlab("devices", env={"CHAMLAB_DEVICES": str(bad)}))
    assert "not valid TOML" in env_err


def test_corrupt_or_foreign_lut_is_refused_and_untouched(tmp_path: Path, fast_devices: Path) -> None:
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"x": [1]}), foreign)
    before = foreign.read_bytes()
    err = _one_line_error(profile_macro(foreign, fast_devices))
    assert "not a chamlab LUT" in err
    assert foreign.read_bytes() == before
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1garbagePAR1")
    assert "not a readable Parquet file" in _one_line_error(
        chamlab("predict", "-s", "macro-cifar10", "-a", "01201201", "--lut", corrupt)
    )
    assert corrupt.read_bytes() == b"PAR1garbagePAR1"


def test_unwritable_output_fails_before_any_work(tmp_path: Path, fast_devices: Path) -> None:
    err = _one_line_error(profile_macro(tmp_path / "missing" / "lut.parquet", fast_devices))
    assert "does not exist" in err and "mkdir -p" in err
    assert not (tmp_path / "missing").exists()
    err = _one_line_error(profile_macro(tmp_path, fast_devices))
    assert "is a directory" in err


def test_usage_errors_exit_2() -> None:
    res = chamlab("predict", "--space", "macro-cifar10")
    assert res.returncode == 2 and "--arch" in res.stderr


def test_unknown_backend_or_dtype_is_bad_input_and_writes_nothing(tmp_path: Path, fast_devices: Path) -> None:
    for opt, bad, listed in (
        ("--backend", "xnnpak", "'xnnpack', 'portable', 'cuda', 'qnn'"),
        ("--dtype", "int4", "'fp32'"),
    ):
        args = ["profile", "-t", "test-cpu", "-s", "macro-cifar10", opt, bad]
        res = chamlab(*args, "--devices", fast_devices, cwd=tmp_path)
        assert res.returncode == 2, res.stderr
        assert f"'{bad}' is not one of {listed}" in " ".join(res.stderr.replace("│", " ").split())
    assert list(tmp_path.iterdir()) == [], "nothing may be written"


def test_predict_with_a_target_but_no_lut_names_the_file_and_the_fix(tmp_path: Path) -> None:
    err = _one_line_error(
        chamlab("predict", "-s", "macro-cifar10", "-a", "01201201", "--target", "local-cpu", cwd=tmp_path)
    )
    assert "no LUT for target local-cpu: looked for luts/local-cpu.parquet" in err
    assert "chamlab profile --target local-cpu --space macro-cifar10" in err


@pytest.mark.slow
def test_profile_batch_4_beside_batch_1_and_predict_chooses_by_batch(
    profiled_lut: tuple[Path, dict], tmp_path: Path, fast_devices: Path
) -> None:
    lut = tmp_path / "batches.parquet"
    lut.write_bytes(profiled_lut[0].read_bytes())
    res = profile_macro(lut, fast_devices, "--arch", "all-identity", "--batch", "4", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["measured_ops"] == 7  # nothing is skipped: batch 4 is a new set
    df = pd.read_parquet(lut)
    four = df[df["batch"] == 4]
    assert len(df) == 19 + 7 and len(four) == 7 and (df["batch"] == 1).sum() == 19
    assert all(shape[0] == 4 for shape in four["input_shape"])
    assert all(shape[0] == 1 for shape in df[df["batch"] == 1]["input_shape"])
    # the same op measured at batch 4 is its own row, from its own artifact (the batch is in the cache key)
    assert set(four["op_key"]) <= set(df[df["batch"] == 1]["op_key"])
    assert four["run_id"].iloc[0] not in set(df[df["batch"] == 1]["run_id"])

    def predicted(*extra: str) -> dict:
        res = chamlab("predict", "-s", "macro-cifar10", "-a", "all-identity", "--lut", lut, "--json", *extra)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    one, batch4 = predicted(), predicted("--batch", "4")
    assert one["lut"]["batch"] == 1 and batch4["lut"]["batch"] == 4
    assert one["input_shape"] == [1, 3, 32, 32] and batch4["input_shape"] == [4, 3, 32, 32]
    p50 = df.set_index(["op_key", "batch"])["p50_ms"]
    assert batch4["lut_sum_ms"] == pytest.approx(
        sum(p50[(o["op_key"], 4)] * o["count"] for o in batch4["ops"])
    )
    assert one["lut_sum_ms"] == pytest.approx(sum(p50[(o["op_key"], 1)] * o["count"] for o in one["ops"]))
    res = chamlab("predict", "-s", "macro-cifar10", "-a", "all-identity", "--lut", lut, "--batch", "2")
    assert res.returncode == 2 and "no rows for target=* backend=* dtype=* threads=* batch=2" in res.stderr
    args = ["measure", "-t", "test-cpu", "-s", "macro-cifar10", "-a", "all-identity", "--lut", lut]
    res = chamlab(*args, "--batch", "4", "--devices", fast_devices, "--json")
    assert res.returncode == 0, res.stderr
    m = json.loads(res.stdout)
    assert m["batch"] == 4 and m["predicted_ms"] == pytest.approx(batch4["latency_ms"])


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("predict", "--space", "no-such-space", "--arch", "x", "--json"), 2, "no-such-space"),
        (("lut", "show", "missing.parquet", "--json"), 2, "missing.parquet"),
        (("lut", "merge", "missing.parquet", "-o", "m.parquet", "--json"), 2, "missing.parquet"),
        (("devices", "--devices", "missing.toml", "--json"), 2, "missing.toml"),
        (
            ("farm", "run", "--space", "macro-cifar10", "--devices", "missing.toml", "--json"),
            2,
            "missing.toml",
        ),
    ],
)
def test_every_failing_command_under_json_prints_one_json_error(
    tmp_path: Path, args: tuple[str, ...], code: int, says: str
) -> None:
    """Before: stdout was empty, so a script reading it got nothing to parse."""
    res = chamlab(*args, cwd=tmp_path)
    assert res.returncode == code, res.stderr
    err = json.loads(res.stdout)
    assert set(err) == {"error", "hint", "exit_code"} and err["exit_code"] == code
    assert says in err["error"] and "error:" in res.stderr  # the human line stays on stderr


def test_config_text_with_terminal_escapes_is_not_put_on_the_terminal(tmp_path: Path) -> None:
    """Before: a description holding raw ESC bytes went verbatim to the terminal (an escape sequence
    can retitle the window, recolour or hide output)."""
    devices = tmp_path / "devices.toml"
    devices.write_text(
        '[devices.box]\ntransport = "local"\ndescription = "lab \\u001b]0;pwned\\u0007\\u001b[31mbox\\r"\n'
    )
    res = chamlab("devices", "--devices", devices, env={"COLUMNS": "200"})
    assert res.returncode == 0, res.stderr
    assert "\x1b" not in res.stdout and "\x07" not in res.stdout and "\r" not in res.stdout
    assert "lab \\x1b]0;pwned\\x07\\x1b[31mbox\\x0d" in res.stdout
    data = json.loads(chamlab("devices", "--devices", devices, "--json").stdout)
    assert data["devices"][0]["description"] == "lab \x1b]0;pwned\x07\x1b[31mbox\r"  # JSON: as written
