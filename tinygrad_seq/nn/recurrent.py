"""Unrolling through time: `Recurrent`, `Bidirectional` and `Stacked` (deep RNNs).

`Recurrent` calls a cell once per time step in a plain loop; backpropagation through time
(BPTT) is nothing more than the engine's reverse pass over the graph that loop recorded.
Any object following the cell protocol (see `tinygrad_seq.nn.cell`) unrolls the same way.

Truncated BPTT over a long sequence is a `detach()` away: run it in chunks and pass each
chunk the previous chunk's final state, detached:

    state = None
    for chunk in chunks:                                   # chunk (B, k, n_x)
        outputs, state = layer(chunk, state)
        loss(outputs).backward()
        state = detach_state(state)                        # gradients stop here
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..autograd import Tensor, concat, stack, unstack, where
from ..compiler import compile_steps
from ..compiler import explain as _explain_compiled
from . import functional as F
from .cell import State, state_output
from .fused import fused_steps
from .module import Module

__all__ = ["Bidirectional", "Recurrent", "Stacked", "detach_state", "map_state", "state_output"]


def map_state(fn: Callable[..., Any], *states: Any) -> Any:
    """Apply `fn` part by part to states of one structure (a Tensor or a tuple of Tensors)."""
    if isinstance(states[0], Tensor | np.ndarray):
        return fn(*states)
    return tuple(fn(*parts) for parts in zip(*states, strict=True))


def detach_state(state: Any) -> Any:
    """The same state cut from the graph, for truncated BPTT."""
    return map_state(lambda s: s.detach() if isinstance(s, Tensor) else Tensor(s), state)


def check_lengths(lengths: Any, batch: int, steps: int) -> np.ndarray | None:
    """`lengths` as an integer array of shape (B,), each in 1..T; `None` stays `None`."""
    if lengths is None:
        return None
    values = np.asarray(lengths.data if isinstance(lengths, Tensor) else lengths)
    if values.ndim != 1 or values.shape[0] != batch:
        raise ValueError(
            f"lengths must hold one length per sequence: the batch has {batch} sequences, "
            f"lengths has shape {values.shape}"
        )
    if values.dtype.kind not in "iu":
        if values.dtype.kind != "f" or not np.all(values == np.round(values)):
            raise ValueError(f"lengths must be integers, got {values.tolist()}")
        values = values.astype(np.int64)
    bad = (values < 1) | (values > steps)
    if bad.any():
        raise ValueError(
            f"lengths must lie in 1..T = 1..{steps}; got {values[bad].tolist()} at batch "
            f"positions {np.flatnonzero(bad).tolist()}"
        )
    return values.astype(np.int64)


def _as_sequence(x: Any, who: str) -> Tensor:
    x = x if isinstance(x, Tensor) else Tensor(x)
    if x.ndim != 3:
        raise ValueError(f"{who}: x must have shape (B, T, n_x), got {x.shape}")
    if x.shape[1] == 0:
        raise ValueError(f"{who}: x has no time steps (shape {x.shape})")
    return x


class Recurrent(Module):
    """Unroll a cell over time: `forward(x, state=None, lengths=None) -> (outputs, final_state)`.

    x `(B, T, n_x)`; outputs `(B, T, n_a)` hold a<t> for every step t. `state` is the initial
    state (zeros when `None`), e.g. a detached `final_state` of the previous chunk.

    With `lengths` (one int in 1..T per sequence), the steps past a sequence's end leave its
    state unchanged and give zero outputs (and zero gradient), so `final_state` is each
    sequence's state at its own last step. With `reverse=True` the cell runs from each
    sequence's last valid step (t = lengths[b]) back to its first; outputs stay aligned with
    the input's time axis and `final_state` is the state after step 1.

    >>> import numpy as np
    >>> from tinygrad_seq.nn import GRUCell
    >>> layer = Recurrent(GRUCell(3, 4))
    >>> outputs, a_T = layer(np.ones((2, 5, 3), np.float32), lengths=[5, 2])
    >>> outputs.shape, a_T.shape
    ((2, 5, 4), (2, 4))
    >>> bool((outputs.data[1, 2:] == 0).all())
    True

    Variational (time-locked) dropout, as in Gal & Ghahramani (2016), in training mode only
    (`module.train()`, the default; `module.eval()` turns it off): one inverted-dropout mask
    per sequence, drawn once per call and shared by every time step,

        x̃<t>   = m_x ⊙ x<t>       m_x (B, n_x), with `input_dropout` (Keras's `dropout`)
        ã<t-1> = m_a ⊙ a<t-1>     m_a (B, n_a), with `recurrent_dropout` (Keras's name)

    the same m for every t, each entry 1/(1 − p) with probability 1 − p, else 0. The cell
    then steps on (x̃<t>, ã<t-1>). For a state tuple the mask acts on its first part only,
    so an LSTM's a<t-1> is dropped and its memory c<t-1> is not. For a cell whose state is
    its memory (the GRU's c<t-1>, which feeds both the gates and the carry (1 − Γ_u) c<t-1>),
    the masked units start the step from 0. Masks come from the library generator
    (`tinygrad_seq.manual_seed`), m_x drawn before m_a.

    `compile=True` (the default) runs the built-in LSTM, GRU (reset after) and RNN through
    their hand-fused steps (`nn.fused`) and any other cell through its step compiled from its
    own graph (`tinygrad_seq.compiler`: one graph node per step, generated kernels), whenever
    that is exact; `compile=False` always interprets, op by op. Results and gradients are the
    same either way (to float rounding); `explain(x)` says which path runs and why.

    At the first step, the state the cell returns is checked against the state it was given
    (one Tensor or a tuple of the same length, each part `(B, n_a)` in the initial state's
    dtype); a mismatch raises an error naming the cell.
    """

    def __init__(
        self,
        cell: Any,
        reverse: bool = False,
        compile: bool = True,
        *,
        input_dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
    ) -> None:
        self.cell, self.reverse, self.compile = cell, reverse, bool(compile)
        self.input_dropout = F._check_p(input_dropout, "Recurrent", "input_dropout")
        self.recurrent_dropout = F._check_p(recurrent_dropout, "Recurrent", "recurrent_dropout")

    def forward(
        self, x: Any, state: State | None = None, lengths: Any = None
    ) -> tuple[Tensor, State]:
        x = _as_sequence(x, f"Recurrent({type(self.cell).__name__})")
        B, T = x.shape[:2]
        lengths = check_lengths(lengths, B, T)
        state = self.cell.init_state(B) if state is None else state
        dropping = self.training and (self.input_dropout > 0.0 or self.recurrent_dropout > 0.0)
        if dropping and self.input_dropout > 0.0:  # x̃<t> = m_x ⊙ x<t>, one m_x for every t
            m_x = F.dropout_mask((B, x.shape[2]), self.input_dropout, x.dtype)
            x = x * m_x[:, None, :]
        m_a = None
        if dropping and self.recurrent_dropout > 0.0:
            a0 = state_output(state)
            m_a = F.dropout_mask(tuple(a0.shape), self.recurrent_dropout, a0.dtype)
        step = self._steps(x, state)
        outputs: list[Any] = [None] * T
        first = True
        for t in reversed(range(T)) if self.reverse else range(T):
            # = self.cell(x[:, t], state), with ã<t-1> = m_a ⊙ a<t-1> under recurrent dropout
            new_state = step(t, state if m_a is None else _mask_output(state, m_a))
            if first:  # once per call: the cell's returned state has the given structure
                _check_returned_state(self.cell, new_state, state, B)
                first = False
            if lengths is None:
                state = new_state
                outputs[t] = state_output(state)
            else:  # sequences already ended keep their state and output zeros
                valid = (t < lengths)[:, None]
                state = map_state(lambda new, old, v=valid: where(v, new, old), new_state, state)
                outputs[t] = where(valid, state_output(state), 0.0)
        return stack(outputs, axis=1), state

    def _steps(self, x: Tensor, state: Any) -> Callable[[int, Any], Any]:
        """`step(t, state) = cell(x<t>, state)`: a hand-fused step for the built-in cells
        (`nn.fused`), else the step compiled from the cell's own graph (`tinygrad_seq.compiler`),
        both held to the cell by the tests; the cell itself when `compile=False` or when the
        compiler cannot take the step exactly."""
        if self.compile:
            fast = fused_steps(self.cell, x, state) or compile_steps(self.cell, x, state)
            if fast is not None:
                return fast
        xs = unstack(x, axis=1)  # one node for all x<t>, not a slice node per step
        return lambda t, state: self.cell(xs[t], state)

    def explain(self, x: Any, state: State | None = None) -> str:
        """How this layer runs its step on `x (B, T, n_x)`: the hand-fused step, the compiled
        plan (per-sequence primitives, stacked products, the per-step primitives, deferred
        weight gradients), or why it runs interpreted."""
        x = _as_sequence(x, f"Recurrent({type(self.cell).__name__})")
        if not self.compile:
            return "interpreted: compile=False"
        state = self.cell.init_state(x.shape[0]) if state is None else state
        if fused_steps(self.cell, x, state) is not None:
            return f"hand-fused: {type(self.cell).__name__} runs the fused step of nn/fused.py"
        return _explain_compiled(self.cell, x, state)


def _mask_output(state: Any, mask: np.ndarray) -> Any:
    """The state with its output part a<t-1> (the state, or `state[0]`) multiplied by mask."""
    if isinstance(state, Tensor | np.ndarray):
        return state * mask
    return (state[0] * mask, *state[1:])


def _describe_state(state: Any) -> str:
    if isinstance(state, Tensor | np.ndarray):
        return f"a Tensor of shape {tuple(state.shape)} and dtype {state.dtype}"
    if isinstance(state, tuple | list):
        parts = ", ".join(
            f"{tuple(p.shape)} {p.dtype}" if hasattr(p, "dtype") else type(p).__name__
            for p in state
        )
        return f"a tuple of {len(state)} ({parts})"
    return f"a {type(state).__name__}"


def _check_returned_state(cell: Any, new: Any, old: Any, batch: int) -> None:
    """Raise naming the cell when the state it returned does not match the one it was given:
    one Tensor or a tuple of the same length (else `TypeError`), each part (B, n_a) (else
    `ValueError`) in the given part's dtype (else `TypeError`)."""
    single = isinstance(old, Tensor | np.ndarray)
    old_parts = [old] if single else list(old)
    n_a = getattr(cell, "hidden_size", None)
    error: type[Exception] | None = None
    if single and not isinstance(new, Tensor | np.ndarray):
        error = TypeError
    elif not single and not (isinstance(new, tuple | list) and len(new) == len(old_parts)):
        error = TypeError
    else:
        for given, got in zip(old_parts, [new] if single else new, strict=True):
            shape = (batch, n_a) if n_a is not None else tuple(given.shape)
            if not isinstance(got, Tensor | np.ndarray) or got.dtype != given.dtype:
                error = TypeError
            elif tuple(got.shape) != shape and error is None:
                error = ValueError
    if error is None:
        return
    n_a_text = "n_a" if n_a is None else str(n_a)
    dtypes = ", ".join(str(p.dtype) for p in old_parts)
    want = (
        f"a Tensor of shape ({batch}, {n_a_text}) and dtype {dtypes}"
        if single
        else f"a tuple of {len(old_parts)} Tensors ({batch}, {n_a_text}) of dtypes ({dtypes})"
    )
    raise error(
        f"Recurrent({type(cell).__name__}): the cell's first step returned "
        f"{_describe_state(new)}; expected {want}, like the state it was given"
    )


class Bidirectional(Module):
    """A forward and a backward `Recurrent`, outputs concatenated feature-wise.

    `forward(x, lengths=None, state=None) -> (outputs, (forward_final, backward_final))`
    with outputs `(B, T, n_a_fwd + n_a_bwd)`: at each t, [a→<t>, a←<t>]. With `lengths`, the
    backward cell starts at each sequence's own last step and padded outputs are zero.
    `state` optionally gives both initial states as a pair.

    >>> import numpy as np
    >>> from tinygrad_seq.nn import LSTMCell, RNNCell
    >>> bi = Bidirectional(LSTMCell(3, 4), RNNCell(3, 2))
    >>> outputs, ((a_f, c_f), a_b) = bi(np.ones((2, 5, 3), np.float32))
    >>> outputs.shape
    (2, 5, 6)
    """

    def __init__(self, forward_cell: Any, backward_cell: Any) -> None:
        self.forward_cell, self.backward_cell = forward_cell, backward_cell

    def forward(
        self, x: Any, lengths: Any = None, state: tuple[Any, Any] | None = None
    ) -> tuple[Tensor, tuple[State, State]]:
        return self.run(x, lengths, state, lambda cell, reverse: Recurrent(cell, reverse))

    def run(
        self,
        x: Any,
        lengths: Any,
        state: tuple[Any, Any] | None,
        unroll: Callable[[Any, bool], Recurrent],
    ) -> tuple[Tensor, tuple[State, State]]:
        """`forward`, each direction unrolled by `unroll(cell, reverse)` (a `Stacked` passes
        one that carries its variational dropout)."""
        state_f, state_b = (None, None) if state is None else state
        out_f, final_f = unroll(self.forward_cell, False)(x, state_f, lengths)
        out_b, final_b = unroll(self.backward_cell, True)(x, state_b, lengths)
        return concat([out_f, out_b], axis=-1), (final_f, final_b)


class Stacked(Module):
    """A deep RNN: layer l's outputs a^[l]<t> are the inputs x<t> of layer l + 1.

    `Stacked(layers, dropout=0.0, *, input_dropout=0.0, recurrent_dropout=0.0)`; each layer
    is a cell (unrolled forwards) or a `Recurrent`/`Bidirectional` module. `forward(x,
    states=None, lengths=None) -> (outputs, final_states)`: outputs are the last layer's
    `(B, T, n_a)`, `final_states` a list with each layer's final state; `states` optionally
    gives each layer's initial state (a list, `None` entries meaning zeros).

    Dropout with probability `dropout` acts on the outputs between layers (never on the
    last layer's), a fresh mask at every time step (PyTorch's `dropout` of a deep RNN), only
    in training mode (`module.train()`), as inverted dropout (`functional.dropout`): kept
    values are scaled by 1/(1 − dropout), so evaluation needs no rescaling.

    `input_dropout` and `recurrent_dropout` are the variational, time-locked dropout of
    every layer's cell (Keras's `dropout` and `recurrent_dropout`, see `Recurrent`): one
    mask per sequence on each layer's x<t>, one on its a<t-1>, shared by all time steps.
    They apply to the layers given as cells or `Bidirectional` pairs; a `Recurrent` layer
    keeps its own options. Masks are drawn from the library generator
    (`tinygrad_seq.manual_seed`).

    `Stacked.build("lstm", n_x, n_a, num_layers=2)` builds the layers for you.

    >>> import numpy as np
    >>> from tinygrad_seq.nn import GRUCell
    >>> deep = Stacked([GRUCell(3, 8), GRUCell(8, 8)], dropout=0.1)
    >>> outputs, (a1, a2) = deep(np.ones((2, 5, 3), np.float32))
    >>> outputs.shape, [name for name, _ in deep.named_parameters()][:2]
    ((2, 5, 8), ['layers.0.W_u', 'layers.0.W_r'])
    """

    def __init__(
        self,
        layers: Sequence[Any],
        dropout: float = 0.0,
        *,
        input_dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
    ) -> None:
        if len(layers) == 0:
            raise ValueError("Stacked needs at least one layer")
        self.layers = list(layers)
        self.dropout = F._check_p(dropout, "Stacked", "dropout")
        self.input_dropout = F._check_p(input_dropout, "Stacked", "input_dropout")
        self.recurrent_dropout = F._check_p(recurrent_dropout, "Stacked", "recurrent_dropout")

    @classmethod
    def build(
        cls,
        cell: str | Callable[..., Any],
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
        rng: np.random.Generator | None = None,
        *,
        input_dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        **cell_kwargs: Any,
    ) -> Stacked:
        """`num_layers` cells (bidirectional layers if asked: each layer's input is then both
        directions' outputs, 2·n_a features). `cell` is a kind of `nn.kinds.CELL_KINDS`
        (`"rnn"`, `"gru"`, `"lstm"`), a cell class, or any factory `(input_size,
        hidden_size) -> cell`; `rng` and `cell_kwargs` are passed on to it (`rng` only when
        given, for a class or factory)."""
        from .kinds import cell_factory

        make = cell_factory(cell, "Stacked.build")
        if isinstance(cell, str) or rng is not None:
            cell_kwargs = {"rng": rng, **cell_kwargs}
        layers: list[Any] = []
        for layer in range(num_layers):
            n_in = input_size if layer == 0 else hidden_size * (2 if bidirectional else 1)
            if bidirectional:
                forward_cell = make(n_in, hidden_size, **cell_kwargs)
                backward_cell = make(n_in, hidden_size, **cell_kwargs)
                layers.append(Bidirectional(forward_cell, backward_cell))
            else:
                layers.append(make(n_in, hidden_size, **cell_kwargs))
        return cls(
            layers,
            dropout=dropout,
            input_dropout=input_dropout,
            recurrent_dropout=recurrent_dropout,
        )

    def forward(
        self, x: Any, states: Sequence[Any] | None = None, lengths: Any = None
    ) -> tuple[Tensor, list[Any]]:
        if states is not None and len(states) != len(self.layers):
            raise ValueError(f"Stacked: {len(self.layers)} layers but {len(states)} initial states")
        finals = []
        for i, layer in enumerate(self.layers):
            if i > 0:
                x = F.dropout(x, self.dropout, self.training)
            state = None if states is None else states[i]
            if isinstance(layer, Bidirectional) and self._variational():
                x, final = layer.run(x, lengths, state, self._unroll)
            else:
                layered = isinstance(layer, Recurrent | Bidirectional)
                unroll = layer if layered else self._unroll(layer)
                x, final = unroll(x, state=state, lengths=lengths)
            finals.append(final)
        return x, finals

    def _variational(self) -> bool:
        return self.input_dropout > 0.0 or self.recurrent_dropout > 0.0

    def _unroll(self, cell: Any, reverse: bool = False) -> Recurrent:
        unroll = Recurrent(
            cell,
            reverse,
            input_dropout=self.input_dropout,
            recurrent_dropout=self.recurrent_dropout,
        )
        unroll.training = self.training
        return unroll
