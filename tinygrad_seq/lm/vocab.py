"""`Vocab`: the tokens a language model reads and writes, at character or word level.

At character level every character is one token, the newline included, so
`decode(encode(s)) == s` for any string whose characters are in the vocabulary. At word
level the tokens are the whitespace-separated words and a newline ends a sequence: it
encodes as `<EOS>` (id 0). Tokens never seen (or seen fewer than `min_freq` times) encode
as `<UNK>` (id 1). The other tokens follow, most frequent first, ties in text order, so the
same corpus always gives the same ids.

Whether the end of a line is a newline character or `<EOS>` in a training corpus is the
corpus reader's decision (`lm.data`): it reads a corpus line by line, counts tokens with
`from_lines` and ends every line with `<EOS>`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

EOS = "<EOS>"
UNK = "<UNK>"
LEVELS = ("char", "word")


class Vocab:
    """Token ↔ id tables; `<EOS>` is id 0, `<UNK>` id 1.

    >>> v = Vocab.from_lines(["abba", "bob"])
    >>> v.tokens
    ['<EOS>', '<UNK>', 'b', 'a', 'o']
    >>> v.encode("bad")
    [2, 3, 1]
    >>> v.decode([2, 4, 2, v.eos_id])
    'bob'
    >>> Vocab.from_text("ab\\nb").decode(Vocab.from_text("ab\\nb").encode("b\\na"))
    'b\\na'
    >>> w = Vocab.from_text("the cat\\nthe dog", level="word")
    >>> w.decode(w.encode("the dog"))
    'the dog'
    """

    eos_id = 0
    unk_id = 1

    def __init__(self, tokens: Sequence[str], level: str = "char") -> None:
        """Build from the full token list, specials first (as `tokens` returns it)."""
        _check_level(level)
        tokens = [str(t) for t in tokens]
        if tokens[:2] != [EOS, UNK]:
            raise ValueError(f"Vocab tokens must start with {EOS!r}, {UNK!r}; got {tokens[:2]}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("Vocab tokens must be distinct")
        if level == "char":
            bad = [t for t in tokens[2:] if len(t) != 1]
        else:
            bad = [
                t for t in tokens[2:] if t == "" or t != t.strip() or any(c.isspace() for c in t)
            ]
        if bad:
            raise ValueError(f"Vocab: invalid {level}-level tokens {bad[:5]}")
        self.level = level
        self.tokens: list[str] = tokens
        # the specials are ids, never text: a literal "<EOS>" in a corpus is an unknown word
        self._ids = {t: i for i, t in enumerate(tokens) if i > 1}

    @classmethod
    def from_text(cls, text: str, level: str = "char", min_freq: int = 1) -> Vocab:
        """Count the tokens of `text` (characters, newlines included; or words) and keep those
        seen `min_freq`+ times, most frequent first, then by text."""
        _check_level(level)
        pieces = list(text) if level == "char" else text.split()
        return cls.from_tokens(pieces, level, min_freq)

    @classmethod
    def from_lines(cls, lines: Iterable[str], level: str = "char", min_freq: int = 1) -> Vocab:
        """Count the tokens of each line (the lines' ends are `<EOS>`, not tokens)."""
        _check_level(level)
        return cls.from_tokens(
            (t for line in lines for t in tokenize(line, level)), level, min_freq
        )

    @classmethod
    def from_tokens(cls, tokens: Iterable[str], level: str = "char", min_freq: int = 1) -> Vocab:
        """Keep the tokens seen `min_freq`+ times, most frequent first, then by text."""
        _check_level(level)
        if min_freq < 1:
            raise ValueError(f"min_freq must be at least 1, got {min_freq}")
        counts = Counter(tokens)
        counts.pop(EOS, None)
        counts.pop(UNK, None)
        kept = sorted(
            (t for t, n in counts.items() if n >= min_freq), key=lambda t: (-counts[t], t)
        )
        return cls([EOS, UNK, *kept], level)

    def __len__(self) -> int:
        return len(self.tokens)

    def __repr__(self) -> str:
        return f"Vocab({len(self)} tokens, level={self.level!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Vocab) and self.level == other.level and self.tokens == other.tokens
        )

    __hash__ = None  # type: ignore[assignment]

    def encode(self, text: str) -> list[int]:
        """Ids of the tokens of `text`: one per character at character level (a newline is a
        character); at word level one per word, and `<EOS>` for each newline."""
        if self.level == "char":
            return self.encode_tokens(text)
        ids: list[int] = []
        for i, line in enumerate(_lines(text)):
            if i:
                ids.append(self.eos_id)
            ids.extend(self.encode_tokens(tokenize(line, self.level)))
        return ids

    def encode_tokens(self, tokens: Iterable[str]) -> list[int]:
        """The id of each token (`<UNK>` for one not in the vocabulary)."""
        return [self._ids.get(t, self.unk_id) for t in tokens]

    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids`, without `<EOS>`; word-level tokens are joined by single spaces."""
        words = [self.tokens[int(i)] for i in ids if int(i) != self.eos_id]
        return (" " if self.level == "word" else "").join(words)

    # ---- stored inside model checkpoints, as plain unicode arrays (no pickle) ----
    def to_array(self) -> np.ndarray:
        """The token list as a unicode array (the level is stored beside it)."""
        return np.array(self.tokens, dtype=str)

    @classmethod
    def from_array(cls, tokens: np.ndarray, level: str) -> Vocab:
        tokens = np.asarray(tokens)
        if tokens.ndim != 1 or tokens.dtype.kind != "U":
            raise ValueError(
                f"a vocabulary is a 1-D unicode array, got {tokens.dtype} {tokens.shape}"
            )
        return cls(tokens.tolist(), level)


def _check_level(level: str) -> None:
    if level not in LEVELS:
        raise ValueError(f"Vocab level must be one of {LEVELS}, got {level!r}")


def _lines(text: str) -> list[str]:
    """`text` split at every newline (\\n, \\r\\n or \\r); `k` newlines give `k + 1` pieces."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def split_lines(text: str) -> list[str]:
    """The lines of `text` (any newline convention), without the empty piece after a final newline.

    >>> split_lines("ab\\r\\ncd\\n")
    ['ab', 'cd']
    """
    lines = _lines(text)
    return lines[:-1] if lines and lines[-1] == "" else lines


def tokenize(line: str, level: str) -> list[str]:
    """Characters of `line`, or its whitespace-separated words."""
    return line.split() if level == "word" else list(line)
