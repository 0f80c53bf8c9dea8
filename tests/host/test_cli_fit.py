"""Fitted spaces on the command line: `--space NAME@KEY=VALUE`, `--fit`, their LUT rows, their manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO, chamlab, write_idx
from lut_factory import row, write

from chamlab.chamnet.spaces import SPACES

LUT = REPO / "bench" / "data" / "macro-cifar10-local-cpu.parquet"


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_spaces_lists_the_parameters() -> None:
    res = chamlab("spaces", "--json")
    assert res.returncode == 0, res.stderr
    spaces = {s["name"]: s for s in json.loads(res.stdout)}
    assert set(spaces["chamnet-mbv2"]["parameters"]) == {"res", "classes"}
    assert spaces["chamnet-mbv2"]["fit"] == {"resolution": list(range(96, 225, 16)), "classes": 1000}
    assert spaces["macro-cifar10"]["fit"] == {"resolution": [32], "classes": 10}
    text = chamlab("spaces", env={"COLUMNS": "200"}).stdout
    assert "--space chamnet-mbv2@res=..." in text and "--space macro-cifar10@classes=..." in text


def test_predict_takes_a_fitted_space_by_name() -> None:
    res = chamlab("predict", "--space", "chamnet-mbv2@res=32-96,classes=10", "--arch", "chamnet-a", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["input_shape"] == [1, 3, 96, 96]  # the published chamnet-a at the grid's top
    assert out["arch"].startswith("r96_s32_")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--space", "chamnet-mbv2@res=33-96"], "--space chamnet-mbv2@res=33-96: res=33-96: write LO-HI"),
        (
            ["--space", "chamnet-mbv2@size=3"],
            "chamnet-mbv2 has no parameter 'size' (parameters: res, classes)",
        ),
        (["--space", "macro-cifar10", "--fit"], "--fit needs --data"),
        (
            ["--space", "chamnet-mbv2@classes=10", "--fit", "--oracle", "train", "--data", "digits"],
            "--fit: --space chamnet-mbv2@classes=10 already sets its parameters",
        ),
        (["--space", "nope@res=32"], "unknown search space 'nope'"),
    ],
)
def test_bad_fit_requests_are_one_line_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "never"
    res = chamlab("search", *args, "--latency", "0.3", "--lut", LUT, "--out", out, env={"COLUMNS": "300"})
    assert res.returncode == 2, res.stderr
    lines = error_lines(res.stderr)
    assert lines[0].startswith("error: ") and message in lines[0], res.stderr
    assert len(lines) <= 2 and all(line.lstrip().startswith("hint:") for line in lines[1:]), res.stderr
    assert not out.exists()


def test_fit_refuses_a_table_space_and_needs_data_in_adapt(tmp_path: Path) -> None:
    table = tmp_path / "bench.csv"
    table.write_text("width,accuracy,latency_ms\n1,50,1\n2,60,2\n")
    res = chamlab("search", "--space", f"table:{table}", "--fit", "--latency", "5", "--out", tmp_path / "x",
                  env={"COLUMNS": "300"})  # fmt: skip
    assert res.returncode == 2 and "is a table space; it has no input size or classes to fit" in res.stderr
    res = chamlab("adapt", "--target", "local-cpu", "--space", "chamnet-mbv2", "--fit", "--latency", "1",
                  "--out", tmp_path / "a", env={"COLUMNS": "300"})  # fmt: skip
    assert res.returncode == 2 and "--fit needs --data" in error_lines(res.stderr)[0], res.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "x").exists()


def test_lut_rows_of_different_fits_do_not_mix(tmp_path: Path) -> None:
    """A LUT profiled for one fit predicts that fit; another fit's classifier (or resolution) is
    another op, which the LUT lacks, so the prediction names it instead of borrowing a row."""
    three = SPACES.get("macro-cifar10@classes=3")
    arch = three.parse("01201201")
    keys = [op.key for op in three.ops(arch)]
    lut = write(
        tmp_path / "three.parquet", [row(k, [0.1 * (i + 1)] * 9) for i, k in enumerate(dict.fromkeys(keys))]
    )
    res = chamlab(
        "predict", "--space", "macro-cifar10@classes=3", "--arch", "01201201", "--lut", lut, "--json"
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["space"] == "macro-cifar10@classes=3" and out["latency_ms"] > 0
    assert "pool_linear:cin=1280,num_classes=3,in_h=4,in_w=4" in {o["op_key"] for o in out["ops"]}
    for other, missing in (
        ("macro-cifar10", "pool_linear:cin=1280,num_classes=10,in_h=4,in_w=4"),
        ("macro-cifar10@res=48,classes=3", "in_h=48,in_w=48"),
    ):
        res = chamlab("predict", "--space", other, "--arch", "01201201", "--lut", lut, env={"COLUMNS": "400"})
        assert res.returncode == 2 and "has no entry for" in res.stderr and missing in res.stderr, res.stderr


def test_the_manifest_carries_the_fit(tmp_path: Path, fast_devices: Path, isolated_cache: Path) -> None:
    """adapt's describe step on a space fitted to a 3-class, 28 px dataset: `model.json` names the
    fitted space, its resolutions and classes, and the program's 3 outputs with their labels."""
    from types import SimpleNamespace

    from chamlab.chamnet.training import Schedule, TrainingOracle
    from chamlab.host import api
    from chamlab.host.workflows import adapt as steps
    from chamlab.host.workflows.manifest import read_manifest

    data = write_idx(tmp_path / "idx", 80, 28, 3)
    space = api.fit_space(SPACES.get("macro-cifar10"), str(data))
    assert space.name == "macro-cifar10@classes=3"
    arch = space.parse("00000000")
    spec = api.resolve_run(api.load_registry(fast_devices).get("test-cpu"))
    ctx = steps.Context(spec, space, api.AdaptOptions(latency_ms=1.0, out=tmp_path / "run"))
    with TrainingOracle(space, str(data), schedule=Schedule(epochs=1, batch_size=16, max_val=16)) as oracle:
        [acc] = oracle([arch])
        exported = steps.export(ctx, oracle, arch, ctx.stage)
        report = SimpleNamespace(
            arch=space.format(arch),
            values={d.name: v for d, v in zip(space.dimensions, arch, strict=True)},
            weights=exported.weights,
            input_shape=[1, *space.input_shape(arch)[1:]],
            oracle_accuracies={"fp32": acc},
            measured_latency_ms=0.5,
            measured_runs_ms=[0.5],
            unstable=False,
            predicted_latency_ms=0.48,
            runtime_version="1.5.1",
            notes=[],
            manifest_path=None,
            program_accuracy=None,
        )
        steps.describe_program(ctx, oracle, report)  # type: ignore[arg-type]
    m = read_manifest(ctx.stage / "model.json")
    assert m.arch is not None and m.arch.space == "macro-cifar10@classes=3"
    assert m.arch.fit is not None and m.arch.fit.classes == 3 and m.arch.fit.resolution == [32]
    assert m.output.shape == [1, 3] and m.labels == ["0", "1", "2"] and m.input.shape == [1, 3, 32, 32]
