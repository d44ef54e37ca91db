"""Training a `LanguageModel`: the loop behind `tinygrad-seq train`.

One step: a mini-batch of sequences (or a BPTT window of running text), the forward pass
ŷ<t> for every t, the mean cross-entropy over real tokens (padding is ignored),

    L = −(1/N) Σ_b Σ_{t ≤ T_b} log ŷ<t>_{y<t>}

its gradient by BPTT, clipping (by global norm, or element-wise by value as in the course)
and an Adam or SGD update. Checkpoints are written atomically every `checkpoint_every` steps,
at the end, and on Ctrl-C; `resume=True` continues from one exactly (the same losses as an
uninterrupted run). At the end the held-out per-token perplexity is measured beside
Kneser-Ney bigram and trigram models fitted on the same training split.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..nn import functional as F
from ..nn.recurrent import detach_state
from ..nn.serialization import CheckpointError
from ..optim import SGD, Adam, clip_grad_norm_, clip_grad_value_
from ..random import manual_seed
from . import data
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .model import CELLS, INPUTS, LanguageModel, perplexity, stream_perplexity
from .ngram import KneserNey
from .sampling import sample
from .vocab import LEVELS, Vocab

SAMPLE_TEMPERATURE = 0.8  # the end-of-run samples: a little more conservative than the model


@dataclass
class TrainConfig:
    """Every setting of a training run (the `train` command's options).

    The defaults train a one-layer LSTM on the bundled dinosaur names in well under a minute
    on two cores, and beat the Kneser-Ney trigram's held-out perplexity.
    """

    corpus: str | None = None  # None: the bundled dinosaur names
    level: str = "char"
    min_freq: int | None = None  # None: 1 at char level, 2 at word level
    cell: str = "lstm"
    hidden: int = 128
    layers: int = 1
    input: str = "onehot"
    embedding_dim: int | None = None
    dropout: float = 0.5
    steps: int = 500
    batch_size: int = 32
    lr: float = 0.01
    optimizer: str = "adam"
    clip: float = 5.0
    clip_mode: str = "norm"
    bptt: int = 64
    seed: int = 0
    heldout: float = 0.1
    checkpoint_every: int = 100
    samples: int = 8
    out: str | None = None  # None: <corpus name>.npz in the current folder

    # settings a resumed run may change; the others must match the checkpoint
    RESUMABLE = ("steps", "checkpoint_every", "samples", "out", "corpus")

    def validate(self) -> None:
        """`ValueError` naming the first setting out of range."""
        choices = {
            "level": LEVELS,
            "cell": CELLS,
            "input": INPUTS,
            "optimizer": ("adam", "sgd"),
            "clip_mode": ("norm", "value"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{_flag(name)} must be one of {allowed}")
        positive = ("hidden", "layers", "steps", "batch_size", "bptt", "checkpoint_every")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"--{_flag(name)} must be at least 1, got {getattr(self, name)}")
        if self.min_freq is not None and self.min_freq < 1:
            raise ValueError(f"--min-freq must be at least 1, got {self.min_freq}")
        if self.embedding_dim is not None and self.embedding_dim < 1:
            raise ValueError(f"--embedding-dim must be at least 1, got {self.embedding_dim}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"--lr must be a positive number, got {self.lr}")
        if not (self.clip > 0 and math.isfinite(self.clip)):
            raise ValueError(f"--clip must be a positive number, got {self.clip}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"--dropout must lie in [0, 1), got {self.dropout}")
        if not 0 < self.heldout < 1:
            raise ValueError(f"--heldout must lie strictly between 0 and 1, got {self.heldout}")
        if self.samples < 0:
            raise ValueError(f"--samples must be >= 0, got {self.samples}")

    def out_path(self) -> str:
        """`out`, or `<corpus name>.npz` in the current folder."""
        if self.out is not None:
            return self.out
        name = data.BUNDLED if self.corpus is None else os.path.basename(self.corpus)
        return os.path.splitext(name)[0] + ".npz"


@dataclass
class TrainResult:
    """What a run did: losses per step, held-out perplexities, samples and speed."""

    steps: int  # the step reached
    losses: list[float]
    heldout: dict[str, float] = field(default_factory=dict)
    samples: list[tuple[str, str]] = field(default_factory=list)  # (text, note)
    interrupted: bool = False
    seconds: float = 0.0
    tokens_per_second: float = 0.0
    out: str = ""
    start: int = 0  # the step this run began at (> 0 when resumed)


@dataclass
class _Data:
    """The corpus prepared for one run: vocab, split, batches and held-out sequences."""

    vocab: Vocab
    mode: str
    train_lines: list[str]
    heldout_lines: list[str]
    batches: data.LineBatches | data.StreamBatches
    train_seqs: list[list[int]]  # for the n-gram baselines (one long stream in stream mode)
    heldout_seqs: list[list[int]]
    digest: str
    name: str
    split: str  # how the held-out part was chosen, for the report


def train(
    config: TrainConfig,
    resume: bool = False,
    explicit: frozenset[str] | set[str] = frozenset(),
    log: Callable[[str], None] = print,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Run (or, with `resume`, continue) training as `config` says; see the module docstring.

    `explicit` names the settings the user gave (a resumed run refuses ones that differ
    from the checkpoint's); `log` prints the report; `on_step(step, loss)` is called after
    every step. Everything is checked before anything is written, so a bad corpus or
    setting never touches an existing checkpoint.
    """
    config.validate()
    out = config.out_path()
    check_writable(out)
    corpus = data.bundled_corpus_path() if config.corpus is None else config.corpus
    if os.path.exists(out) and os.path.exists(corpus) and os.path.samefile(out, corpus):
        raise ValueError(f"--out {out} is the corpus itself; refusing to overwrite it")
    ckpt = None
    if resume:
        ckpt = _load_for_resume(out)
        config = _resumed_config(config, ckpt.config["train"], explicit)
    text = data.read_corpus(config.corpus)
    prep = _prepare(config, text, None if ckpt is None else ckpt.vocab)
    if ckpt is not None and ckpt.config.get("corpus_digest") != prep.digest:
        raise ValueError(
            f"the corpus {prep.name} differs from the one checkpoint {out} was trained on; "
            "resume with the same corpus"
        )
    if ckpt is None:
        model = LanguageModel(
            len(prep.vocab),
            config.hidden,
            config.cell,
            config.layers,
            input=config.input,
            embedding_dim=config.embedding_dim,
            dropout=config.dropout,
            rng=np.random.default_rng(config.seed),
        )
        ckpt = Checkpoint(model, prep.vocab, {})
    model = ckpt.model
    optimizer = _optimizer(config, model)
    if ckpt.optimizer:
        try:
            optimizer.load_state_dict(ckpt.optimizer)
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{out}: optimiser state does not fit: {exc}") from None
    ckpt.config = {
        "train": dataclasses.asdict(config),
        "mode": prep.mode,
        "corpus_digest": prep.digest,
    }
    _report_setup(log, config, prep, model, out, ckpt.step)
    result = _loop(config, prep, model, optimizer, ckpt, out, on_step)
    if result.interrupted:
        log(f"interrupted at step {result.steps}: saved {out}; continue with --resume")
        return result
    _report_end(log, config, prep, model, result)
    return result


# ---------------------------------------------------------------- setup


def check_writable(path: str) -> None:
    """`PermissionError`/`FileNotFoundError` now, rather than after training, if `path`
    cannot be written (a missing or read-only folder, or a folder in the file's place)."""
    if path == "" or path.endswith((os.sep, "/")):
        raise ValueError(f"--out {path!r} names no file; give a file name such as model.npz")
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"--out {path} is a directory; give a file name")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--out {path}: folder {folder} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=folder)
    except OSError as exc:
        raise PermissionError(f"--out {path} is not writable: {exc.strerror}") from None
    os.close(fd)
    os.unlink(probe)


def _load_for_resume(out: str) -> Checkpoint:
    if not os.path.exists(out):
        raise FileNotFoundError(f"--resume: no checkpoint {out} to continue (see --out)")
    ckpt = load_checkpoint(out)
    if "train" not in ckpt.config or "corpus_digest" not in ckpt.config:
        raise CheckpointError(f"{out} holds a model but no training run to resume")
    return ckpt


def _resumed_config(
    given: TrainConfig, saved: dict[str, Any], explicit: frozenset[str] | set[str]
) -> TrainConfig:
    """The saved settings, with the few a resumed run may change taken from `given`."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    merged = {k: v for k, v in saved.items() if k in fields}
    conflicts = [
        f"--{_flag(k)} {getattr(given, k)} (the checkpoint has {merged.get(k)})"
        for k in sorted(explicit)
        if k in fields and k not in TrainConfig.RESUMABLE and getattr(given, k) != merged.get(k)
    ]
    if conflicts:
        raise ValueError(
            "--resume continues the saved run with its own settings; these differ: "
            + ", ".join(conflicts)
        )
    for k in TrainConfig.RESUMABLE:
        if k != "corpus" or given.corpus is not None:
            merged[k] = getattr(given, k)
    config = TrainConfig(**merged)
    config.validate()
    return config


def _prepare(config: TrainConfig, text: str, vocab: Vocab | None) -> _Data:
    lines = data.corpus_lines(text, config.level)
    if not lines:
        raise data.CorpusError("the corpus has no tokens")
    mode = data.choose_mode(lines, config.level, config.bptt, config.heldout, config.batch_size)
    min_freq = config.min_freq or (2 if config.level == "word" else 1)
    if mode == "stream":
        split = data.split_stream(lines, config.level, config.heldout, config.batch_size)
        if vocab is None:
            kept = (t for t in split.train if t is not None)
            vocab = Vocab.from_tokens(kept, config.level, min_freq)
        train_ids, heldout_ids = split.encode(vocab)
        train_lines, heldout_lines = split.train_lines, split.heldout_lines
        train_seqs, heldout_seqs = [train_ids], [heldout_ids]
        batches: Any = data.StreamBatches(train_ids, config.batch_size, config.bptt)
        how = (
            f"held out: the last {len(heldout_ids):,} of {len(train_ids) + len(heldout_ids):,} "
            f"tokens of the stream ({config.heldout:.0%}, by position)"
        )
    else:
        train_lines, heldout_lines = data.split_heldout(lines, config.heldout, config.seed)
        if vocab is None:
            vocab = Vocab.from_lines(train_lines, config.level, min_freq)
        train_seqs = data.encode_lines(vocab, train_lines)
        heldout_seqs = data.encode_lines(vocab, heldout_lines)
        batches = data.LineBatches(train_seqs, config.batch_size, config.seed)
        how = (
            f"held out: {len(heldout_lines):,} of {len(lines):,} lines ({config.heldout:.0%}, "
            f"drawn with seed {config.seed})"
        )
    name = "the bundled dinosaur names" if config.corpus is None else config.corpus
    return _Data(
        vocab, mode, train_lines, heldout_lines, batches, train_seqs, heldout_seqs,
        data.text_digest(text), name, how,
    )  # fmt: skip


def _optimizer(config: TrainConfig, model: LanguageModel) -> Adam | SGD:
    if config.optimizer == "sgd":
        return SGD(model.parameters(), lr=config.lr)
    return Adam(model.parameters(), lr=config.lr)


# ---------------------------------------------------------------- the loop


class _StopFlag:
    """Ctrl-C asks to stop: the step in flight finishes, then a checkpoint is written.

    A second Ctrl-C interrupts at once (the last checkpoint on disk stays intact).
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _loop(
    config: TrainConfig,
    prep: _Data,
    model: LanguageModel,
    optimizer: Adam | SGD,
    ckpt: Checkpoint,
    out: str,
    on_step: Callable[[int, float], None] | None,
) -> TrainResult:
    params = model.parameters()
    V = len(prep.vocab)
    start, tokens, interrupted = ckpt.step, 0, False
    progress = _Progress(start, config.steps)
    began = time.perf_counter()
    previous = ckpt.losses[-1] if ckpt.losses else 0.0  # warn once, when the loss diverges

    def save() -> None:
        ckpt.optimizer = optimizer.state_dict()
        save_checkpoint(out, ckpt)

    with _StopFlag() as stop:
        step = start
        try:
            while step < config.steps:
                batch = prep.batches.batch(step)
                # dropout masks are a function of (seed, step), so a resumed run draws the same
                manual_seed(int(np.random.SeedSequence([config.seed, step]).generate_state(1)[0]))
                state = None if batch.reset else ckpt.carry
                logits, final = model.unroll(batch.ids, state, batch.first)
                targets = data.targets_of(batch.ids, batch.lengths)
                loss = F.cross_entropy(
                    logits.reshape(-1, V), targets.reshape(-1), ignore_index=data.IGNORE
                )
                optimizer.zero_grad()
                loss.backward()
                if config.clip_mode == "norm":
                    clip_grad_norm_(params, config.clip)
                else:
                    clip_grad_value_(params, config.clip)
                optimizer.step()  # the step is complete from here on
                step += 1
                value = float(loss.data)
                if not math.isfinite(value) and math.isfinite(previous):
                    print(
                        f"warning: the training loss is {value} at step {step}: the weights "
                        "diverged (try a smaller --lr); the saved model will not be useful",
                        file=sys.stderr,
                    )
                previous = value
                ckpt.step = step
                ckpt.losses.append(value)
                ckpt.carry = [detach_state(s) for s in final] if prep.mode == "stream" else None
                tokens += batch.tokens
                progress.update(step, value, tokens / max(time.perf_counter() - began, 1e-9))
                if on_step is not None:
                    on_step(step, value)
                if stop.requested:
                    interrupted = True
                    break
                if step % config.checkpoint_every == 0 and step < config.steps:
                    save()
        except KeyboardInterrupt:
            # raised mid-step (a second Ctrl-C, or no signal handler in this thread): the
            # model and optimiser may hold a partial update, so keep the last checkpoint
            progress.close()
            raise
        finally:
            seconds = time.perf_counter() - began
    save()
    progress.close()
    return TrainResult(
        steps=ckpt.step,
        start=start,
        losses=list(ckpt.losses),
        interrupted=interrupted,
        seconds=seconds,
        tokens_per_second=tokens / seconds if seconds > 0 else 0.0,
        out=out,
    )


class _Progress:
    """A tqdm bar (loss, tokens/s, ETA) when stderr is a terminal; otherwise a plain line
    on stderr every tenth of the run."""

    def __init__(self, start: int, total: int) -> None:
        self.start, self.total, self.began = start, total, time.perf_counter()
        self.smoothed: float | None = None
        self.bar = None
        self.every = max(1, (total - start) // 10)
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, initial=start, unit="step", file=sys.stderr, dynamic_ncols=True
            )

    def update(self, step: int, loss: float, tokens_per_second: float) -> None:
        s = self.smoothed
        self.smoothed = loss if s is None else 0.95 * s + 0.05 * loss
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            if step % 10 == 0 or step == self.total:
                self.bar.set_postfix_str(
                    f"loss {self.smoothed:.3f}, {tokens_per_second:,.0f} tokens/s", refresh=False
                )
        elif (step - self.start) % self.every == 0 or step == self.total:
            elapsed = time.perf_counter() - self.began
            eta = elapsed / (step - self.start) * (self.total - step)
            print(
                f"step {step}/{self.total}  loss {self.smoothed:.3f}  "
                f"{tokens_per_second:,.0f} tokens/s  eta {eta:.0f}s",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ---------------------------------------------------------------- reports


def _report_setup(
    log: Callable[[str], None],
    config: TrainConfig,
    prep: _Data,
    model: LanguageModel,
    out: str,
    step: int,
) -> None:
    n_params = sum(p.size for p in model.parameters())
    if prep.mode == "lines":
        what = f"{len(prep.train_lines):,} training sequences (one per line)"
    else:
        what = f"running text, {len(prep.train_seqs[0]):,} training tokens"
    log(f"corpus: {prep.name}: {what}; {len(prep.vocab)} {config.level} tokens")
    log(prep.split)
    layers = f"{config.layers} layers" if config.layers > 1 else "1 layer"
    log(
        f"model: {config.cell.upper()}, {layers}, hidden {config.hidden}, "
        f"{'one-hot' if config.input == 'onehot' else 'embedding'} input, dropout "
        f"{config.dropout:g}, {n_params:,} parameters"
    )
    how = f"windows of {config.bptt} (truncated BPTT)" if prep.mode == "stream" else "padded"
    verb = f"resuming at step {step} of" if step else "training"
    log(
        f"{verb} {config.steps} steps: batch {config.batch_size} ({how}), "
        f"{config.optimizer} lr {config.lr:g}, clip {config.clip_mode} {config.clip:g}, "
        f"seed {config.seed} -> {out}"
    )


def _report_end(
    log: Callable[[str], None],
    config: TrainConfig,
    prep: _Data,
    model: LanguageModel,
    result: TrainResult,
) -> None:
    V = len(prep.vocab)
    model.eval()
    if prep.mode == "stream":
        ours = stream_perplexity(model, prep.heldout_seqs[0])
    else:
        ours = perplexity(model, prep.heldout_seqs)
    model.train()
    result.heldout = {f"{config.cell} (this model)": ours}
    for order, name in ((3, "trigram"), (2, "bigram")):
        baseline = KneserNey(order, V).fit(prep.train_seqs)
        result.heldout[f"{name} (Kneser-Ney)"] = baseline.perplexity(prep.heldout_seqs)
    tokens = sum(len(s) for s in prep.heldout_seqs)
    recent = result.losses[-50:]
    log(
        f"trained {result.steps - result.start} steps in {result.seconds:.1f} s (now at step "
        f"{result.steps}), "
        f"{result.tokens_per_second:,.0f} tokens/s; mean loss of the last {len(recent)} "
        f"steps {np.mean(recent):.3f}"
    )
    log(f"held-out perplexity per token ({tokens:,} tokens; lower is better):")
    width = max(len(k) for k in result.heldout)
    for name, value in result.heldout.items():
        log(f"  {name:<{width}}  {value:7.3f}")
    if config.samples:
        rng = np.random.default_rng([config.seed, result.steps])
        seen, held = set(prep.train_lines), set(prep.heldout_lines)
        max_len = 100 if config.level == "char" else 40
        log(f"samples (temperature {SAMPLE_TEMPERATURE}; novel = not in the training split):")
        for _ in range(config.samples):
            text = sample(model, prep.vocab, max_len, SAMPLE_TEMPERATURE, seed=rng)
            note = "" if text in seen else "(novel, a held-out name)" if text in held else "(novel)"
            result.samples.append((text, note))
            log(f"  {text}  {note}".rstrip())
    log(f"saved {result.out}")


def _flag(name: str) -> str:
    return name.replace("_", "-")
