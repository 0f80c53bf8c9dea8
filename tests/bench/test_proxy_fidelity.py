"""bench/proxy_fidelity.py on a tiny IDX dataset: the longer schedule scales the epochs (the
default) or the training examples (``--longer data``), the validation examples stay the proxy's,
and the result renders and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_idx


@pytest.mark.parametrize("longer", ["epochs", "data"])
def test_the_longer_schedule_scales_epochs_or_data(tmp_path: Path, longer: str) -> None:
    from bench import proxy_fidelity as pf

    data = write_idx(tmp_path / "idx", 120, 28, 3)
    out = tmp_path / "r.json"
    argv = [
        "--space", "macro-cifar10", "--data", str(data), "--archs", "3", "--pool", "40",
        "--proxy", "max_train=16,max_val=24,batch_size=8,bn_batches=1", "--out", str(out),
    ]  # fmt: skip
    if longer == "data":
        argv += ["--longer", "data"]
    pf.main(argv)
    r = json.loads(out.read_text())
    assert len(r["runs"]) == 3 and r["summary"]["archs_done"] == 3
    if longer == "data":  # 4x the training examples, one epoch, as the proxy
        assert (r["long"]["max_train"], r["long"]["epochs"]) == (64, 1)
        assert "--longer data" in r["command"] and r["ident"]["longer"] == "data"
    else:  # 4x the epochs over the same examples; the identity is what it was before --longer
        assert (r["long"]["max_train"], r["long"]["epochs"]) == (16, 4)
        assert "--longer" not in r["command"] and "longer" not in r["ident"]
    for run in r["runs"]:
        assert run["val_examples"] == 24 and run["train_examples"] == 16
        assert 0.0 <= run["proxy_accuracy"] <= 100.0 and 0.0 <= run["long_accuracy"] <= 100.0
    text = "\n".join(pf.render(r, "_env_"))
    assert ("64 training examples at most" in text) == (longer == "data")
    assert ("(4 epochs, the rest the same)" in text) == (longer == "epochs")
    # the same arguments continue the run: nothing is trained again
    before = out.read_text()
    pf.main(argv)
    assert json.loads(out.read_text())["runs"] == json.loads(before)["runs"]
