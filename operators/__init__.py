"""chamlab.operators: operator specs (one module per kind: spec and torch module side by side) and
their export to ExecuTorch programs.

Importing this package registers the shipped kinds in :data:`OPS`; it does not import torch.
"""

from .base import BACKENDS, DTYPES, OPS, Backend, Dtype, OpRegistry, OpSpec, register_op
from .conv_bn_act import INVOCATION_PROBE, ConvBNAct
from .inverted_residual import InvertedResidual
from .pool_linear import PoolLinear

__all__ = [
    "BACKENDS",
    "DTYPES",
    "INVOCATION_PROBE",
    "OPS",
    "Backend",
    "ConvBNAct",
    "Dtype",
    "InvertedResidual",
    "OpRegistry",
    "OpSpec",
    "PoolLinear",
    "register_op",
]
