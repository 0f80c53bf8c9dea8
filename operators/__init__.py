"""chamlab.operators: operator specs (one module per kind: spec and torch module side by side) and
their export to ExecuTorch programs.

Importing this package registers the shipped kinds in :data:`OPS`; it does not import torch.
"""

from .base import BACKENDS, DTYPE_BACKENDS, DTYPES, OPS, Backend, Dtype, OpRegistry, OpSpec, register_op
from .conv_bn_act import INVOCATION_PROBE, ConvBNAct
from .inverted_residual import InvertedResidual
from .pool_linear import PoolLinear
from .quant_edge import QuantEdge, boundary_probes

__all__ = [
    "BACKENDS",
    "DTYPES",
    "DTYPE_BACKENDS",
    "INVOCATION_PROBE",
    "OPS",
    "Backend",
    "ConvBNAct",
    "Dtype",
    "InvertedResidual",
    "OpRegistry",
    "OpSpec",
    "PoolLinear",
    "QuantEdge",
    "boundary_probes",
    "register_op",
]
