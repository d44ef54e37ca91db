"""The `train`, `sample` and `eval` subcommands of `tinygrad-seq`.

`tinygrad_seq.cli` calls `add_commands(subparsers)`; each subcommand sets `run(args) -> int`.
Failures raise, and `cli.main` turns them into one `error:` line and exit status 1. Heavy
imports wait until a command runs, so `tinygrad-seq --help` stays quick.
"""

from __future__ import annotations

import argparse
from typing import Any


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class _Store(argparse.Action):
    """`store`, remembering which options the user gave (a resumed run checks them)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None):
        setattr(namespace, self.dest, values)
        namespace.explicit = {*getattr(namespace, "explicit", set()), self.dest}


def seed_type(text: str) -> int:
    """argparse type: a seed is a non-negative integer (NumPy's rule), else a usage error."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"a seed must be a non-negative integer, got {value}")
    return value


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add `train`, `sample` and `eval` to the `tinygrad-seq` parser."""
    from .model import CELLS, INPUTS
    from .train import TrainConfig
    from .vocab import LEVELS

    d = TrainConfig()
    p = sub.add_parser(
        "train",
        help="train a language model (default: characters of the bundled dinosaur names)",
        description=(
            "Train a recurrent language model on a UTF-8 corpus, one sequence per line (running "
            "text, for --level word, lines longer than --bptt or too few lines, is read in "
            "truncated-BPTT windows). Shows progress, then the held-out perplexity beside "
            "Kneser-Ney bigram "
            "and trigram baselines, and a few samples. The model (weights, vocabulary, "
            "settings, optimiser state) is saved to --out every --checkpoint-every steps, at "
            "the end and on Ctrl-C; --resume continues it exactly. A corpus with too few lines "
            "to hold some out and fill a batch is read as running text, held out by position."
        ),
        formatter_class=_Help,
    )
    p.add_argument(
        "corpus",
        nargs="?",
        default=None,
        metavar="CORPUS",
        help="UTF-8 text file, one sequence per line (default: the bundled 1,301 dinosaur names)",
    )
    n, x = {"type": int, "metavar": "N"}, {"type": float, "metavar": "X"}
    seed = {"type": seed_type, "metavar": "N"}
    options = [
        ("--level", {"choices": list(LEVELS)}, "tokens: characters, or words split at spaces"),
        ("--min-freq", n, "rarer tokens become <UNK> (default: 1 for char, 2 for word level)"),
        ("--cell", {"choices": list(CELLS)}, "recurrent cell"),
        ("--hidden", n, "hidden size n_a"),
        ("--layers", n, "stacked recurrent layers"),
        ("--input", {"choices": list(INPUTS)}, "how x<t> = y<t-1> enters the cell"),
        ("--embedding-dim", n, "size of x<t> with --input embedding (default: min(hidden, 64))"),
        ("--dropout", x, "dropout on each layer's a<t> on its way up (training only)"),
        ("--steps", n, "total optimiser steps"),
        ("--batch-size", n, "sequences (or rows of running text) per step"),
        ("--bptt", n, "truncated-BPTT window for running text"),
        ("--optimizer", {"choices": ["adam", "sgd"]}, "update rule"),
        ("--lr", x, "learning rate"),
        ("--clip", x, "gradient clipping threshold"),
        ("--clip-mode", {"choices": ["norm", "value"]}, "clip the global norm, or each element"),
        ("--seed", seed, "seed of initialisation, held-out split, batch order, dropout, samples"),
        ("--heldout", x, "fraction held out for the perplexity report (of the lines, or "
         "the end of running text)"),
        ("--checkpoint-every", n, "steps between checkpoints"),
        ("--samples", n, "samples printed at the end"),
        ("--out", {"metavar": "PATH"}, "checkpoint file (default: CORPUS's name with .npz in the "
         "current folder: dinosaurs.npz for the bundled corpus)"),
    ]  # fmt: skip
    for flag, kind, text in options:
        default = getattr(d, flag[2:].replace("-", "_"))
        p.add_argument(flag, default=default, action=_Store, help=text, **kind)
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run saved in --out (its settings, exactly) up to --steps",
    )
    p.set_defaults(run=run_train, explicit=set())

    p = sub.add_parser(
        "sample",
        help="print samples from a trained model",
        description="Print N sequences sampled from a checkpoint written by `train`, one a line.",
        formatter_class=_Help,
    )
    p.add_argument("model", metavar="MODEL", help="checkpoint (.npz) written by `train`")
    p.add_argument("--n", type=int, default=10, metavar="N", help="number of samples")
    p.add_argument("--max-len", type=int, default=100, metavar="N", help="most new tokens each")
    p.add_argument("--temperature", type=float, default=1.0, metavar="X",
                   help="softmax temperature (> 0; lower is more conservative)")  # fmt: skip
    p.add_argument("--top-k", type=int, default=None, metavar="N",
                   help="draw only from the N most likely tokens (1 = greedy)")  # fmt: skip
    p.add_argument("--seed", type=seed_type, default=None, metavar="N",
                   help="seed for reproducible samples (default: fresh randomness)")  # fmt: skip
    p.add_argument("--prefix", default="", metavar="TEXT", help="text every sample starts with")
    p.set_defaults(run=run_sample)

    p = sub.add_parser(
        "eval",
        help="print a model's per-token perplexity on a corpus",
        description="Print the per-token perplexity exp(mean NLL) of MODEL on CORPUS, read "
        "the way the model was trained (one sequence per line, or running text).",
        formatter_class=_Help,
    )
    p.add_argument("model", metavar="MODEL", help="checkpoint (.npz) written by `train`")
    p.add_argument("corpus", metavar="CORPUS", help="UTF-8 text file")
    p.set_defaults(run=run_eval)


def run_train(args: argparse.Namespace) -> int:
    import dataclasses

    import numpy as np

    from .train import TrainConfig, train

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    explicit = set(args.explicit) | ({"corpus"} if args.corpus is not None else set())
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # train warns once
        result = train(config, resume=args.resume, explicit=explicit)
    return 130 if result.interrupted else 0


def run_sample(args: argparse.Namespace) -> int:
    import numpy as np

    from .checkpoint import load_checkpoint
    from .sampling import check_sampling_args, sample

    check_sampling_args(args.max_len, args.temperature, args.top_k)
    if args.n < 0:
        raise ValueError(f"--n must be >= 0, got {args.n}")
    ckpt = load_checkpoint(args.model)
    rng = np.random.default_rng(args.seed)
    for _ in range(args.n):
        text = sample(
            ckpt.model, ckpt.vocab, args.max_len, args.temperature, args.top_k, rng, args.prefix
        )
        print(text, flush=True)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from . import data
    from .checkpoint import load_checkpoint
    from .model import perplexity, stream_perplexity

    ckpt = load_checkpoint(args.model)
    text = data.read_corpus(args.corpus)
    vocab, level = ckpt.vocab, ckpt.vocab.level
    lines = data.corpus_lines(text, level)
    if not lines:
        raise data.CorpusError(f"corpus {args.corpus} has no tokens")
    bptt = int(ckpt.config.get("train", {}).get("bptt", 64))
    mode = ckpt.config.get("mode") or data.choose_mode(lines, level, bptt)
    seqs = data.encode_lines(vocab, lines)
    if mode == "stream":
        stream = [t for s in seqs for t in s]
        value, tokens = stream_perplexity(ckpt.model, stream), len(stream)
    else:
        value, tokens = perplexity(ckpt.model, seqs), sum(len(s) for s in seqs)
    unknown = sum(t == vocab.unk_id for s in seqs for t in s)
    extra = f", {unknown:,} of them <UNK>" if unknown else ""
    print(f"perplexity {value:.4f} per token ({tokens:,} tokens{extra}; {len(lines):,} lines)")
    return 0
