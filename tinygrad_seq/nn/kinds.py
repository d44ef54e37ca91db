"""The one table of built-in cell kinds, by the names the library and the command line use.

`Stacked.build`, `LanguageModel` and the gradient-check cases all read `CELL_KINDS`; a new
built-in cell added here is offered by each of them.

>>> sorted(CELL_KINDS)
['gru', 'lstm', 'rnn']
>>> cell_factory("gru")(3, 4).hidden_size
4
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .gru import GRUCell
from .lstm import LSTMCell
from .rnn import RNNCell

__all__ = ["CELL_KINDS", "cell_factory"]

CELL_KINDS: dict[str, type] = {"rnn": RNNCell, "gru": GRUCell, "lstm": LSTMCell}


def cell_factory(cell: str | Callable[..., Any], who: str = "cell") -> Callable[..., Any]:
    """A callable `(input_size, hidden_size, **kwargs) -> cell` from a kind name in
    `CELL_KINDS`, a cell class, or any factory taking `(input_size, hidden_size)`.

    An unknown name raises `ValueError` listing the known kinds (`who` names the caller).
    """
    if isinstance(cell, str):
        if cell not in CELL_KINDS:
            raise ValueError(f"{who}: cell must be one of {sorted(CELL_KINDS)}, got {cell!r}")
        return CELL_KINDS[cell]
    if not callable(cell):
        raise TypeError(
            f"{who}: cell must be a kind {sorted(CELL_KINDS)}, a cell class or a factory "
            f"(input_size, hidden_size) -> cell, got {type(cell).__name__}"
        )
    return cell
