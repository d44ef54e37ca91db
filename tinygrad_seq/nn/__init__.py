"""Modules: layers, recurrent cells and your own (`Cell`), unrolling through time, losses.

`init` holds the initialisers, `functional` the losses and functional layers, and
`CELL_KINDS` the table of built-in cells by name (`"rnn"`, `"gru"`, `"lstm"`).
"""

from . import convert, functional, init
from .cell import Cell, state_output
from .gru import GRUCell
from .kinds import CELL_KINDS, cell_factory
from .layers import Dropout, Embedding, LayerNorm, Linear
from .lstm import LSTMCell
from .module import Module, Parameter
from .recurrent import Bidirectional, Recurrent, Stacked, detach_state
from .rnn import RNNCell
from .serialization import CheckpointError

__all__ = [
    "CELL_KINDS",
    "Bidirectional",
    "Cell",
    "CheckpointError",
    "Dropout",
    "Embedding",
    "GRUCell",
    "LSTMCell",
    "LayerNorm",
    "Linear",
    "Module",
    "Parameter",
    "RNNCell",
    "Recurrent",
    "Stacked",
    "cell_factory",
    "convert",
    "detach_state",
    "functional",
    "init",
    "state_output",
]
