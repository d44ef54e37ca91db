"""Modules: layers, recurrent cells, unrolling through time, losses."""

from . import convert, functional
from .cell import Cell, state_output
from .gru import GRUCell
from .layers import Embedding, Linear
from .lstm import LSTMCell
from .module import Module, Parameter
from .recurrent import Bidirectional, Recurrent, Stacked, detach_state
from .rnn import RNNCell
from .serialization import CheckpointError

__all__ = [
    "Bidirectional",
    "Cell",
    "CheckpointError",
    "Embedding",
    "GRUCell",
    "LSTMCell",
    "Linear",
    "Module",
    "Parameter",
    "RNNCell",
    "Recurrent",
    "Stacked",
    "convert",
    "detach_state",
    "functional",
    "state_output",
]
