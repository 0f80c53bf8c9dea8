"""int8 quantization, in one place: the recipes, PT2E quantization of a torch module, its lowering
to the XNNPACK delegate, and the check that nothing was left in fp32 or outside the delegate.

A *recipe* (:class:`QuantRecipe`, registered in :data:`RECIPES` under a stable id) fixes everything
that changes a quantized program: ExecuTorch's ``XNNPACKQuantizer`` with
``get_symmetric_quantization_config`` (8-bit symmetric weights, per output channel or per tensor;
8-bit asymmetric per-tensor activations, static), and the calibration data used when the caller
gives none. Its id is stored in every int8 LUT row (``quant_recipe``) and hashed into the export
cache key (:mod:`chamlab.operators.export`), so programs and rows of two recipes never mix. Changing
what a recipe does means registering a new id, never editing an old one.

Calibration batches (when the caller passes none): ``calibration_batches`` tensors of the input's
shape drawn from the standard normal by a ``torch.Generator`` seeded with ``calibration_seed``. For
latency this is enough (int8 kernels run at the same speed whatever the scales); for accuracy, pass
real data (:func:`quantized_module`).

Entry points (torch, torchao and executorch are imported inside them):

* :func:`quantize`: export a module and return the converted (quantized) ``torch.fx.GraphModule``;
  it runs in Python (simulated int8: quantize/dequantize around fp32 kernels) and is what gets lowered;
* :func:`quantized_module`: the same from real calibration batches, with a dynamic batch dimension,
  for evaluating int8 accuracy (the training oracle calls it);
* :func:`lower`: a converted module to an ExecuTorch program on XNNPACK plus a :class:`QuantReport`;
* :func:`export_network`: a whole network to ``.pte`` + ETRecord + report, written atomically
  (``chamlab adapt --dtype int8`` exports the winner with it).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chamlab.core.errors import ExportError, InputError
from chamlab.core.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclasses.dataclass(frozen=True)
class QuantRecipe:
    """One way to quantize; ``id`` is what rows and cache keys record."""

    id: str
    per_channel: bool  # weights: one scale per output channel (True) or per tensor
    calibration_batches: int  # random batches when the caller gives no calibration data
    calibration_seed: int
    description: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


RECIPES: Registry[QuantRecipe] = Registry("quantization recipe")


def register_recipe(recipe: QuantRecipe) -> QuantRecipe:
    return RECIPES.add(recipe.id, recipe)


DEFAULT_RECIPE = register_recipe(
    QuantRecipe(
        "xnnpack-int8-pc-v1",
        per_channel=True,
        calibration_batches=8,
        calibration_seed=0,
        description="XNNPACKQuantizer, symmetric int8 weights per output channel, static asymmetric int8 "
        "activations per tensor; 8 seeded standard-normal calibration batches",
    )
).id
register_recipe(
    QuantRecipe(
        "xnnpack-int8-pt-v1",
        per_channel=False,
        calibration_batches=8,
        calibration_seed=0,
        description="as xnnpack-int8-pc-v1 but one weight scale per tensor",
    )
)


def get_recipe(recipe_id: str) -> QuantRecipe:
    return RECIPES.get(recipe_id)


def recipe_for(dtype: str, recipe_id: str | None = None) -> str | None:
    """The recipe id a ``dtype`` export uses: None for fp32 (a recipe there is an input error), the
    given or default recipe for int8."""
    if dtype != "int8":
        if recipe_id is not None:
            raise InputError(f"a quantization recipe ({recipe_id}) only applies to dtype int8, not {dtype}")
        return None
    return get_recipe(recipe_id or DEFAULT_RECIPE).id


@dataclasses.dataclass(frozen=True)
class QuantReport:
    """What quantizing and lowering left undone. ``fp32_ops``: ops the quantizer did not quantize
    (their output is not quantized, see :func:`fp32_ops`); ``not_delegated``: ops outside
    the XNNPACK delegate after lowering (they run on ExecuTorch's portable kernels)."""

    recipe: str
    fp32_ops: tuple[str, ...] = ()
    not_delegated: tuple[str, ...] = ()

    @property
    def delegated(self) -> bool:
        """True when every op is quantized and inside the delegate."""
        return not self.fp32_ops and not self.not_delegated

    def problem(self) -> str | None:
        """One sentence naming what is wrong, or None."""
        parts = []
        if self.fp32_ops:
            parts.append(f"left in fp32 by the quantizer: {', '.join(self.fp32_ops)}")
        if self.not_delegated:
            parts.append(f"not delegated to XNNPACK: {', '.join(self.not_delegated)}")
        return "; ".join(parts) or None

    def breakdown(self) -> list[dict[str, Any]]:
        """The offending ops as LUT breakdown entries (``delegated = false``, no timing)."""
        names = [f"fp32:{n}" for n in self.fp32_ops] + list(self.not_delegated)
        return [{"event": n, "p50_ms": None, "delegated": False} for n in names]

    def to_json(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "fp32_ops": list(self.fp32_ops),
            "not_delegated": list(self.not_delegated),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QuantReport:
        return cls(str(data["recipe"]), tuple(data["fp32_ops"]), tuple(data["not_delegated"]))

    @classmethod
    def read(cls, path: Path) -> QuantReport:
        try:
            return cls.from_json(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ExportError(f"cannot read the quantization report {path}: {exc}") from exc


def calibration_batches(shape: Sequence[int], recipe_id: str = DEFAULT_RECIPE) -> list[torch.Tensor]:
    """The recipe's seeded random calibration batches of ``shape``."""
    import torch

    recipe = get_recipe(recipe_id)
    generator = torch.Generator().manual_seed(recipe.calibration_seed)
    return [torch.randn(tuple(shape), generator=generator) for _ in range(recipe.calibration_batches)]


def _quantizer(recipe: QuantRecipe, *, stock: bool = False) -> Any:
    """ExecuTorch's ``XNNPACKQuantizer`` for post-training quantization: every pattern but the
    quantization-aware-training ones (conv/conv-transpose + batch norm [+ relu]); ``stock``: as shipped.

    Those match nothing here: ``prepare_pt2e`` folds each batch norm into its conv before it
    annotates. Yet the stock quantizer builds each of their pattern graphs with a fresh
    ``torch.export`` on every call (12 exports, about 60 % of quantizing a macro-cifar10 network).
    Dropping them leaves the quantized program byte-identical (``bench/quant_speed.py`` checks it on
    every reference network and op it times), so no recipe changes."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    config = get_symmetric_quantization_config(is_per_channel=recipe.per_channel, is_dynamic=False)
    return (XNNPACKQuantizer if stock else _post_training_quantizer())().set_global(config)


@functools.cache
def _post_training_quantizer() -> type:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer

    patterns = [p for p in XNNPACKQuantizer.SUPPORTED_PATTERNS if not p.is_qat]
    return type("PostTrainingXNNPACKQuantizer", (XNNPACKQuantizer,), {"SUPPORTED_PATTERNS": patterns})


def _convert(
    module: nn.Module,
    example: torch.Tensor,
    calibration: Iterable[torch.Tensor],
    recipe: QuantRecipe,
    dynamic_batch: bool,
) -> torch.fx.GraphModule:
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    dynamic = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    with torch.no_grad():
        graph = torch.export.export(module.eval(), (example,), dynamic_shapes=dynamic).module()
        prepared = prepare_pt2e(graph, _quantizer(recipe))
        seen = 0
        for batch in calibration:
            prepared(batch)
            seen += 1
        if seen == 0:
            raise InputError("quantization needs at least one calibration batch")
        converted: torch.fx.GraphModule = convert_pt2e(prepared)
        return converted


def quantize(
    module: nn.Module,
    example: torch.Tensor,
    *,
    recipe: str = DEFAULT_RECIPE,
    calibration: Iterable[torch.Tensor] | None = None,
) -> torch.fx.GraphModule:
    """``module`` quantized by ``recipe`` for export at ``example``'s shape (static shapes).

    ``calibration``: batches whose activation ranges set the scales (default: the recipe's seeded
    random batches of ``example``'s shape)."""
    r = get_recipe(recipe)
    batches = calibration_batches(example.shape, r.id) if calibration is None else calibration
    return _convert(module, example, batches, r, dynamic_batch=False)


def quantized_module(
    module: nn.Module, calibration: Sequence[torch.Tensor], *, recipe: str = DEFAULT_RECIPE
) -> torch.fx.GraphModule:
    """The quantized (converted) module for evaluating int8 accuracy in Python, calibrated on real
    ``calibration`` batches (at least one, the first with batch size >= 2); it accepts any batch size."""
    if not calibration:
        raise InputError("quantized_module needs at least one calibration batch")
    example = calibration[0]
    if example.shape[0] < 2:
        raise InputError("the first calibration batch must hold at least 2 samples (dynamic batch export)")
    return _convert(module, example, calibration, get_recipe(recipe), dynamic_batch=True)


def _op_name(target: Any) -> str:
    name = str(getattr(target, "__name__", target))
    return name.removeprefix("aten.")


def fp32_ops(converted: torch.fx.GraphModule) -> list[str]:
    """Ops of a converted graph whose output is not quantized: neither they nor (for an op fused
    with its activation, like conv + relu) every op they feed is followed by a quantize node."""

    def feeds_quantize(node: Any) -> bool:
        return any(str(u.target).startswith("quantized_decomposed.quantize") for u in node.users)

    out = []
    for node in converted.graph.nodes:
        if node.op != "call_function" or not str(node.target).startswith("aten."):
            continue
        fused = bool(node.users) and all(feeds_quantize(u) for u in node.users)
        if not feeds_quantize(node) and not fused:
            out.append(_op_name(node.target))
    return out


def not_delegated(edge_program: Any) -> list[str]:
    """Ops of a lowered edge program that run outside any delegate."""
    out = []
    for node in edge_program.graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        name = str(getattr(node.target, "__name__", node.target))
        if "executorch_call_delegate" in name or name == "getitem":
            continue
        out.append(_op_name(node.target))
    return out


def lower(
    converted: nn.Module, example: torch.Tensor, *, recipe: str = DEFAULT_RECIPE
) -> tuple[Any, QuantReport]:
    """Lower a converted module to an ExecuTorch program on XNNPACK (ETRecord generated).
    Returns the ``ExecutorchProgramManager`` and the :class:`QuantReport`. A module that is not a
    converted graph (the quant_edge probe, quantized by hand) is lowered as it is."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    left_fp32 = fp32_ops(converted) if isinstance(converted, torch.fx.GraphModule) else []
    with torch.no_grad():
        exported = torch.export.export(converted, (example,))
    edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()], generate_etrecord=True)
    outside = not_delegated(edge.exported_program())
    return edge.to_executorch(), QuantReport(recipe, tuple(left_fp32), tuple(outside))


def save_program(program: Any, pte_path: Path, etrecord_path: Path) -> None:
    """Write a program manager's ``.pte`` and ETRecord atomically."""
    from chamlab.core.files import atomic_path

    pte_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(etrecord_path) as tmp:
        program.get_etrecord().save(str(tmp))
    with atomic_path(pte_path) as tmp:
        tmp.write_bytes(program.buffer)


def write_report(report: QuantReport, path: Path) -> None:
    from chamlab.core.files import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report.to_json(), indent=1) + "\n")


@dataclasses.dataclass(frozen=True)
class NetworkExport:
    pte_path: Path
    etrecord_path: Path
    report_path: Path
    report: QuantReport
    export_s: float


def export_network(
    module: nn.Module,
    example: torch.Tensor,
    pte_path: Path,
    *,
    recipe: str = DEFAULT_RECIPE,
    calibration: Iterable[torch.Tensor] | None = None,
) -> NetworkExport:
    """Quantize a whole network by ``recipe``, lower it to XNNPACK and write ``pte_path``, its
    ETRecord (``.etrecord`` beside it) and the :class:`QuantReport` (``.quant.json``), atomically.

    A network with ops left in fp32 or outside the delegate is still written (the report says which):
    the caller decides whether to warn or refuse."""
    start = time.perf_counter()
    pte_path = Path(pte_path)
    converted = quantize(module, example, recipe=recipe, calibration=calibration)
    program, report = lower(converted, example, recipe=recipe)
    etrecord = pte_path.with_suffix(".etrecord")
    report_path = pte_path.with_suffix(".quant.json")
    save_program(program, pte_path, etrecord)
    write_report(report, report_path)
    return NetworkExport(pte_path, etrecord, report_path, report, time.perf_counter() - start)
