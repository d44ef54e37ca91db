"""The four RNN architecture types under examples/: each trains to its stated accuracy.

Each example's `main(steps=..., seed=...)` trains on data it generates and returns a
held-out accuracy. Fewer steps than the scripts' defaults keep this quick; the thresholds
are far above what an untrained (or broken) model reaches, which is checked too.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# (example, architecture, steps for the test, accuracy it must reach, untrained at most)
CASES = [
    ("ner_tagger", "many-to-many, T_x = T_y", 40, 0.97, 0.8),
    ("sentiment", "many-to-one", 60, 0.95, 0.7),
    ("generate_names", "one-to-many", 150, 0.9, 0.05),
    ("words_to_digits", "many-to-many, T_x != T_y", 200, 0.9, 0.05),
]


@pytest.mark.parametrize("name, kind, steps, accuracy, untrained", CASES, ids=[c[0] for c in CASES])
def test_example_trains_to_its_stated_accuracy(name, kind, steps, accuracy, untrained):
    example = load(name)
    assert example.__doc__.lower().startswith(kind.replace("!=", "≠").lower())
    reached = example.main(steps=steps, seed=0)
    assert reached >= accuracy, f"{name} ({kind}): accuracy {reached:.3f} < {accuracy}"
    assert example.main(steps=0, seed=0) <= untrained  # what no learning gives


def test_every_example_is_tested():
    scripts = {p.stem for p in EXAMPLES.glob("*.py")}
    assert scripts == {c[0] for c in CASES} | {"adding_problem"}  # an MSE, tested below


def test_adding_problem_learns_and_the_regulariser_is_differentiated():
    import tinygrad_seq
    from tinygrad_seq.autograd import enable_grad, grad, gradcheck
    from tinygrad_seq.nn import Linear, RNNCell

    adding = load("adding_problem")
    assert adding.__doc__.startswith("Long-term dependency")
    baseline = adding.baseline(T=10)
    assert abs(baseline - 1 / 6) < 0.02  # Var(U + U') = 1/6: what always answering 1.0 scores
    reached = adding.main(steps=300, seed=0, regularise=2.0, T=10)  # 0.035 when measured
    assert reached < 0.08, f"held-out MSE {reached:.4f}, baseline {baseline:.4f}"

    # A tiny float64 RNN: Ω against the docstring's closed form for a tanh cell, in NumPy
    tinygrad_seq.manual_seed(1)
    cell, head = RNNCell(2, 3).to(np.float64), Linear(3, 1).to(np.float64)
    x, y = adding.adding_batch(2, 4, np.random.default_rng(0), np.float64)

    def loss_fn(a_T):
        return adding.mse(head(a_T).reshape(-1), y)

    W, U, b = cell.W_aa.data, cell.W_ax.data, cell.b_a.data
    w_y, b_y = head.weight.data, head.bias.data
    a, states = np.zeros((2, 3)), []
    for t in range(4):
        a = np.tanh(a @ W.T + x[:, t] @ U.T + b)  # a<t+1>
        states.append(a)
    residual = (states[-1] @ w_y.T + b_y)[:, 0] - y  # ŷ − y
    g = 2 * residual[:, None] * w_y / len(y)  # g<T> = ∂L/∂a<T>, L = mean (ŷ − y)²
    terms = []
    for k in (2, 1, 0):  # the steps a<k> -> a<k+1>, g<k+1> = dL/da<k+1> (0-based)
        unit = g / np.linalg.norm(g, axis=1, keepdims=True)
        jump = (unit * (1 - states[k + 1] ** 2)) @ W  # ĝ<k+1> ∂a<k+1>/∂a<k>
        terms.append(np.mean((np.linalg.norm(jump, axis=1) - 1) ** 2))
        g = (g * (1 - states[k + 1] ** 2)) @ W  # g<k> by BPTT
    loss, omega = adding.regulariser(cell, x, loss_fn)
    assert np.isclose(loss.item(), np.mean(residual**2), rtol=1e-12)
    assert np.isclose(omega.item(), np.mean(terms), rtol=1e-10)
    assert omega.item() > 1e-3  # a non-trivial value to differentiate

    # Pascanu's Ω holds g constant: its gradient is that of W_aa ↦ Ω(W_aa; g fixed at g(W_aa))
    (analytic,) = grad(omega, cell.W_aa)
    states = adding.unroll(cell, x)
    fixed = [g.detach() for g in grad(loss_fn(states[-1]), states)]

    def omega_with_g_fixed(W_aa):  # gradcheck swaps W_aa's data in place: the cell sees it
        with enable_grad():  # Ω needs recorded states, also inside the finite differences
            return adding.omega(adding.unroll(cell, x), fixed)

    (reference,) = grad(omega_with_g_fixed(cell.W_aa), cell.W_aa)
    assert np.allclose(analytic.data, reference.data, rtol=1e-12, atol=0)
    assert np.abs(analytic.data).max() > 1e-3
    assert gradcheck(omega_with_g_fixed, [cell.W_aa], atol=1e-7, rtol=1e-5)

    # Ω as a whole function of the parameters: differentiating g = ∂L/∂a too, through the
    # backward pass that `grad(..., create_graph=True)` recorded
    def full_omega(W_aa, W_ax, b_a):
        return adding.regulariser(cell, x, loss_fn, detach=False)[1]

    assert gradcheck(full_omega, [cell.W_aa, cell.W_ax, cell.b_a], atol=1e-7, rtol=1e-5)
    (full,) = grad(full_omega(cell.W_aa, cell.W_ax, cell.b_a), cell.W_aa)
    assert not np.allclose(full.data, analytic.data, rtol=1e-3)  # g's own dependence counts


def test_ner_data_marks_teddy_as_a_name_only_before_a_surname():
    ner = load("ner_tagger")
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        words, tags = ner.sentence(rng)
        assert len(words) == len(tags)
        for i, w in enumerate(words):
            if w in ner.FIRST or w in ner.LAST:
                assert tags[i] == 1
            if w == "teddy":
                seen.add(tags[i])
                assert tags[i] == int(words[i + 1] in (*ner.LAST, "roosevelt"))
    assert seen == {0, 1}  # both readings occur


def test_sentiment_negation_flips_the_label():
    sentiment = load("sentiment")
    rng = np.random.default_rng(0)
    for _ in range(200):
        words, label = sentiment.review(rng)
        if words[0] == "there":
            continue
        polarity = int(words[-1] in sentiment.POSITIVE)
        assert label == polarity ^ int("not" in words)


def test_generated_names_follow_the_grammar():
    names = load("generate_names")
    for word in names.names(100, np.random.default_rng(0)):
        assert names.GRAMMAR.match(word), word
    assert not names.GRAMMAR.match("tyrannosaurus")  # "ty", "nn": not consonant-vowel pairs


@pytest.mark.parametrize(
    "n, words",
    [
        (0, "zero"),
        (7, "seven"),
        (13, "thirteen"),
        (40, "forty"),
        (42, "forty two"),
        (100, "one hundred"),
        (105, "one hundred and five"),
        (342, "three hundred and forty two"),
        (999, "nine hundred and ninety nine"),
    ],
)
def test_numbers_in_words(n, words):
    assert load("words_to_digits").in_words(n) == words


def test_encoder_decoder_targets_end_with_eos_and_lengths_differ():
    w2d = load("words_to_digits")
    x, lengths, y = w2d.encode(np.array([342, 7]))
    assert lengths.tolist() == [5, 1]  # T_x
    assert y.tolist() == [[3, 4, 2, w2d.EOS], [7, w2d.EOS, -1, -1]]  # T_y = 4 and 2
    assert re.fullmatch(r"\d{0,4}", "".join(w2d.Translator().translate(x[:1], lengths[:1])))
