"""Modules: layers, recurrent cells, unrolling through time, losses."""

from . import functional
from .layers import Embedding, Linear
from .module import Module, Parameter
from .serialization import CheckpointError

__all__ = ["CheckpointError", "Embedding", "Linear", "Module", "Parameter", "functional"]
