"""`LanguageModel`: a recurrent network that predicts each token from the ones before it.

The course's set-up: the first input is the zero vector `x<1> = 0`, every later input is the
previous token, `x<t> = y<t-1>`, and

    a<t> = cell(x<t>, a<t-1>)                 (one or more stacked RNN, GRU or LSTM layers)
    ŷ<t> = softmax(W_ya a<t> + b_y)           = P(y<t> | y<1>, …, y<t-1>)

so the prediction at step t has seen only the tokens before t. A sequence ends with `<EOS>`,
which the model learns to predict like any other token: that is how it learns to stop.

A token enters the cell either one-hot (`input="onehot"`, the course's; `n_x = V`) or as a
learned embedding row (`input="embedding"`, `n_x = embedding_dim`, better for word level).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..autograd import Tensor, no_grad
from ..nn import CELL_KINDS, Embedding, Linear, Module, Stacked, state_output
from ..nn.functional import _check_p, dropout
from ..nn.recurrent import detach_state

CELLS = tuple(CELL_KINDS)  # "rnn", "gru", "lstm": the built-in cell kinds
INPUTS = ("onehot", "embedding")


class LanguageModel(Module):
    """P(y<t> | y<1..t-1>) from a recurrent network; `forward(ids (B, T)) -> logits (B, T, V)`.

    `vocab_size` is V, `hidden_size` n_a, `cell` one of `"rnn"`, `"gru"`, `"lstm"`, and
    `num_layers` stacks that many layers (layer l's a<t> is layer l+1's x<t>); `dropout`
    drops a<t> (of every layer) on its way up, a fresh mask at every step. `input_dropout`
    and `recurrent_dropout` are variational dropout (Gal & Ghahramani 2016, Keras's
    `dropout` and `recurrent_dropout`): one mask per sequence on each layer's x<t> and one
    on its a<t-1>, the same at every time step (see `nn.Recurrent`). Every dropout acts in
    training mode only (`model.train()`; `model.eval()` turns them off). Parameters:
    `rnn.layers.{l}.*` (the cells'), `output.weight` = W_ya `(V, n_a)`, `output.bias` = b_y
    `(V,)`, and `embedding.weight (V, n_x)` with `input="embedding"`.

    >>> import numpy as np
    >>> model = LanguageModel(vocab_size=5, hidden_size=8, cell="gru")
    >>> ids = np.array([[2, 3, 0], [4, 0, 0]])
    >>> model(ids).shape
    (2, 3, 5)
    >>> model.log_prob(ids, lengths=[3, 2]).shape
    (2,)
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        cell: str = "lstm",
        num_layers: int = 1,
        input: str = "onehot",
        embedding_dim: int | None = None,
        dropout: float = 0.0,
        rng: np.random.Generator | None = None,
        input_dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
    ) -> None:
        self.embedding: Embedding | None = None
        self._table: np.ndarray | None = None  # [0; I_V], built on first use
        if cell not in CELLS:
            raise ValueError(f"LanguageModel: cell must be one of {CELLS}, got {cell!r}")
        if input not in INPUTS:
            raise ValueError(f"LanguageModel: input must be one of {INPUTS}, got {input!r}")
        for name, value in (("vocab_size", vocab_size), ("hidden_size", hidden_size)):
            if int(value) < 1:
                raise ValueError(f"LanguageModel: {name} must be positive, got {value}")
        if int(num_layers) < 1:
            raise ValueError(f"LanguageModel: num_layers must be at least 1, got {num_layers}")
        self.dropout = _check_p(dropout, "LanguageModel", "dropout")
        self.input_dropout = _check_p(input_dropout, "LanguageModel", "input_dropout")
        self.recurrent_dropout = _check_p(recurrent_dropout, "LanguageModel", "recurrent_dropout")
        self.vocab_size, self.hidden_size = int(vocab_size), int(hidden_size)
        self.cell_type, self.num_layers, self.input = cell, int(num_layers), input
        if input == "embedding":
            self.embedding_dim = int(embedding_dim or min(hidden_size, 64))
            self.embedding = Embedding(self.vocab_size, self.embedding_dim, rng=rng)
            n_x = self.embedding_dim
        else:
            self.embedding_dim = None
            n_x = self.vocab_size
        self.rnn = Stacked.build(
            cell,
            n_x,
            self.hidden_size,
            self.num_layers,
            dropout=self.dropout,
            rng=rng,
            input_dropout=self.input_dropout,
            recurrent_dropout=self.recurrent_dropout,
        )
        self.output = Linear(self.hidden_size, self.vocab_size, rng=rng)

    def config(self) -> dict[str, Any]:
        """The constructor's arguments, enough to rebuild the model (stored in checkpoints;
        the variational dropouts only when set, so other checkpoints keep their config)."""
        variational = {
            name: value
            for name, value in (
                ("input_dropout", self.input_dropout),
                ("recurrent_dropout", self.recurrent_dropout),
            )
            if value > 0.0
        }
        return {
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "cell": self.cell_type,
            "num_layers": self.num_layers,
            "input": self.input,
            "embedding_dim": self.embedding_dim,
            "dropout": self.dropout,
            **variational,
        }

    @property
    def cells(self) -> list[Any]:
        return self.rnn.layers

    # ---- inputs: x<1> = 0, x<t> = y<t-1> ----
    def inputs(self, prev: np.ndarray) -> Tensor:
        """x for token ids `prev` (any shape), where id −1 stands for "no token": x = 0.

        One-hot rows are looked up in a constant table `[0; I_V]` rather than built by a
        product; embedding rows are looked up in `embedding.weight`, then zeroed where −1.
        """
        prev = np.asarray(prev, dtype=np.int64)
        if prev.size and (prev.min() < -1 or prev.max() >= self.vocab_size):
            raise IndexError(
                f"LanguageModel: token ids must lie in [0, {self.vocab_size - 1}], got "
                f"min {prev.min()} and max {prev.max()}"
            )
        dtype = self.output.weight.dtype
        if self.embedding is None:
            return Tensor(self._onehot_table(dtype)[prev + 1])
        x = self.embedding(np.maximum(prev, 0))
        if (prev < 0).any():
            x = x * (prev >= 0)[..., None].astype(dtype)
        return x

    def _onehot_table(self, dtype: np.dtype) -> np.ndarray:
        if self._table is None or self._table.dtype != dtype:
            self._table = np.eye(self.vocab_size + 1, self.vocab_size, k=-1, dtype=dtype)
        return self._table

    # ---- whole sequences ----
    def forward(self, ids: Any) -> Tensor:
        """Logits `(B, T, V)`: row t is W_ya a<t> + b_y, from x<1> = 0 and x<t> = y<t-1>."""
        return self.unroll(ids)[0]

    def unroll(
        self, ids: Any, state: list[Any] | None = None, first: np.ndarray | None = None
    ) -> tuple[Tensor, list[Any]]:
        """Logits `(B, T, V)` and each layer's final state, starting from `state` (`None`:
        zeros) with `x<1>` the token `first (B,)` (`None`: x<1> = 0). A window of running
        text passes the previous window's detached state and last token. In training mode
        with `dropout > 0`, the masks come from the library generator (`manual_seed`)."""
        ids = _as_ids(ids)
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            raise IndexError(
                f"LanguageModel: token ids must lie in [0, {self.vocab_size - 1}], got "
                f"min {ids.min()} and max {ids.max()}"
            )
        B = ids.shape[0]
        head = np.full((B, 1), -1, np.int64) if first is None else np.reshape(first, (B, 1))
        x = self.inputs(np.concatenate([head, ids[:, :-1]], axis=1))
        outputs, finals = self.rnn(x, states=state)
        outputs = dropout(outputs, self.dropout, self.training)  # on a<t> before W_ya
        return self.output(outputs), finals

    def log_prob(self, ids: Any, lengths: Any = None) -> Tensor:
        """log P(y<1>, …, y<T>) = Σ_t log P(y<t> | y<1..t-1>) per sequence, a Tensor `(B,)`.

        With `lengths`, only the first `lengths[b]` tokens of sequence b count (the rest is
        padding); include the final `<EOS>` in the sequence to score its ending.
        """
        ids = _as_ids(ids)
        B, T = ids.shape
        log_p = self(ids).log_softmax(axis=-1)
        picked = log_p[np.arange(B)[:, None], np.arange(T)[None, :], ids]  # log ŷ<t>_{y<t>}
        if lengths is None:
            return picked.sum(axis=1)
        mask = _mask(lengths, B, T).astype(picked.dtype)
        return (picked * mask).sum(axis=1)

    # ---- one step at a time (sampling) ----
    def step(self, prev: Any, state: list[Any] | None = None) -> tuple[Tensor, list[Any]]:
        """One time step: logits `(B, V)` for the next token after tokens `prev (B,)`
        (`None`: the first step, x<1> = 0; then B = 1), and the new per-layer state."""
        prev = np.array([-1]) if prev is None else np.atleast_1d(np.asarray(prev, np.int64))
        x = self.inputs(prev)
        new_state = []
        for i, cell in enumerate(self.cells):
            s = cell(x, None if state is None else state[i])
            new_state.append(s)
            x = state_output(s)
        return self.output(x), new_state


def perplexity(model: LanguageModel, ids: Any, lengths: Any = None, batch_size: int = 256) -> float:
    """exp(−(1/N) Σ log P(y<t> | y<1..t-1>)) over the N scored tokens: the per-token perplexity.

    `ids (B, T)` with optional `lengths`, or a list of id sequences of any lengths (each
    usually ending with `<EOS>`), scored `batch_size` at a time without recording a graph.

    >>> import numpy as np
    >>> model = LanguageModel(vocab_size=5, hidden_size=8, cell="rnn")
    >>> 1.0 < perplexity(model, [[2, 3, 0], [4, 0]]) < 20.0
    True
    """
    if isinstance(ids, list | tuple) and ids and not np.isscalar(ids[0]):
        sequences = [list(s) for s in ids]
        if lengths is not None:
            raise ValueError("perplexity: pass lengths only with a padded (B, T) array")
    else:
        array = _as_ids(ids)
        n = _mask(lengths, *array.shape).sum(axis=1) if lengths is not None else None
        sequences = [
            row.tolist() if n is None else row[: n[b]].tolist() for b, row in enumerate(array)
        ]
    if not sequences or any(len(s) == 0 for s in sequences):
        raise ValueError("perplexity needs at least one sequence, none of them empty")
    nll, tokens = 0.0, 0
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    with no_grad(), evaluating(model):
        for start in range(0, len(order), batch_size):
            batch = [sequences[i] for i in order[start : start + batch_size]]
            size = np.array([len(s) for s in batch])
            padded = np.zeros((len(batch), size.max()), np.int64)
            for b, s in enumerate(batch):
                padded[b, : len(s)] = s
            nll -= float(model.log_prob(padded, size).data.astype(np.float64).sum())
            tokens += int(size.sum())
    return perplexity_of(nll, tokens)


def perplexity_of(nll: float, tokens: int) -> float:
    """exp(nll / tokens), the per-token perplexity; `inf` where it overflows a float (a
    diverged model) and `nan` for a NaN loss, never an `OverflowError`.

    >>> round(perplexity_of(2 * math.log(3.0), 2), 6), perplexity_of(1e6, 1)
    (3.0, inf)
    """
    mean = nll / tokens
    return math.inf if mean > 709.0 else math.exp(mean)  # exp(709.8) is the largest float


def stream_perplexity(model: LanguageModel, stream: list[int], window: int = 256) -> float:
    """Per-token perplexity of one long token stream, read in windows with the state carried
    (the way running text is trained), from x<1> = 0 and the zero state."""
    ids = np.asarray(stream, np.int64)[None, :]
    if ids.size == 0:
        raise ValueError("stream_perplexity of an empty stream")
    nll, state, first = 0.0, None, None
    with no_grad(), evaluating(model):
        for start in range(0, ids.shape[1], window):
            chunk = ids[:, start : start + window]
            logits, state = model.unroll(chunk, state, first)
            log_p = logits.log_softmax(axis=-1).data[0]
            nll -= float(log_p[np.arange(chunk.shape[1]), chunk[0]].astype(np.float64).sum())
            state, first = [detach_state(s) for s in state], chunk[:, -1]
    return perplexity_of(nll, ids.shape[1])


@contextlib.contextmanager
def evaluating(model: LanguageModel) -> Iterator[LanguageModel]:
    """Evaluation mode (no dropout) inside the block; the previous mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _as_ids(ids: Any) -> np.ndarray:
    ids = np.asarray(ids.data if isinstance(ids, Tensor) else ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"token ids must be integers, got dtype {ids.dtype}")
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise ValueError(f"token ids must have shape (B, T) with T >= 1, got {ids.shape}")
    return ids.astype(np.int64, copy=False)


def _mask(lengths: Any, B: int, T: int) -> np.ndarray:
    lengths = np.asarray(lengths)
    if lengths.shape != (B,) or lengths.dtype.kind not in "iu":
        raise ValueError(f"lengths must be {B} integers, got {lengths!r}")
    if (lengths < 0).any() or (lengths > T).any():
        raise ValueError(f"lengths must lie in 0..{T}, got {lengths.tolist()}")
    return np.arange(T)[None, :] < lengths[:, None]
