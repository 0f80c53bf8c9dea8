"""int8 quantization time: ExecuTorch's stock ``XNNPACKQuantizer`` against chamlab's post-training one
(:func:`chamlab.operators.quant._quantizer`: the same quantizer without its quantization-aware-training
conv + batch-norm patterns), and the proof that the two give the same program.

    python -m bench.quant_speed [--repeats 2] [--out PATH]

Items: every reference network of every registered space (the ImageNet-sized ones at
``--resolution``, default 96, the smallest choice, to keep the run short), and each distinct op of
macro-cifar10's reference networks exported alone, as ``chamlab profile --dtype int8`` exports it.
For each item and quantizer, interleaved ``--repeats`` times: the seconds of
:func:`~chamlab.operators.quant.quantize` (export, prepare, calibrate on the recipe's seeded
batches, convert; the median is recorded); then, once per quantizer, the converted module's graph
code, its tensors and its output on a fixed input are compared, and both are lowered to XNNPACK and
their ``.pte`` bytes compared. Any difference is reported and the run exits 1.

The training oracle's path (:func:`~chamlab.operators.quant.quantized_module`: real calibration
batches, a dynamic batch dimension) is covered by the networks' ``dynamic`` entry: macro-cifar10's
references quantized that way by both quantizers, outputs compared on a batch of 5.

Writes ``bench/results/quant_speed.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench._common import RESULTS, write_result


@contextlib.contextmanager
def stock_quantizer() -> Iterator[None]:
    """While inside: :mod:`chamlab.operators.quant` uses ExecuTorch's XNNPACKQuantizer as shipped."""
    import functools

    from chamlab.operators import quant

    ours = quant._quantizer
    quant._quantizer = functools.partial(ours, stock=True)
    try:
        yield
    finally:
        quant._quantizer = ours


def _fingerprint(converted: Any, probe: Any) -> dict[str, str]:
    """Hashes of a converted module's graph code, its tensors (names, dtypes, bytes) and its output."""
    import torch

    tensors = hashlib.sha256()
    for name, t in sorted({**dict(converted.named_parameters()), **dict(converted.named_buffers())}.items()):
        tensors.update(name.encode() + str(t.dtype).encode() + t.detach().contiguous().numpy().tobytes())
    with torch.no_grad():
        out = converted(probe)
    return {
        "code": hashlib.sha256(converted.code.encode()).hexdigest(),
        "tensors": tensors.hexdigest(),
        "output": hashlib.sha256(out.detach().contiguous().numpy().tobytes()).hexdigest(),
    }


def _time(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def compare_static(name: str, op_keys: list[str], repeats: int, tmp: Path) -> dict[str, Any]:
    """One item (an op alone or a whole network) quantized for export at batch 1, then lowered."""
    from chamlab.operators import quant
    from chamlab.operators.export import _build_module_and_input

    seconds: dict[str, list[float]] = {"stock": [], "ptq": []}
    fingerprints: dict[str, dict[str, str]] = {}
    ptes: dict[str, str] = {}
    for _ in range(repeats):
        for which in ("stock", "ptq"):
            module, example = _build_module_and_input(op_keys)
            ctx = stock_quantizer() if which == "stock" else contextlib.nullcontext()
            with ctx:
                s, converted = _time(lambda m=module, e=example: quant.quantize(m, e))
                seconds[which].append(s)
                if which not in fingerprints:
                    fingerprints[which] = _fingerprint(converted, example)
                    program, _ = quant.lower(converted, example)
                    pte = tmp / f"{which}.pte"
                    pte.write_bytes(program.buffer)
                    ptes[which] = hashlib.sha256(pte.read_bytes()).hexdigest()
    return _row(name, seconds, fingerprints, ptes)


def compare_dynamic(name: str, space: Any, arch: Any, repeats: int) -> dict[str, Any]:
    """The training oracle's path: real-shaped calibration batches of 8, any batch size after."""
    import torch

    from chamlab.operators import quant

    shape = tuple(space.input_shape(arch))[1:]
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn((8, *shape), generator=gen) for _ in range(4)]
    probe = torch.randn((5, *shape), generator=gen)
    seconds: dict[str, list[float]] = {"stock": [], "ptq": []}
    fingerprints: dict[str, dict[str, str]] = {}
    for _ in range(repeats):
        for which in ("stock", "ptq"):
            module = space.build(arch).eval()
            ctx = stock_quantizer() if which == "stock" else contextlib.nullcontext()
            with ctx:
                s, converted = _time(lambda m=module: quant.quantized_module(m, batches))
            seconds[which].append(s)
            fingerprints.setdefault(which, _fingerprint(converted, probe))
    return _row(name, seconds, fingerprints, None)


def _row(
    name: str, seconds: dict[str, list[float]], fps: dict[str, dict[str, str]], ptes: dict[str, str] | None
) -> dict[str, Any]:
    stock, ptq = statistics.median(seconds["stock"]), statistics.median(seconds["ptq"])
    same = fps["stock"] == fps["ptq"] and (ptes is None or ptes["stock"] == ptes["ptq"])
    row = {
        "item": name,
        "stock_s": round(stock, 3),
        "ptq_s": round(ptq, 3),
        "ratio": round(ptq / stock, 3),
        "identical": same,
        "checked": ["code", "tensors", "output"] + (["pte"] if ptes is not None else []),
    }
    if not same:
        row["fingerprints"] = fps
        row["pte_sha256"] = ptes
    print(
        f"{name:60s} stock {stock:7.2f} s  ptq {ptq:7.2f} s  x{ptq / stock:.2f}  identical={same}", flush=True
    )
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2, help="interleaved timings per item and quantizer")
    ap.add_argument("--resolution", type=int, default=96, help="input side of the ImageNet-sized networks")
    ap.add_argument("--out", type=Path, default=RESULTS / "quant_speed.json")
    args = ap.parse_args(argv)

    import torch

    from chamlab.chamnet.spaces import SPACES

    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ops: dict[str, None] = {}
        for sname in SPACES.names():
            space = SPACES.get(sname)
            dims = [x.name for x in space.dimensions]
            for ref, arch in space.references.items():
                if "resolution" in dims:
                    i = dims.index("resolution")
                    arch = (*arch[:i], args.resolution, *arch[i + 1 :])
                keys = [op.key for op in space.ops(arch)]
                rows.append(compare_static(f"net:{sname}:{ref}", keys, args.repeats, tmp))
                if sname == "macro-cifar10":
                    ops.update(dict.fromkeys(keys))
                    rows.append(compare_dynamic(f"dynamic:{sname}:{ref}", space, arch, args.repeats))
        for key in ops:
            rows.append(compare_static(f"op:{key}", [key], args.repeats, tmp))
    ratios = [r["ratio"] for r in rows]
    summary = {
        "items": len(rows),
        "identical": sum(r["identical"] for r in rows),
        "median_ratio": round(statistics.median(ratios), 3),
        "max_ratio": max(ratios),
        "stock_s_total": round(sum(r["stock_s"] for r in rows), 2),
        "ptq_s_total": round(sum(r["ptq_s"] for r in rows), 2),
    }
    path = write_result("quant_speed", {"repeats": args.repeats, "resolution": args.resolution,
                                        "summary": summary, "rows": rows}, args.out)  # fmt: skip
    print(f"{summary['identical']}/{summary['items']} identical; median time ratio ptq/stock "
          f"{summary['median_ratio']}; wrote {path}")  # fmt: skip
    return 0 if summary["identical"] == summary["items"] else 1


if __name__ == "__main__":
    sys.exit(main())
