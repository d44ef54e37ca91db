"""Language models: vocabulary rules, causality, log-likelihoods, sampling, baselines, training.

Every model here is tiny (hidden 8-16), so the whole file runs in seconds.
"""

from __future__ import annotations

import math
import os
import signal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_seq
from tinygrad_seq import no_grad
from tinygrad_seq.lm import (
    KneserNey,
    LanguageModel,
    Vocab,
    load_checkpoint,
    perplexity,
    sample,
    stream_perplexity,
)
from tinygrad_seq.lm import data as lmdata
from tinygrad_seq.lm.sampling import draw
from tinygrad_seq.lm.train import TrainConfig, train
from tinygrad_seq.nn import functional as F

NAMES = """\
aardonyx
abelisaurus
achelousaurus
achillobator
acrocanthosaurus
aegyptosaurus
afrovenator
agilisaurus
alamosaurus
albertaceratops
albertosaurus
alectrosaurus
alioramus
allosaurus
alvarezsaurus
amargasaurus
ammosaurus
ampelosaurus
amygdalodon
anchiceratops
anchisaurus
ankylosaurus
anserimimus
antarctosaurus
apatosaurus
aragosaurus
aralosaurus
archaeoceratops
archaeopteryx
archaeornithomimus
argentinosaurus
arrhinoceratops
atlascopcosaurus
aucasaurus
austrosaurus
avaceratops
avalonia
avimimus
azendohsaurus
bactrosaurus
"""


def tiny(cell: str = "lstm", layers: int = 1, input: str = "onehot", V: int = 7, seed: int = 0):
    return LanguageModel(V, 8, cell, layers, input=input, rng=np.random.default_rng(seed)).to(
        np.float64
    )


# ================================================================ vocabulary


def test_vocab_orders_by_frequency_then_text_with_specials_first():
    v = Vocab.from_lines(["cab", "bc", "d"])
    # counts: b 2, c 2, a 1, d 1 -> ties broken by text; line ends are <EOS>, not tokens
    assert v.tokens == ["<EOS>", "<UNK>", "b", "c", "a", "d"]
    assert (v.eos_id, v.unk_id, len(v)) == (0, 1, 6)
    assert v.encode("abz") == [4, 2, 1]  # unseen 'z' -> <UNK>
    assert v.decode([3, 4, 0, 2]) == "cab"  # <EOS> dropped
    assert "\n" not in v.tokens


def test_char_vocab_keeps_newlines_as_characters():
    v = Vocab.from_text("abcdefgh \n")
    s = "\nb dafaf bghg"
    assert v.encode(s)[0] == v.tokens.index("\n") and len(v.encode(s)) == len(s)
    assert v.decode(v.encode(s)) == s
    # counts: a 1 ... and "\n" 2, "c" 2 in "c\nc\n" -> ties by text ("\n" < "c")
    assert Vocab.from_text("c\nc\n").tokens == ["<EOS>", "<UNK>", "\n", "c"]
    again = Vocab.from_array(v.to_array(), "char")
    assert again == v


@given(st.text(min_size=1, max_size=40), st.data())
@settings(max_examples=60, deadline=None)
def test_char_vocab_round_trips_every_string_of_its_characters(corpus, data):
    v = Vocab.from_text(corpus)
    s = data.draw(st.text(alphabet=sorted(set(corpus)), max_size=30))
    ids = v.encode(s)
    assert len(ids) == len(s) and v.unk_id not in ids and v.eos_id not in ids
    assert v.decode(ids) == s


def test_vocab_word_level_min_freq_and_round_trip():
    v = Vocab.from_text("the cat sat\nthe dog sat\nthe end", level="word", min_freq=2)
    assert v.tokens == ["<EOS>", "<UNK>", "the", "sat"]
    assert v.encode("the  cat sat") == [2, 1, 3]
    assert v.decode(v.encode("the sat")) == "the sat"
    again = Vocab.from_array(v.to_array(), v.level)
    assert again == v and again.tokens == v.tokens


def test_vocab_rejects_bad_arguments():
    with pytest.raises(ValueError, match="level"):
        Vocab.from_text("abc", level="byte")
    with pytest.raises(ValueError, match="min_freq"):
        Vocab.from_text("abc", min_freq=0)
    with pytest.raises(ValueError, match="<EOS>"):
        Vocab(["a", "b"])


# ================================================================ the model


@pytest.mark.parametrize(
    "cell, layers, input",
    [("rnn", 1, "onehot"), ("gru", 1, "onehot"), ("lstm", 2, "onehot"), ("lstm", 1, "embedding")],
)
def test_logits_at_step_t_ignore_tokens_at_t_and_later(cell, layers, input):
    model = tiny(cell, layers, input)
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 7, (3, 6))
    with no_grad():
        base = model(ids).data
        for t in range(6):
            changed = ids.copy()
            changed[:, t:] = (changed[:, t:] + rng.integers(1, 7, changed[:, t:].shape)) % 7
            logits = model(changed).data
            np.testing.assert_array_equal(logits[:, : t + 1], base[:, : t + 1])
            # the prediction at t itself must see y<t-1>: changing it moves step t's logits
            if t + 1 < 6:
                assert np.abs(logits[:, t + 1] - base[:, t + 1]).max() > 1e-6


def test_first_input_is_the_zero_vector_and_later_inputs_one_hot():
    model = tiny()
    x = model.inputs(np.array([[-1, 3, 0]])).data
    np.testing.assert_array_equal(x[0], np.vstack([np.zeros(7), np.eye(7)[3], np.eye(7)[0]]))
    emb = tiny(input="embedding")
    e = emb.inputs(np.array([[-1, 3]])).data
    np.testing.assert_array_equal(e[0, 0], 0.0)
    np.testing.assert_array_equal(e[0, 1], emb.embedding.weight.data[3])


def test_log_prob_is_the_sum_of_gathered_log_softmax_with_padding():
    model = tiny("gru")
    ids = np.array([[2, 3, 4, 0], [5, 0, 0, 0]])
    lengths = np.array([4, 2])
    logits = model(ids).data
    log_p = logits - logits.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    expected = [sum(log_p[b, t, ids[b, t]] for t in range(lengths[b])) for b in range(2)]
    got = model.log_prob(ids, lengths)
    np.testing.assert_allclose(got.data, expected, rtol=1e-12)
    # padding after a sequence's end changes nothing
    padded = ids.copy()
    padded[1, 2:] = [3, 4]
    np.testing.assert_allclose(model.log_prob(padded, lengths).data, got.data, rtol=1e-12)
    # differentiable: every parameter receives a gradient
    got.sum().backward()
    assert all(p.grad is not None and np.abs(p.grad).sum() > 0 for p in model.parameters())


def test_perplexity_is_exp_of_mean_nll_per_token():
    model = tiny("lstm")
    seqs = [[2, 3, 0], [4, 4, 5, 6, 0], [1, 0]]
    total = sum(float(model.log_prob(np.array([s])).data[0]) for s in seqs)
    n = sum(len(s) for s in seqs)
    expected = math.exp(-total / n)
    assert perplexity(model, seqs) == pytest.approx(expected, rel=1e-12)
    ids, lengths = lmdata.pad_batch(seqs)
    assert perplexity(model, ids, lengths) == pytest.approx(expected, rel=1e-12)
    # a stream read in windows with the state carried equals reading it in one go
    stream = [t for s in seqs for t in s]
    one_go = math.exp(-float(model.log_prob(np.array([stream])).data[0]) / len(stream))
    assert stream_perplexity(model, stream, window=3) == pytest.approx(one_go, rel=1e-12)


@pytest.mark.parametrize("cell, layers", [("rnn", 1), ("lstm", 2)])
def test_step_by_step_equals_the_unrolled_forward(cell, layers):
    model = tiny(cell, layers)
    ids = np.array([[3, 5, 2, 6, 0]])
    with no_grad():
        full = model(ids).data[0]
        logits, state = model.step(None)
        rows = [logits.data[0]]
        for token in ids[0, :-1]:
            logits, state = model.step([token], state)
            rows.append(logits.data[0])
    np.testing.assert_allclose(np.array(rows), full, rtol=1e-10, atol=1e-12)


def test_inference_ignores_dropout_and_keeps_the_mode():
    model = LanguageModel(7, 8, "gru", num_layers=2, dropout=0.5, rng=np.random.default_rng(0))
    seqs = [[2, 3, 0], [4, 5, 6, 0]]
    assert model.training
    assert perplexity(model, seqs) == perplexity(model, seqs)
    assert model.training  # restored
    model.eval()
    assert perplexity(model, seqs) == perplexity(model, seqs) and not model.training
    model.train()
    noisy = [float(model.log_prob(np.array([seqs[1]])).data[0]) for _ in range(2)]
    assert noisy[0] != noisy[1]  # training mode drops units


def test_model_rejects_bad_settings():
    with pytest.raises(ValueError, match="cell"):
        LanguageModel(5, 4, cell="transformer")
    with pytest.raises(ValueError, match="input"):
        LanguageModel(5, 4, input="bytes")
    with pytest.raises(IndexError, match="token ids"):
        tiny()(np.array([[9]]))


# ================================================================ sampling


@pytest.fixture(scope="module")
def vocab_and_model():
    vocab = Vocab.from_lines(NAMES.splitlines())
    model = LanguageModel(len(vocab), 12, "lstm", rng=np.random.default_rng(3))
    return vocab, model


def greedy(model, vocab, max_len, prefix=""):
    """Argmax decoding by re-running the whole prefix each time (independent of `step`)."""
    ids = vocab.encode(prefix)
    new = []
    with no_grad():
        for _ in range(max_len):
            logits = model(np.array([[*ids, *new, 0]])).data[0, len(ids) + len(new)]
            token = int(np.argmax(logits))
            if token == vocab.eos_id:
                break
            new.append(token)
    return prefix + vocab.decode(new)


def test_same_seed_same_text_and_global_random_state_untouched(vocab_and_model):
    vocab, model = vocab_and_model
    np.random.seed(123)  # noqa: NPY002 - the legacy global state must stay untouched
    tinygrad_seq.manual_seed(5)
    before = np.random.get_state()  # noqa: NPY002
    library = tinygrad_seq.random.default_rng().bit_generator.state
    texts = [sample(model, vocab, seed=s) for s in (0, 0, 1, 2, 3)]
    fresh = [sample(model, vocab) for _ in range(3)]
    assert texts[0] == texts[1]
    assert len(set(texts[1:])) > 1
    assert all(isinstance(t, str) for t in fresh)
    after = np.random.get_state()  # noqa: NPY002
    assert before[0] == after[0] and np.array_equal(before[1], after[1]) and before[2:] == after[2:]
    assert tinygrad_seq.random.default_rng().bit_generator.state == library


def test_top_k_one_is_greedy_and_low_temperature_approaches_it(vocab_and_model):
    vocab, model = vocab_and_model
    expected = greedy(model, vocab, 12, prefix="a")
    for seed in range(3):
        assert sample(model, vocab, max_len=12, top_k=1, seed=seed, prefix="a") == expected
        assert sample(model, vocab, max_len=12, temperature=1e-3, seed=seed, prefix="a") == expected


def test_sampling_limits_prefix_and_eos(vocab_and_model):
    vocab, model = vocab_and_model
    assert sample(model, vocab, max_len=0, prefix="tyr") == "tyr"
    for seed in range(5):
        text = sample(model, vocab, max_len=4, seed=seed, prefix="ab")
        assert text.startswith("ab") and len(text) <= 6
    stopper = LanguageModel(len(vocab), 4, "rnn")
    stopper.output.bias.data[:] = -50.0
    stopper.output.bias.data[vocab.eos_id] = 50.0
    assert sample(stopper, vocab, seed=0, prefix="rex") == "rex"


@pytest.mark.parametrize(
    "kwargs", [{"temperature": 0}, {"temperature": -1.0}, {"top_k": 0}, {"max_len": -1}]
)
def test_sampling_rejects_bad_arguments(vocab_and_model, kwargs):
    vocab, model = vocab_and_model
    with pytest.raises(ValueError):
        sample(model, vocab, **kwargs)


def test_draw_follows_the_tempered_top_k_softmax():
    logits = np.array([1.0, 2.0, 0.5, -1.0])
    rng = np.random.default_rng(0)
    n = 10_000
    for temperature, top_k in ((1.0, None), (0.5, None), (1.0, 2)):
        counts = np.bincount([draw(logits, rng, temperature, top_k) for _ in range(n)], minlength=4)
        z = logits / temperature
        if top_k:
            z = np.where(z >= np.sort(z)[-top_k], z, -np.inf)
        p = np.exp(z - z.max())
        p /= p.sum()
        np.testing.assert_allclose(counts / n, p, atol=0.02)  # 4 standard errors


# ================================================================ n-gram baselines


@pytest.mark.parametrize("order", [1, 2, 3])
def test_kneser_ney_is_a_distribution_for_every_history(order):
    vocab = Vocab.from_lines(NAMES.splitlines())
    seqs = lmdata.encode_lines(vocab, NAMES.splitlines())
    lm = KneserNey(order, len(vocab)).fit(seqs)
    for history in ([], [2], [2, 3], [5, 9], [1, 1]):
        total = sum(lm.prob(w, history) for w in range(len(vocab)))
        assert total == pytest.approx(1.0, abs=1e-12)
    assert all(0.1 <= d <= 0.9 for d in lm.discounts)


def test_kneser_ney_orders_rank_as_expected_on_names():
    vocab = Vocab.from_lines(NAMES.splitlines())
    seqs = lmdata.encode_lines(vocab, NAMES.splitlines())
    train_seqs, held = seqs[:34], seqs[34:]
    ppl = [KneserNey(n, len(vocab)).fit(train_seqs).perplexity(held) for n in (1, 2, 3)]
    assert ppl[0] > ppl[1] > ppl[2] > 1.0
    assert ppl[0] < len(vocab)  # better than uniform


# ================================================================ data


def test_pad_batch_and_targets_ignore_padding():
    ids, lengths = lmdata.pad_batch([[3, 4, 0], [5, 0]])
    targets = lmdata.targets_of(ids, lengths)
    assert targets.tolist() == [[3, 4, 0], [5, 0, lmdata.IGNORE]]


def test_line_batches_visit_every_line_once_per_epoch_and_are_reproducible():
    seqs = [[i % 5 + 2] * (i // 5 + 1) + [0] for i in range(22)]  # all distinct
    a = lmdata.LineBatches(seqs, batch_size=5, seed=1)
    b = lmdata.LineBatches(seqs, batch_size=5, seed=1)
    assert a.per_epoch == 4
    seen = []
    for step in range(4):
        batch = a.batch(step)
        np.testing.assert_array_equal(batch.ids, b.batch(step).ids)
        for row, n in zip(batch.ids, batch.lengths, strict=True):
            seen.append(tuple(row[:n]))
    assert len(seen) == 20 and len(set(seen)) == 20  # 20 distinct lines (2 wait a turn)


def test_stream_windows_tile_each_row():
    stream = list(range(2, 32))
    data = lmdata.StreamBatches(stream, batch_size=3, bptt=4)
    rows = np.concatenate([data.batch(k).ids for k in range(data.per_epoch)], axis=1)
    np.testing.assert_array_equal(rows, np.array(stream).reshape(3, 10))
    assert data.batch(0).reset and data.batch(0).first is None
    assert data.batch(data.per_epoch).reset


def test_split_heldout_is_seeded_and_disjoint():
    lines = [f"line{i}" for i in range(50)]
    train_a, held_a = lmdata.split_heldout(lines, 0.1, seed=4, mode="lines")
    train_b, held_b = lmdata.split_heldout(lines, 0.1, seed=4, mode="lines")
    assert (train_a, held_a) == (train_b, held_b) and len(held_a) == 5
    assert not set(train_a) & set(held_a) and len(train_a) + len(held_a) == 50
    assert lmdata.split_heldout(lines, 0.1, 4, "stream")[1] == lines[-5:]


def test_padded_loss_counts_real_tokens_only():
    model = tiny("lstm")
    seqs = [[2, 3, 4, 0], [5, 0]]
    ids, lengths = lmdata.pad_batch(seqs)
    logits = model(ids)
    loss = F.cross_entropy(
        logits.reshape(-1, 7), lmdata.targets_of(ids, lengths).reshape(-1),
        ignore_index=lmdata.IGNORE,
    )  # fmt: skip
    nll = -sum(float(model.log_prob(np.array([s])).data[0]) for s in seqs)
    assert float(loss.data) == pytest.approx(nll / 6, rel=1e-12)


# ================================================================ training, checkpoints, resume


def small_config(tmp_path, corpus_text: str = NAMES, **kw) -> TrainConfig:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(corpus_text)
    settings = dict(
        corpus=str(corpus), hidden=8, steps=12, batch_size=4, checkpoint_every=5,
        samples=0, out=str(tmp_path / "run.npz"), lr=0.02,
    )  # fmt: skip
    settings.update(kw)
    return TrainConfig(**settings)


def quiet(_: str) -> None:
    pass


@pytest.mark.parametrize("level", ["char", "word"])
def test_resume_gives_the_same_losses_as_an_uninterrupted_run(tmp_path, level):
    text = NAMES
    if level == "word":
        text = "\n".join(" ".join(NAMES.split()[i : i + 5]) for i in range(0, 40, 5))
    kw = dict(level=level, layers=2, dropout=0.3)  # the dropout masks must replay too
    if level == "word":  # running text: 3-step windows, the state carried between them
        kw["bptt"] = 3
    whole = train(small_config(tmp_path, text, out=str(tmp_path / "a.npz"), **kw), log=quiet)
    part = small_config(tmp_path, text, steps=7, out=str(tmp_path / "b.npz"), **kw)
    first = train(part, log=quiet)
    assert first.losses == whole.losses[:7]
    part.steps = 12
    rest = train(part, resume=True, log=quiet)
    assert rest.steps == 12
    assert rest.losses == whole.losses  # bit for bit, not approximately
    a, b = load_checkpoint(tmp_path / "a.npz"), load_checkpoint(tmp_path / "b.npz")
    for (name, p), (_, q) in zip(
        a.model.named_parameters(), b.model.named_parameters(), strict=True
    ):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    assert a.config["mode"] == ("stream" if level == "word" else "lines")
    assert (a.carry is not None) == (level == "word")


def test_running_text_carries_the_state_across_bptt_windows(tmp_path):
    text = "\n".join(" ".join(NAMES.split()[i : i + 5]) for i in range(0, 40, 5))
    config = small_config(tmp_path, text, level="word", bptt=3, dropout=0.0, steps=4,
                          optimizer="sgd", lr=1e-30)  # fmt: skip  # (the weights stay put)
    result = train(config, log=quiet)
    ckpt = load_checkpoint(config.out)
    assert ckpt.config["mode"] == "stream" and ckpt.carry is not None
    lines = lmdata.split_heldout(lmdata.corpus_lines(text, "word"), 0.1, 0, "stream")[0]
    stream = [t for s in lmdata.encode_lines(ckpt.vocab, lines) for t in s]
    rows = lmdata.StreamBatches(stream, batch_size=4, bptt=3).rows  # 4 rows of 10 tokens
    assert rows.shape == (4, 10)
    # four windows (3 + 3 + 3 + 1 steps) with the state carried = each row read in one go
    nll = sum(loss * 4 * n for loss, n in zip(result.losses, (3, 3, 3, 1), strict=True))
    with no_grad():
        expected = -float(ckpt.model.log_prob(rows).data.astype(np.float64).sum())
    assert nll == pytest.approx(expected, rel=1e-5)


def test_ctrl_c_saves_a_checkpoint_that_resumes_exactly(tmp_path):
    whole = train(small_config(tmp_path, out=str(tmp_path / "a.npz")), log=quiet)

    def interrupt(step, loss):
        if step == 4:
            os.kill(os.getpid(), signal.SIGINT)

    config = small_config(tmp_path)
    stopped = train(config, log=quiet, on_step=interrupt)
    assert stopped.interrupted and stopped.steps == 4
    assert load_checkpoint(config.out).step == 4
    resumed = train(config, resume=True, log=quiet)
    assert resumed.losses == whole.losses


def test_training_learns_and_reports_baselines_and_samples(tmp_path):
    lines: list[str] = []
    config = small_config(tmp_path, steps=60, hidden=16, samples=3, checkpoint_every=100)
    result = train(config, log=lines.append)
    assert np.mean(result.losses[-10:]) < np.mean(result.losses[:10]) - 0.5
    assert set(result.heldout) == {
        "lstm (this model)",
        "trigram (Kneser-Ney)",
        "bigram (Kneser-Ney)",
    }
    assert all(v > 1.0 for v in result.heldout.values())
    assert len(result.samples) == 3
    train_lines = set(lmdata.split_heldout(NAMES.splitlines(), 0.1, 0, "lines")[0])
    for text, note in result.samples:
        assert ("novel" in note) == (text not in train_lines)
    report = "\n".join(lines)
    assert "held-out perplexity" in report and "trigram" in report and "samples" in report
    ckpt = load_checkpoint(config.out)
    assert ckpt.step == 60 and len(ckpt.losses) == 60
    assert ckpt.config["train"]["hidden"] == 16 and ckpt.vocab.level == "char"


def test_sgd_and_clip_by_value_and_gru_train_too(tmp_path):
    config = small_config(tmp_path, optimizer="sgd", lr=0.5, clip_mode="value", clip=1.0,
                          cell="gru", steps=4)  # fmt: skip
    result = train(config, log=quiet)
    assert len(result.losses) == 4 and all(np.isfinite(result.losses))
    saved = load_checkpoint(config.out)
    assert saved.config["train"]["optimizer"] == "sgd" and set(saved.optimizer) == {
        "lr",
        "momentum",
        "weight_decay",
    }


def test_sampling_accepts_numpy_temperatures():
    vocab = Vocab.from_text("abc\nabd", level="char")
    model = tiny(V=len(vocab))
    a = sample(model, vocab, max_len=5, temperature=np.float32(0.7), seed=3)
    b = sample(model, vocab, max_len=5, temperature=0.7, seed=3)
    assert a == b
    with pytest.raises(ValueError, match="temperature"):
        sample(model, vocab, temperature=np.float32(0.0))


def test_literal_special_tokens_in_text_are_unknown_words():
    vocab = Vocab.from_text("the cat <EOS> sat\nthe <UNK> dog", level="word")
    assert "<EOS>" not in vocab.tokens[2:] and "<UNK>" not in vocab.tokens[2:]
    ids = vocab.encode("the <EOS> cat")
    assert ids == [vocab.encode("the")[0], vocab.unk_id, vocab.encode("cat")[0]]
