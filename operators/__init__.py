"""chamlab.operators: operator specs, their torch modules and their export to ExecuTorch."""

from .specs import OPS, ConvBNAct, InvertedResidual, OpRegistry, OpSpec, PoolLinear, register_op

__all__ = ["OPS", "ConvBNAct", "InvertedResidual", "OpRegistry", "OpSpec", "PoolLinear", "register_op"]
