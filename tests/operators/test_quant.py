"""int8: recipes, PT2E quantization, lowering to XNNPACK and the report of what stayed fp32 or outside
the delegate. Real torchao/ExecuTorch exports, run with the real runtime."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from chamlab.core.errors import DuplicateNameError, InputError, UnknownNameError
from chamlab.operators import InvertedResidual, QuantEdge, quant
from chamlab.operators.export import ArtifactCache, ExportItem, export_all, report_path
from chamlab.operators.network import build
from chamlab.operators.quant_edge import PROBE_SCALE

OP = InvertedResidual(8, 8, 3, 1, 2, 8, 8)
EDGE = QuantEdge(8, 8, 8)


def _run_pte(path: Path, x: torch.Tensor) -> torch.Tensor:
    from executorch.extension.pybindings import _C as rt

    return rt._load_program(str(path)).load_method("forward").call([x])[0]


def test_recipes_are_loud_and_only_for_int8() -> None:
    assert quant.recipe_for("int8") == quant.DEFAULT_RECIPE == "xnnpack-int8-pc-v1"
    assert quant.recipe_for("int8", "xnnpack-int8-pt-v1") == "xnnpack-int8-pt-v1"
    assert quant.recipe_for("fp32") is None
    with pytest.raises(InputError, match="only applies to dtype int8"):
        quant.recipe_for("fp32", quant.DEFAULT_RECIPE)
    with pytest.raises(UnknownNameError, match="xnnpack-int8-pc-v1"):
        quant.get_recipe("int4-maybe")
    with pytest.raises(DuplicateNameError):
        quant.register_recipe(quant.get_recipe(quant.DEFAULT_RECIPE))


def test_cache_key_separates_recipes_and_dtypes(tmp_path: Path) -> None:
    cache, item = ArtifactCache(tmp_path), ExportItem.for_op(OP)
    keys = {
        cache.cache_key(item, "xnnpack", "fp32"),
        cache.cache_key(item, "xnnpack", "int8", "xnnpack-int8-pc-v1"),
        cache.cache_key(item, "xnnpack", "int8", "xnnpack-int8-pt-v1"),
    }
    assert len(keys) == 3


def test_int8_runs_on_xnnpack_only_and_the_probe_on_int8_only(tmp_path: Path) -> None:
    assert "xnnpack only" in (OP.unsupported_reason("portable", "int8") or "")
    assert OP.unsupported_reason("xnnpack", "int8") is None
    assert "int8 probe" in (EDGE.unsupported_reason("xnnpack", "fp32") or "")
    done, failed = export_all([ExportItem.for_op(EDGE)], "xnnpack", "fp32", cache=ArtifactCache(tmp_path))
    assert not done and "int8 probe" in failed[0].error
    with pytest.raises(InputError, match="only applies to dtype int8"):
        export_all([ExportItem.for_op(OP)], "xnnpack", "fp32", cache=ArtifactCache(tmp_path), recipe="x")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[ArtifactCache, dict]:
    cache = ArtifactCache(tmp_path_factory.mktemp("int8"))
    artifacts, failures = export_all(
        [ExportItem.for_op(OP), ExportItem.for_op(EDGE)], "xnnpack", "int8", cache=cache, workers=2
    )
    assert failures == []
    return cache, artifacts


def test_int8_op_is_fully_quantized_delegated_and_matches_its_quantized_module(exported) -> None:
    cache, artifacts = exported
    art = artifacts[ExportItem.for_op(OP)]
    assert art.quant_recipe == quant.DEFAULT_RECIPE and art.pte_path.parent.name == "xnnpack-int8"
    assert art.quant_report == quant.QuantReport(quant.DEFAULT_RECIPE) and art.quant_report.delegated
    assert json.loads(report_path(art.pte_path).read_text())["recipe"] == quant.DEFAULT_RECIPE
    x = torch.randn(OP.input_shape, generator=torch.Generator().manual_seed(3))
    module = build(OP)
    converted = quant.quantize(module, x)  # the same seeded calibration as the export's
    simulated, on_device = converted(x), _run_pte(art.pte_path, x)
    reference = module(x)
    step = (reference.max() - reference.min()).item() / 255
    assert (on_device - simulated).abs().max().item() <= 3 * step  # XNNPACK's int8 kernels ~= simulation
    assert (on_device - reference).abs().mean().item() <= 2 * step  # and int8 ~= fp32
    hit = cache.lookup(ExportItem.for_op(OP), "xnnpack", "int8", quant.DEFAULT_RECIPE)
    assert hit is not None and hit.quant_report == art.quant_report
    assert cache.lookup(ExportItem.for_op(OP), "xnnpack", "int8", "xnnpack-int8-pt-v1") is None


def test_quant_edge_probe_is_one_quantize_dequantize_round_trip(exported) -> None:
    _, artifacts = exported
    art = artifacts[ExportItem.for_op(EDGE)]
    assert art.quant_report is not None and art.quant_report.delegated
    x = torch.linspace(-8, 8, 512).reshape(EDGE.input_shape)
    expected = torch.clamp(torch.round(x / PROBE_SCALE), -128, 127) * PROBE_SCALE
    assert torch.allclose(_run_pte(art.pte_path, x), expected, atol=1e-6)


class _Cumsum(nn.Module):
    """A conv (quantized, delegated) then a cumsum: no quantizer annotates it, XNNPACK has no kernel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(self.conv(x), dim=1)


def test_an_op_left_in_fp32_and_outside_the_delegate_is_reported(tmp_path: Path) -> None:
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.random.fork_rng():  # the conv's initial weights: seeded, whatever ran before this test
        torch.manual_seed(0)
        module = _Cumsum().eval()
    out = quant.export_network(module, x, tmp_path / "net.pte")
    report = out.report
    assert report.fp32_ops == ("cumsum.default",) and not report.delegated
    assert any("cumsum" in name for name in report.not_delegated)
    assert "left in fp32 by the quantizer: cumsum.default" in (report.problem() or "")
    assert all(e["delegated"] is False and e["p50_ms"] is None for e in report.breakdown())
    assert out.pte_path.is_file() and out.etrecord_path.is_file()
    assert quant.QuantReport.read(out.report_path) == report
    ref = module(x)
    step = (ref.max() - ref.min()).item() / 255
    assert (_run_pte(out.pte_path, x) - ref).abs().max().item() <= 8 * step  # still runs, mixed


def test_quantized_module_for_evaluation_takes_real_batches_and_any_batch_size() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)
    )
    net.eval()
    batches = [torch.randn(4, 3, 8, 8) for _ in range(3)]
    q = quant.quantized_module(net, batches)
    for n in (1, 5):
        x = torch.randn(n, 3, 8, 8)
        ref = net(x)
        assert q(x).shape == ref.shape
        assert (q(x) - ref).abs().max().item() < 0.1 * ref.abs().max().item() + 1e-3
    with pytest.raises(InputError, match="at least 2 samples"):
        quant.quantized_module(net, [torch.randn(1, 3, 8, 8)])
    with pytest.raises(InputError, match="at least one calibration batch"):
        quant.quantized_module(net, [])


def test_the_post_training_quantizer_gives_the_stock_quantizers_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """chamlab's quantizer is ExecuTorch's XNNPACKQuantizer without its QAT-only conv + batch-norm
    patterns (``quant._quantizer``: prepare_pt2e folds every batch norm into its conv before it
    annotates, so they match nothing). The module it quantizes must be the stock quantizer's, graph,
    tensors and output alike, on conv-bn, conv-bn-relu, an inverted residual and a linear layer
    (``bench/quant_speed.py`` checks every reference network and op, .pte bytes included)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer

    ours = quant._quantizer(quant.get_recipe(quant.DEFAULT_RECIPE))
    assert isinstance(ours, XNNPACKQuantizer) and not any(p.is_qat for p in ours.SUPPORTED_PATTERNS)
    assert any(p.name == "conv_relu" for p in ours.SUPPORTED_PATTERNS)

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        build(OP),
        nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    ).eval()  # fmt: skip
    for m in net.modules():  # batch norms that are not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.weight.data.uniform_(0.5, 2)
    x = torch.randn(1, 8, 8, 8)

    def quantized() -> tuple[str, dict[str, torch.Tensor], torch.Tensor]:
        q = quant.quantize(net, x)
        tensors = {**dict(q.named_parameters()), **dict(q.named_buffers())}
        return q.code, tensors, q(x)

    code, tensors, out = quantized()
    monkeypatch.setattr(quant, "_quantizer", functools.partial(quant._quantizer, stock=True))
    stock_code, stock_tensors, stock_out = quantized()
    assert code == stock_code and "quantize_per_channel" in code
    assert tensors.keys() == stock_tensors.keys() and len(tensors) > 0
    assert all(torch.equal(tensors[k], stock_tensors[k]) for k in tensors)
    assert torch.equal(out, stock_out)
