"""Corpora, held-out splits, padded mini-batches and BPTT windows.

A corpus is a UTF-8 text file. It is read one of two ways:

- **lines** (names, short sentences): every line is one sequence `y<1> … y<T_y>` followed by
  `<EOS>`, and starts from the zero state with `x<1> = 0`. Mini-batches are `B` lines padded to
  the longest one, with their `lengths`; padding never counts in the loss.
- **stream** (running text: word level, or lines longer than a BPTT window): the lines, each
  ending with `<EOS>`, form one token stream cut into `B` parallel rows, read in windows of
  `bptt` steps; the state `a<t>` (and `c<t>`) is carried from one window to the next, detached
  (truncated BPTT), and `x<1>` of a window is the last token of the previous one.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib import resources

import numpy as np

from .vocab import Vocab, split_lines, tokenize

IGNORE = -100  # target id of padding: the loss skips it
BUNDLED = "dinosaurs.txt"


class CorpusError(ValueError):
    """A corpus file is missing, empty, binary, not UTF-8, or too small for the settings."""


def bundled_corpus_path() -> str:
    """Path of the corpus bundled with the package (1,301 dinosaur genus names)."""
    return str(resources.files("tinygrad_seq.lm") / "data" / BUNDLED)


def read_corpus(path: str | os.PathLike[str] | None = None) -> str:
    """The text of a UTF-8 corpus (`None`: the bundled one); a clear `CorpusError` otherwise.

    >>> read_corpus().splitlines()[:3]
    ['aardonyx', 'abelisaurus', 'abrictosaurus']
    """
    path = bundled_corpus_path() if path is None else os.fspath(path)
    if not os.path.exists(path):
        raise CorpusError(f"corpus {path} does not exist")
    if os.path.isdir(path):
        raise CorpusError(f"corpus {path} is a directory, not a text file")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise CorpusError(f"cannot read corpus {path}: {exc.strerror}") from None
    if b"\x00" in raw:
        raise CorpusError(f"corpus {path} looks binary (it contains NUL bytes); need UTF-8 text")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CorpusError(
            f"corpus {path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from None
    if not text.strip():
        raise CorpusError(f"corpus {path} is empty")
    return text


def text_digest(text: str) -> str:
    """A short fingerprint of a corpus, stored in checkpoints so `--resume` reads the same text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def corpus_lines(text: str, level: str) -> list[str]:
    """The non-blank lines of `text` (blank lines hold no sequence)."""
    return [line for line in split_lines(text) if tokenize(line, level)]


def choose_mode(
    lines: list[str], level: str, bptt: int, heldout: float = 0.1, batch_size: int = 1
) -> str:
    """`"lines"` when every line (plus `<EOS>`) fits a BPTT window and there are enough lines
    to hold some out and fill a batch with the rest; `"stream"` otherwise (always at word
    level): running text, held out by position in the token stream.

    >>> choose_mode(["abc", "de", "f"], "char", bptt=8)
    'lines'
    >>> choose_mode(["one long paragraph of running text"], "char", bptt=8)
    'stream'
    """
    if level == "word":
        return "stream"
    longest = max((len(tokenize(line, level)) for line in lines), default=0)
    if longest + 1 > bptt or len(lines) < 2:
        return "stream"
    return "lines" if len(lines) - _held_count(len(lines), heldout) >= batch_size else "stream"


def _held_count(n: int, fraction: float) -> int:
    """How many of `n` lines or tokens are held out: `fraction` of them, at least 1."""
    return min(max(1, round(fraction * n)), n - 1)


def split_heldout(
    lines: list[str], fraction: float, seed: int, mode: str = "lines"
) -> tuple[list[str], list[str]]:
    """(training, held-out) lines: a seeded random `fraction` of the lines (for `"lines"`),
    or the last `fraction` of them (`"stream"`). At least one line each side."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the held-out fraction must lie in (0, 1), got {fraction}")
    if len(lines) < 2:
        raise CorpusError(
            f"corpus too small: {len(lines)} non-blank line(s); need at least 2 "
            "(one to train on, one held out)"
        )
    n_held = _held_count(len(lines), fraction)
    if mode == "stream":
        return lines[: len(lines) - n_held], lines[len(lines) - n_held :]
    order = np.random.default_rng(seed).permutation(len(lines))
    held = set(order[:n_held].tolist())
    train = [line for i, line in enumerate(lines) if i not in held]
    return train, [lines[i] for i in sorted(held)]


@dataclass
class StreamSplit:
    """Running text cut by position: the token strings before and after the cut (`None`
    stands for `<EOS>`, the end of each line), and the lines wholly on each side."""

    train: list[str | None]
    heldout: list[str | None]
    train_lines: list[str]
    heldout_lines: list[str]

    def encode(self, vocab: Vocab) -> tuple[list[int], list[int]]:
        """(training ids, held-out ids)."""
        return _stream_ids(vocab, self.train), _stream_ids(vocab, self.heldout)


def split_stream(lines: list[str], level: str, fraction: float, batch_size: int) -> StreamSplit:
    """Hold out the last `fraction` of the token stream (each line's tokens, then `<EOS>`).

    The training part must fill `batch_size` rows of at least 2 tokens (one truncated-BPTT
    window) and one token must be held out; a smaller corpus is a `CorpusError` that says
    how many tokens it has and how many it needs.

    >>> s = split_stream(["abcdefghi"], "char", 0.2, batch_size=2)
    >>> "".join(t or "$" for t in s.train), "".join(t or "$" for t in s.heldout)
    ('abcdefgh', 'i$')
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the held-out fraction must lie in (0, 1), got {fraction}")
    tokens: list[str | None] = []
    ends: list[int] = []  # the stream position after each line's <EOS>
    for line in lines:
        tokens.extend(tokenize(line, level))
        tokens.append(None)
        ends.append(len(tokens))
    need = 2 * batch_size + 1
    if len(tokens) < need:
        raise CorpusError(
            f"corpus too small: {len(tokens)} tokens (with one <EOS> per line); need at least "
            f"{need} (2 per row for --batch-size {batch_size}, and 1 held out); pass a "
            "smaller --batch-size or a larger corpus"
        )
    cut = len(tokens) - max(1, round(fraction * len(tokens)))
    cut = min(cut, len(tokens) - 1)
    cut = max(cut, 2 * batch_size)
    whole = sum(1 for e in ends if e <= cut)
    return StreamSplit(tokens[:cut], tokens[cut:], lines[:whole], lines[whole:])


def _stream_ids(vocab: Vocab, tokens: list[str | None]) -> list[int]:
    ids = vocab.encode_tokens("" if t is None else t for t in tokens)
    return [vocab.eos_id if t is None else i for t, i in zip(tokens, ids, strict=True)]


def encode_lines(vocab: Vocab, lines: list[str]) -> list[list[int]]:
    """Each line's ids followed by `<EOS>`."""
    return [[*vocab.encode(line), vocab.eos_id] for line in lines]


def pad_batch(sequences: list[list[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pad to the longest sequence: `(ids (B, T), lengths (B,))`.

    >>> ids, lengths = pad_batch([[3, 4, 0], [5, 0]])
    >>> ids.tolist(), lengths.tolist()
    ([[3, 4, 0], [5, 0, 0]], [3, 2])
    """
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    if len(sequences) == 0 or lengths.min() < 1:
        raise ValueError("pad_batch needs at least one sequence, none of them empty")
    ids = np.full((len(sequences), int(lengths.max())), pad_id, dtype=np.int64)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = s
    return ids, lengths


def targets_of(ids: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
    """`ids` with every padded position set to `IGNORE`."""
    if lengths is None:
        return ids
    return np.where(np.arange(ids.shape[1]) < np.asarray(lengths)[:, None], ids, IGNORE)


@dataclass
class Batch:
    """One training step's data: `ids (B, T)` are both the targets `y<t>` and (shifted) the
    inputs; `lengths` is `None` for full windows; `first` holds the tokens before a stream
    window (`None`: start from `x<1> = 0`); `reset` says to start from the zero state."""

    ids: np.ndarray
    lengths: np.ndarray | None
    first: np.ndarray | None
    reset: bool

    @property
    def tokens(self) -> int:
        return int(self.ids.size if self.lengths is None else self.lengths.sum())


class LineBatches:
    """Mini-batches of whole sequences; batch `step` is a pure function of `(seed, step)`.

    Every epoch is a fresh seeded permutation cut into `len(sequences) // batch_size`
    batches (the remainder waits for a later epoch). Within a window of 16 batches the lines
    are grouped by length, which keeps padding small without making batches predictable.

    >>> data = LineBatches([[2, 0], [3, 3, 0], [4, 0], [2, 2, 2, 0]], batch_size=2, seed=0)
    >>> b = data.batch(0)
    >>> b.ids.shape[0], b.reset, int(b.lengths.max()) == b.ids.shape[1]
    (2, True, True)
    """

    GROUP = 16

    def __init__(self, sequences: list[list[int]], batch_size: int, seed: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        if len(sequences) < batch_size:
            raise CorpusError(
                f"corpus too small: {len(sequences)} training sequences for --batch-size "
                f"{batch_size}; pass a smaller --batch-size or a larger corpus"
            )
        self.sequences, self.batch_size, self.seed = sequences, batch_size, seed
        self.per_epoch = len(sequences) // batch_size
        self._epoch, self._order = -1, np.empty(0, dtype=np.int64)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(len(self.sequences))
            lengths = np.array([len(self.sequences[i]) for i in order])
            span = self.GROUP * self.batch_size
            for start in range(0, len(order), span):  # sort by length inside each window
                part = slice(start, start + span)
                order[part] = order[part][np.argsort(lengths[part], kind="stable")]
            batches = order[: self.per_epoch * self.batch_size].reshape(self.per_epoch, -1)
            self._order = batches[rng.permutation(self.per_epoch)]
            self._epoch = epoch
        return self._order

    def batch(self, step: int) -> Batch:
        rows = self._epoch_order(step // self.per_epoch)[step % self.per_epoch]
        ids, lengths = pad_batch([self.sequences[i] for i in rows])
        return Batch(ids, lengths, None, True)


class StreamBatches:
    """Truncated-BPTT windows over one token stream split into `batch_size` rows.

    Row r holds tokens `r·N .. (r+1)·N − 1` of the stream (`N = len(stream) // batch_size`);
    window k holds columns `k·bptt .. (k+1)·bptt − 1` (the last one may be shorter). Window 0
    of each pass resets the state; the others carry it.

    >>> data = StreamBatches(list(range(2, 22)), batch_size=2, bptt=4)
    >>> b = data.batch(1)
    >>> b.ids.tolist(), b.first.tolist(), b.reset
    ([[6, 7, 8, 9], [16, 17, 18, 19]], [5, 15], False)
    """

    def __init__(self, stream: list[int], batch_size: int, bptt: int) -> None:
        if batch_size < 1 or bptt < 1:
            raise ValueError(f"batch size and bptt must be positive, got {batch_size}, {bptt}")
        n = len(stream) // batch_size
        if n < 2:
            raise CorpusError(
                f"corpus too small: {len(stream)} training tokens for --batch-size "
                f"{batch_size} (need at least 2 per row); pass a smaller --batch-size"
            )
        self.rows = np.asarray(stream[: n * batch_size], dtype=np.int64).reshape(batch_size, n)
        self.bptt = bptt
        self.per_epoch = -(-n // bptt)

    def batch(self, step: int) -> Batch:
        k = step % self.per_epoch
        ids = self.rows[:, k * self.bptt : (k + 1) * self.bptt]
        first = None if k == 0 else self.rows[:, k * self.bptt - 1]
        return Batch(ids, None, first, k == 0)
