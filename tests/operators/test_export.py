"""Real ExecuTorch exports (XNNPACK and portable), run with the real runtime and compared with torch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from chamlab.operators import ConvBNAct, InvertedResidual, PoolLinear
from chamlab.operators.export import OPS_PER_WORKER, ArtifactCache, ExportItem, export_all, export_workers
from chamlab.operators.network import build

SPECS = [InvertedResidual(16, 24, 3, 2, 3, 16, 16), ConvBNAct(3, 16, 3, 1, 16, 16, "relu")]


def _run_pte(path: Path, x: torch.Tensor) -> torch.Tensor:
    from executorch.extension.pybindings import _C as rt

    method = rt._load_program(str(path)).load_method("forward")
    return method.call([x])[0]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[ArtifactCache, dict, list]:
    cache = ArtifactCache(tmp_path_factory.mktemp("artifacts"))
    items = [ExportItem.for_op(s) for s in SPECS] + [ExportItem.for_network("net:pair", [SPECS[1], SPECS[0]])]
    seen: list[str] = []
    artifacts, failures = export_all(
        items, "xnnpack", cache=cache, workers=2, on_done=lambda item, res: seen.append(item.name)
    )
    assert failures == []
    return cache, artifacts, seen


def test_export_writes_programs_and_etrecords(exported) -> None:
    cache, artifacts, seen = exported
    assert sorted(seen) == sorted(a.name for a in artifacts)
    for art in artifacts.values():
        assert art.pte_path.is_file() and art.pte_path.stat().st_size > 0
        assert art.etrecord_path.is_file()
        assert art.export_s is not None and art.export_s > 0
        assert art.pte_path.parent == cache.root / "xnnpack-fp32"


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.op_type)
def test_exported_program_computes_what_torch_computes(exported, spec) -> None:
    _, artifacts, _ = exported
    x = torch.randn(spec.input_shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = build(spec)(x)
    got = _run_pte(artifacts[ExportItem.for_op(spec)].pte_path, x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_exported_network_computes_what_torch_computes(exported) -> None:
    from chamlab.operators.network import Network

    _, artifacts, _ = exported
    [art] = [a for item, a in artifacts.items() if item.name == "net:pair"]
    x = torch.randn(SPECS[1].input_shape, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = Network([SPECS[1], SPECS[0]])(x)
    torch.testing.assert_close(_run_pte(art.pte_path, x), expected, rtol=1e-4, atol=1e-4)


def test_second_export_comes_from_the_cache(exported) -> None:
    cache, artifacts, _ = exported
    again, failures = export_all(list(artifacts), "xnnpack", cache=cache)
    assert failures == []
    assert all(a.export_s is None for a in again.values())
    assert {a.pte_path for a in again.values()} == {a.pte_path for a in artifacts.values()}


def test_export_workers_start_one_per_eight_ops_to_lower(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker first imports the toolchain (seconds of CPU): a second one is started only when each
    has OPS_PER_WORKER ops to lower; never more than the CPUs or the items; an explicit count stands."""
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    op = ExportItem.for_op(SPECS[0])
    ops = [ExportItem(f"op{i}", (op.op_keys[0],), 1) for i in range(40)]
    net = ExportItem("net", op.op_keys * 20, 1)
    assert OPS_PER_WORKER == 8
    assert export_workers(ops[:3]) == 1 and export_workers(ops[:15]) == 1
    assert export_workers(ops[:16]) == 2 and export_workers(ops) == 4  # at most one per CPU
    assert export_workers([net]) == 1 and export_workers([net, net, net]) == 3  # at most one per item
    assert export_workers(ops[:3], 2) == 2 and export_workers([net], 4) == 1


def test_cache_key_depends_on_backend_dtype_and_content(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    a, b = ExportItem.for_op(SPECS[0]), ExportItem.for_op(SPECS[1])
    keys = {
        cache.cache_key(a, "xnnpack", "fp32"),
        cache.cache_key(a, "portable", "fp32"),
        cache.cache_key(b, "xnnpack", "fp32"),
        cache.cache_key(a, "xnnpack", "int8"),
    }
    assert len(keys) == 4
    assert cache.cache_key(a, "xnnpack", "fp32") == ArtifactCache(tmp_path / "x").cache_key(
        a, "xnnpack", "fp32"
    )


def test_portable_backend_exports_and_runs(tmp_path: Path) -> None:
    spec = PoolLinear(32, 10, 4, 4)
    artifacts, failures = export_all([ExportItem.for_op(spec)], "portable", cache=ArtifactCache(tmp_path))
    assert failures == []
    x = torch.randn(spec.input_shape)
    with torch.no_grad():
        expected = build(spec)(x)
    torch.testing.assert_close(
        _run_pte(next(iter(artifacts.values())).pte_path, x), expected, rtol=1e-4, atol=1e-4
    )


def test_unsupported_items_are_failures_not_exceptions(tmp_path: Path) -> None:
    item = ExportItem.for_op(SPECS[1])
    artifacts, failures = export_all([item], "portable", "int8", cache=ArtifactCache(tmp_path))
    assert artifacts == {}
    assert [f.item for f in failures] == [item]
    assert "int8 runs on backend xnnpack only" in failures[0].error


def test_programs_exported_in_one_block_share_one_worker(tmp_path: Path) -> None:
    """Inside ``export_worker`` the programs go through one worker process (one toolchain import); a
    failed export kills it and the next call starts another; the block's end stops the last one."""
    import threading

    from chamlab.core.errors import ExportError
    from chamlab.operators import export

    def alive(pid: int) -> bool:
        return Path(f"/proc/{pid}").exists()

    item = ExportItem.for_op(SPECS[1])
    with export.export_worker():
        with pytest.raises(ExportError, match="weights do not fit"):
            export.export_program(item, "xnnpack", tmp_path / "c.pte", tmp_path / "c.etrecord", state_dict={})
        shared = export._current_worker()
        assert shared is not None and shared.pool is None
        export.export_program(item, "xnnpack", tmp_path / "a.pte", tmp_path / "a.etrecord")
        pool = shared.pool
        assert pool is not None
        [worker] = pool._processes
        export.export_program(item, "xnnpack", tmp_path / "b.pte", tmp_path / "b.etrecord")
        assert shared.pool is pool and list(pool._processes) == [worker] and alive(worker)
        other: list[object] = []  # another thread is outside this thread's block
        thread = threading.Thread(target=lambda: other.append(export._current_worker()))
        thread.start()
        thread.join()
        assert other == [None]
    assert export._current_worker() is None and not alive(worker)
    assert (tmp_path / "a.pte").read_bytes() == (tmp_path / "b.pte").read_bytes()
    assert not (tmp_path / "c.pte").exists()
