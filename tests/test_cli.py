"""The command line: `train`, `sample`, `eval` end to end, and every kind of bad input.

Each bad input must give exactly one `error:` line on stderr, a non-zero exit status, no
traceback, and leave an existing checkpoint byte-for-byte as it was.
"""

from __future__ import annotations

import os
import re
import zipfile

import numpy as np
import pytest

from tinygrad_seq.cli import main
from tinygrad_seq.lm import load_checkpoint

CORPUS = "\n".join(
    "aardonyx abelisaurus achelousaurus achillobator acrocanthosaurus aegyptosaurus afrovenator "
    "agilisaurus alamosaurus albertaceratops albertosaurus alectrosaurus alioramus allosaurus "
    "alvarezsaurus amargasaurus ammosaurus ampelosaurus amygdalodon anchiceratops anchisaurus "
    "ankylosaurus anserimimus antarctosaurus apatosaurus aragosaurus aralosaurus archaeoceratops "
    "archaeopteryx argentinosaurus".split()
)
TINY = ["--hidden", "8", "--steps", "6", "--batch-size", "4", "--samples", "2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A corpus and a checkpoint trained on it (tiny: a second or so)."""
    folder = tmp_path_factory.mktemp("run")
    corpus = folder / "names.txt"
    corpus.write_text(CORPUS + "\n")
    model = folder / "names.npz"
    assert main(["train", str(corpus), *TINY, "--out", str(model)]) == 0
    return corpus, model


def run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# ================================================================ end to end


def test_train_sample_eval_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    corpus = tmp_path / "names.txt"
    corpus.write_text(CORPUS + "\n")
    code, out, err = run(capsys, ["train", "names.txt", *TINY, "--cell", "gru", "--seed", "3"])
    assert code == 0, err
    assert (tmp_path / "names.npz").exists()  # the default --out: CORPUS's name with .npz
    assert re.search(r"held-out perplexity", out)
    rows = dict(re.findall(r"^\s+(\w+) \(.*?\)\s+([\d.]+)$", out, re.M))
    assert set(rows) == {"gru", "trigram", "bigram"}
    assert "step 6/6" in err  # stderr is not a terminal here: plain progress lines, no bar
    samples = out.split("samples")[1].splitlines()[1:3]
    assert len(samples) == 2 and all(s.startswith("  ") for s in samples)

    code, first, _ = run(capsys, ["sample", "names.npz", "--n", "4", "--seed", "7"])
    assert code == 0 and len(first.splitlines()) == 4
    code, again, _ = run(capsys, ["sample", "names.npz", "--n", "4", "--seed", "7"])
    assert again == first
    code, out, _ = run(capsys, ["sample", "names.npz", "--n", "3", "--prefix", "ab",
                                "--top-k", "1", "--max-len", "5"])  # fmt: skip
    lines = out.splitlines()
    assert code == 0 and len(set(lines)) == 1 and lines[0].startswith("ab") and len(lines[0]) <= 7

    code, out, _ = run(capsys, ["eval", "names.npz", "names.txt"])
    ppl = float(re.match(r"perplexity ([\d.]+) per token", out).group(1))
    assert code == 0 and 1.0 < ppl < 40.0


def test_train_without_arguments_uses_the_bundled_corpus(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, ["train", "--hidden", "8", "--steps", "3", "--samples", "0"])
    assert code == 0, err
    assert "bundled dinosaur names: 1,171 training sequences" in out
    assert "held out: 130 of 1,301 lines (10%, drawn with seed 0)" in out
    assert load_checkpoint(tmp_path / "dinosaurs.npz").step == 3


def test_resume_on_the_command_line(trained, tmp_path, capsys):
    corpus, model = trained
    copy = tmp_path / "copy.npz"
    copy.write_bytes(model.read_bytes())
    code, out, err = run(capsys, ["train", str(corpus), "--out", str(copy), "--resume",
                                  "--steps", "9", "--samples", "0"])  # fmt: skip
    assert code == 0, err
    assert "resuming at step 6 of 9" in out
    assert load_checkpoint(copy).step == 9


@pytest.mark.parametrize("command", ["train", "sample", "eval"])
def test_help_shows_defaults(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and f"usage: tinygrad-seq {command}" in out
    if command != "eval":  # eval has no options, so no defaults to show
        assert "(default:" in out
    if command == "train":
        assert "dinosaurs.npz" in out and "(default: lstm)" in out


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--cell", "transformer"])
    assert exit_info.value.code == 2


# ================================================================ bad input


def expect_error(capsys, argv, pattern, guarded=None):
    before = guarded.read_bytes() if guarded is not None else None
    code, out, err = run(capsys, argv)
    lines = err.strip().splitlines()
    assert code == 1, (out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert re.search(pattern, lines[0]), lines[0]
    if guarded is not None:
        assert guarded.read_bytes() == before


def guarded_copy(trained, tmp_path):
    """A copy of a good checkpoint that a failing `train --out` must leave untouched."""
    copy = tmp_path / "keep.npz"
    copy.write_bytes(trained[1].read_bytes())
    return copy


@pytest.mark.parametrize(
    "content, pattern",
    [
        (None, "does not exist"),
        (b"", "empty"),
        (b"  \n\n \n", "empty"),
        (b"abc\x00\x01\x02\xff", "binary"),
        (b"caf\xe9\nna\xefve\n", "not UTF-8"),
        (b"abc\n", "too small: 4 tokens.*need at least 9.*batch-size 4"),
    ],
    ids=["missing", "empty", "blank", "binary", "latin-1", "smaller-than-a-batch"],
)
def test_bad_corpus(trained, tmp_path, capsys, content, pattern):
    corpus = tmp_path / "corpus.txt"
    if content is not None:
        corpus.write_bytes(content)
    keep = guarded_copy(trained, tmp_path)
    expect_error(capsys, ["train", str(corpus), *TINY, "--out", str(keep)], pattern, keep)
    if content is not None and "small" not in pattern:  # eval needs no batches
        expect_error(capsys, ["eval", str(trained[1]), str(corpus)], pattern)


def _corrupt(path, good):
    data = bytearray(good.read_bytes())
    for i in range(200, len(data), 97):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def _truncated(path, good):
    path.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])


def _foreign(path, good):
    np.savez(path, weights=np.ones((3, 3)), labels=np.arange(3))


def _pickled(path, good):
    np.savez(path, format=np.array("tinygrad_seq.lm"), config=np.array([{"a": 1}], dtype=object))


def _not_npz(path, good):
    path.write_text("hello, I am a text file\n")


@pytest.mark.parametrize(
    "make, pattern",
    [
        (_corrupt, "not a readable .npz|not an .npz|damaged"),
        (_truncated, "not a readable .npz|not an .npz"),
        (_foreign, "not a tinygrad-seq language-model checkpoint"),
        (_pickled, "pickle"),
        (_not_npz, "not a readable .npz|not an .npz"),
    ],
    ids=["corrupted", "truncated", "another-program", "pickled", "text"],
)
@pytest.mark.parametrize("command", ["sample", "eval", "resume"])
def test_bad_checkpoint(trained, tmp_path, capsys, make, pattern, command):
    corpus, good = trained
    bad = tmp_path / "bad.npz"
    make(bad, good)
    argv = {
        "sample": ["sample", str(bad), "--n", "2"],
        "eval": ["eval", str(bad), str(corpus)],
        "resume": ["train", str(corpus), "--out", str(bad), "--resume"],
    }[command]
    expect_error(capsys, argv, pattern, bad)


def test_missing_checkpoint(tmp_path, capsys):
    expect_error(capsys, ["sample", str(tmp_path / "nope.npz")], "does not exist")
    expect_error(capsys, ["train", "--resume", "--out", str(tmp_path / "nope.npz")],
                 "no checkpoint")  # fmt: skip


@pytest.mark.parametrize(
    "options, pattern",
    [
        (["--temperature", "0"], "temperature must be > 0"),
        (["--temperature", "-0.5"], "temperature must be > 0"),
        (["--top-k", "0"], "top_k must be a positive integer"),
        (["--max-len", "-1"], "max_len"),
    ],
)
def test_bad_sampling_options(trained, capsys, options, pattern):
    expect_error(capsys, ["sample", str(trained[1]), *options], pattern, trained[1])


def test_unwritable_out_is_refused_before_training(trained, tmp_path, capsys):
    corpus, _ = trained
    expect_error(capsys, ["train", str(corpus), *TINY, "--out", str(tmp_path / "no" / "m.npz")],
                 "does not exist")  # fmt: skip
    expect_error(capsys, ["train", str(corpus), *TINY, "--out", str(tmp_path)], "directory")
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    expect_error(capsys, ["train", str(corpus), *TINY, "--out", str(blocker / "m.npz")],
                 "does not exist")  # fmt: skip


def test_bad_training_settings_leave_the_checkpoint_alone(trained, tmp_path, capsys):
    corpus, _ = trained
    keep = guarded_copy(trained, tmp_path)
    for options, pattern in [
        (["--steps", "0"], "--steps must be at least 1"),
        (["--lr", "-1"], "--lr must be a positive"),
        (["--heldout", "1.5"], "--heldout"),
        (["--resume", "--hidden", "16"], "--hidden 16 .*checkpoint has 8"),
    ]:
        expect_error(capsys, ["train", str(corpus), *TINY, *options, "--out", str(keep)],
                     pattern, keep)  # fmt: skip


def test_resume_refuses_a_changed_corpus(trained, tmp_path, capsys):
    keep = guarded_copy(trained, tmp_path)
    other = tmp_path / "other.txt"
    other.write_text(CORPUS.replace("a", "o") + "\n")
    expect_error(capsys, ["train", str(other), "--resume", "--out", str(keep)],
                 "differs from the one", keep)  # fmt: skip


def test_checkpoint_holds_no_pickle(trained):
    with zipfile.ZipFile(trained[1]) as archive:
        names = archive.namelist()
    assert {"format.npy", "config.npy", "vocab.npy", "step.npy"} <= set(names)
    with np.load(trained[1], allow_pickle=False) as arrays:  # would raise on any object array
        assert all(arrays[k].dtype != object for k in arrays.files)


@pytest.mark.parametrize("command", [["sample", "model.npz"], ["train"], ["vanishing"]])
def test_negative_seed_is_a_usage_error(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--seed", "-1"])
    assert exit_info.value.code == 2
    assert "--seed" in capsys.readouterr().err


def test_gradcheck_command_prints_a_passing_row_per_builtin_cell(capsys):
    assert main(["gradcheck"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    cells = [" ".join(r[:-4]) for r in rows if r[0].startswith("Recurrent(")]
    assert len(cells) == 7  # rnn tanh/relu, gru full/simplified/reset_after, lstm ±peephole
    for row in rows:
        assert row[-1] == "pass" and float(row[-3]) < 1e-6  # max |analytic − numerical|


def test_gradcheck_command_fails_on_a_wrong_gradient(capsys, monkeypatch):
    import tinygrad_seq.cli as cli
    from tinygrad_seq import Function, Tensor

    class ForgetsChainRule(Function):
        def forward(self, x):
            return np.tanh(x)

        def backward(self, grad):
            return grad

    x = Tensor(np.linspace(-1, 1, 6).reshape(2, 3), requires_grad=True)
    monkeypatch.setattr(
        cli, "_gradcheck_cases", lambda: [("wrong", lambda: (ForgetsChainRule.apply, [x]))]
    )
    assert main(["gradcheck"]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[1].split()[-1] == "FAIL"
    assert err.strip().splitlines() == [
        "error: 1 of 1 cases failed (atol 1e-05, rtol 0.001): wrong"
    ]


@pytest.mark.parametrize("argv", [["--atol", "nan"], ["--rtol", "-1"], ["--atol", "inf"]])
def test_gradcheck_command_refuses_invalid_tolerances(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(["gradcheck", *argv])
    assert exit_info.value.code == 2
    assert "a tolerance must be a finite number >= 0" in capsys.readouterr().err


# ================================================================ running text, odd names, --out


PROSE = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was "
    "the age of foolishness, it was the epoch of belief, it was the epoch of incredulity, it "
    "was the season of Light, it was the season of Darkness, it was the spring of hope, it "
    "was the winter of despair, we had everything before us, we had nothing before us, we "
    "were all going direct to Heaven, we were all going direct the other way; in short, the "
    "period was so far like the present period, that some of its noisiest authorities "
    "insisted on its being received, for good or for evil, in the superlative degree of "
    "comparison only. There were a king with a large jaw and a queen with a plain face."
)


def test_running_text_on_one_line_trains_and_says_how_it_was_split(tmp_path, capsys):
    assert len(PROSE) > 600 and "\n" not in PROSE
    corpus = tmp_path / "story.txt"
    corpus.write_text(PROSE)
    out_path = tmp_path / "story.npz"
    code, out, err = run(capsys, ["train", str(corpus), *TINY, "--out", str(out_path)])
    assert code == 0, err
    head = out.splitlines()[:2]
    n = len(PROSE) + 1  # the characters and one <EOS>
    held = round(0.1 * n)
    assert f"running text, {n - held:,} training tokens" in head[0]
    assert head[1] == f"held out: the last {held} of {n} tokens of the stream (10%, by position)"
    assert load_checkpoint(out_path).config["mode"] == "stream"


def test_a_few_short_lines_train_as_running_text(tmp_path, capsys):
    corpus = tmp_path / "few.txt"
    corpus.write_text("abc\ndef\nghi\n")  # 3 lines cannot fill a batch of 4 and hold one out
    code, out, err = run(capsys, ["train", str(corpus), *TINY, "--out", str(tmp_path / "m.npz")])
    assert code == 0, err
    assert "held out: the last 1 of 12 tokens of the stream" in out


def test_a_corpus_name_that_is_not_utf8_trains_and_prints(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = os.fsdecode(b"caf\xe9.txt")
    with open(name, "w") as f:
        f.write("abc\ndef\nghij\nklm\nnop\nqrs\n" * 4)
    code, out, err = run(capsys, ["train", name, *TINY])
    assert code == 0, err
    assert "caf\\udce9.txt" in out and os.path.exists(os.fsdecode(b"caf\xe9.npz"))


@pytest.mark.parametrize("out", ["", "missing_dir/", "corpus"])
def test_bad_out_is_refused_before_training(tmp_path, capsys, out):
    corpus = tmp_path / "c.txt"
    corpus.write_text("abc\ndef\nghij\nklm\nnop\nqrs\n" * 4)
    before = corpus.read_bytes()
    target = str(corpus) if out == "corpus" else f"{tmp_path}/{out}" if out else out
    code, stdout, err = run(capsys, ["train", str(corpus), *TINY, "--out", target])
    assert code == 1 and "step" not in stdout, stdout  # nothing trained
    assert err.startswith("error: --out") and len(err.strip().splitlines()) == 1, err
    assert corpus.read_bytes() == before


def test_a_diverging_run_warns_and_reports_inf_perplexity(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("abc\ndef\nghij\nklm\nnop\nqrs\n" * 4)
    argv = ["train", str(corpus), *TINY, "--out", str(tmp_path / "m.npz"), "--lr", "1e300"]
    code, out, err = run(capsys, argv)
    assert code == 0, err
    warned = [line for line in err.splitlines() if not line.startswith("step ")]
    assert len(warned) == 1 and warned[0].startswith("warning: the training loss is nan"), err
    code, out, err = run(capsys, ["eval", str(tmp_path / "m.npz"), str(corpus)])
    assert code == 0 and out.startswith("perplexity nan"), (out, err)
