"""Search spaces (registered by name in :data:`SPACES`)."""

from .base import SPACES, Arch, Dimension, SearchSpace, SpaceRegistry
from .chamnet_mbv2 import ChamNetMbV2
from .macro_cifar10 import MacroCifar10

__all__ = ["SPACES", "Arch", "ChamNetMbV2", "Dimension", "MacroCifar10", "SearchSpace", "SpaceRegistry"]
