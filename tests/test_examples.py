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
    assert scripts == {c[0] for c in CASES}


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
