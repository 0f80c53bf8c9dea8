"""A synthetic tabular benchmark of another structure than macro-cifar10, to check the engine's generality.

macro-cifar10 has 8 ordinal dimensions of 3 values whose accuracy mostly grows with size. This table
has 6 dimensions, 3 of them categorical, 1,440 archs, interactions between dimensions, an ordinal
dimension whose best value depends on another, and a cost that only partly predicts accuracy:

* ``stages`` {2, 3, 4, 5}, ``width`` {16, 24, 32, 48, 64}, ``kernel`` {3, 5, 7} (ordinal);
* ``block`` {conv, mbconv, fused, attn}, ``act`` {relu, hswish, gelu} (categorical), ``se`` (boolean).

``latency_ms = 0.05 * stages * (width/16)^1.6 * (kernel/3)^0.7 * B[block] * A[act] * (1.15 if se)
* exp(e1)``, with B = conv 1.0, mbconv 0.8, fused 1.2, attn 1.9; A = relu 1.0, hswish 1.05, gelu 1.12
and e1 ~ N(0, 0.05) per arch (measurement jitter).

``accuracy = 70 + 12 * (1 - exp(-stages * width / 120)) + block + act + se + kernel + g[block, stages]
+ e2``: block: conv 0, mbconv +1.0, fused +0.8, attn +1.5 when width >= 32 else -0.5; act: relu 0,
hswish +0.4, gelu +0.3 (+0.6 more with attn); se: +0.5 with mbconv/fused, -0.2 otherwise; kernel:
-0.3 * (kernel_index - best)^2 with best = 1 (k5) for width < 48 and 2 (k7) from 48 up; g ~ N(0, 0.4)
per (block, stages) pair (a structured effect no feature explains); e2 ~ N(0, 0.15) per arch (the
seed-to-seed noise of a trained benchmark).

All draws come from ``numpy.random.default_rng(seed)`` in the row order below: ``make_frame(0)`` is
the table the benchmark uses (it is generated, not shipped).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

STAGES = (2, 3, 4, 5)
WIDTHS = (16, 24, 32, 48, 64)
KERNELS = (3, 5, 7)
BLOCKS = ("conv", "mbconv", "fused", "attn")
ACTS = ("relu", "hswish", "gelu")
SE = (False, True)
_BLOCK_LAT = {"conv": 1.0, "mbconv": 0.8, "fused": 1.2, "attn": 1.9}
_ACT_LAT = {"relu": 1.0, "hswish": 1.05, "gelu": 1.12}


def make_frame(seed: int = 0) -> pd.DataFrame:
    """The table (one row per arch: the six dimensions, ``accuracy``, ``latency_ms``)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    group = {(b, s): float(rng.normal(0.0, 0.4)) for b in BLOCKS for s in STAGES}
    rows = []
    for stages, width, kernel, block, act, se in itertools.product(STAGES, WIDTHS, KERNELS, BLOCKS, ACTS, SE):
        lat = (
            0.05
            * stages
            * (width / 16) ** 1.6
            * (kernel / 3) ** 0.7
            * _BLOCK_LAT[block]
            * _ACT_LAT[act]
            * (1.15 if se else 1.0)
            * float(np.exp(rng.normal(0.0, 0.05)))
        )
        acc = 70.0 + 12.0 * (1.0 - np.exp(-stages * width / 120.0))
        acc += {"conv": 0.0, "mbconv": 1.0, "fused": 0.8, "attn": 1.5 if width >= 32 else -0.5}[block]
        acc += {"relu": 0.0, "hswish": 0.4, "gelu": 0.3 + (0.6 if block == "attn" else 0.0)}[act]
        acc += (0.5 if block in ("mbconv", "fused") else -0.2) if se else 0.0
        best_k = 1 if width < 48 else 2
        acc += -0.3 * (KERNELS.index(kernel) - best_k) ** 2
        acc += group[(block, stages)] + float(rng.normal(0.0, 0.15))
        rows.append(
            {
                "stages": stages,
                "width": width,
                "kernel": kernel,
                "block": block,
                "act": act,
                "se": se,
                "accuracy": round(float(acc), 4),
                "latency_ms": round(lat, 5),
            }
        )
    return pd.DataFrame(rows)
