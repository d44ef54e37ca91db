"""The documented facts about vanishing and exploding gradients, on fixed seeds, and the
`tinygrad-seq vanishing` command."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tinygrad_seq.cli import main
from tinygrad_seq.vanishing import (
    clip_report,
    decay_table,
    format_table,
    make_cell,
    measure,
    reach,
)

STEPS = 60


@pytest.fixture(scope="module")
def small_scale_rows():
    return {
        seed: {(r.cell, r.state): r for r in decay_table(["rnn", "lstm"], [0.5], STEPS, seed=seed)}
        for seed in (0, 1)
    }


@pytest.mark.parametrize("seed", [0, 1])
def test_tanh_rnn_with_small_recurrent_weights_decays_geometrically(small_scale_rows, seed):
    """‖∂a<t>/∂a<t-1>‖ = ‖diag(1 − a<t>²) W_aa‖ ≤ s for orthogonal W_aa scaled by s, so
    ‖∂L/∂a<T-k>‖ ≤ s^k ‖∂L/∂a<T>‖: at s = 0.5, below 1e-3 in ten steps, 1e-6 in twenty."""
    norms = small_scale_rows[seed]["rnn", "a"].norms
    assert norms[0] == pytest.approx(1.0)
    k = np.arange(STEPS)
    assert np.all(norms <= 0.5**k * (1 + 1e-9))  # the bound, at every distance
    assert np.all(norms[1:] <= 0.5 * norms[:-1] * (1 + 1e-9))  # and step by step
    assert norms[10] < 1e-3 and norms[20] < 1e-6
    assert small_scale_rows[seed]["rnn", "a"].per_step < 0.5


@pytest.mark.parametrize("seed", [0, 1])
def test_lstm_with_forget_bias_one_keeps_a_gradient_many_steps_further(small_scale_rows, seed):
    rows = small_scale_rows[seed]
    rnn = reach(rows["rnn", "a"].norms)
    lstm_a = reach(rows["lstm", "a"].norms)
    lstm_c = reach(rows["lstm", "c"].norms)
    assert rnn is not None and rnn <= 10
    assert lstm_a is not None and lstm_a >= rnn + 8 and lstm_a >= 2 * rnn
    assert lstm_c is not None and lstm_c >= rnn + 15  # the memory cell carries it furthest
    at_20 = rows["lstm", "a"].norms[20] / rows["rnn", "a"].norms[20]
    assert at_20 > 1e3


def test_the_forget_bias_is_what_keeps_the_lstm_gradient():
    """The same LSTM with b_f = −2 (Γ_f ≈ 0.12) forgets: its memory-cell gradient dies fast."""
    assert np.all(make_cell("lstm", 2, 3, 1.0, np.random.default_rng(0)).b_f.data == 1.0)
    remembers = measure("lstm", 0.5, steps=30, seed=0)
    forgets = measure("lstm", 0.5, steps=30, seed=0, forget_bias=-2.0)
    assert forgets.dc_norms[-16] < 1e-3 * remembers.dc_norms[-16]  # 15 steps back
    with pytest.raises(ValueError, match="LSTM only"):
        make_cell("rnn", 2, 3, 1.0, np.random.default_rng(0), forget_bias=1.0)


def test_large_recurrent_weights_explode_and_clipping_tames_them():
    rows = decay_table(["rnn"], [4.0], steps=40)
    assert rows[0].norms[-1] > 1e3 * rows[0].norms[0]  # grows with distance from the loss
    r = clip_report("rnn", scale=4.0, steps=40, max_norm=1.0, clip_value=0.1)
    assert r.before[-1] > 1e6
    assert r.by_norm[-1] == pytest.approx(1.0, rel=1e-9)
    assert r.cos_norm == pytest.approx(1.0, abs=1e-9)  # direction kept
    n_elements = 32 * 32 + 32 * 8 + 32
    assert r.by_value[-1] <= 0.1 * np.sqrt(n_elements) + 1e-9  # every element clamped
    assert r.cos_value < 0.99  # direction changed


def test_measurements_are_reproducible_from_the_seed():
    a = measure("gru", 1.0, steps=8, hidden=4, seed=3).da_norms
    b = measure("gru", 1.0, steps=8, hidden=4, seed=3).da_norms
    c = measure("gru", 1.0, steps=8, hidden=4, seed=4).da_norms
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_format_table_has_a_row_per_cell_scale_and_state():
    rows = decay_table(["rnn", "gru", "lstm"], [0.5, 2.0], steps=12, hidden=4)
    text = format_table(rows)
    body = [line for line in text.splitlines() if line.split()[0] in ("rnn", "gru", "lstm")]
    assert len(body) == 2 * (1 + 1 + 2)  # the LSTM has an a-row and a c-row
    assert "k=11" in text and "reach" in text


def test_unknown_cell_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown cell 'tree'"):
        make_cell("tree", 2, 2, 1.0, np.random.default_rng(0))


# ---------------------------------------------------------------- command line


def test_cli_prints_the_table_and_the_clipping_report(capsys):
    code = main(["vanishing", "--cell", "rnn,lstm", "--steps", "25", "--scales", "0.5,2"])
    out = capsys.readouterr().out
    assert code == 0
    assert "k=24" in out and "exploding" in out and "by norm (1)" in out
    assert sum(line.startswith("lstm") for line in out.splitlines()) == 4
    assert not any(line.startswith("gru") for line in out.splitlines())


@pytest.mark.parametrize(
    "argv",
    [
        ["--cell", "tree"],
        ["--steps", "0"],
        ["--scales", "big"],
        ["--bogus"],
        ["--clip-norm", "0"],
        ["--clip-value", "0"],
        ["--clip-value", "nan"],
        ["--clip-norm", "-1"],
    ],
)
def test_cli_usage_errors_exit_2(argv, capsys):
    """Bad options are refused before any work, naming the option (a zero clip threshold
    used to end in a division by zero after the whole table)."""
    with pytest.raises(SystemExit) as exc:
        main(["vanishing", *argv])
    assert exc.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_cli_plot_without_matplotlib_is_one_error_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    code = main(["vanishing", "--steps", "5", "--plot", str(tmp_path / "decay.png")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: ") and "matplotlib" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "decay.png").exists()


def test_cli_plot_draws_a_png(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "decay.png"
    code = main(["vanishing", "--cell", "rnn,lstm", "--steps", "10", "--plot", str(path)])
    assert code == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {path}" in capsys.readouterr().out


def test_the_table_shown_in_the_docs_is_what_the_command_prints(capsys):
    """docs/vanishing_gradients.md quotes `tinygrad-seq vanishing`'s table: keep it true."""
    from pathlib import Path

    page = Path(__file__).resolve().parent.parent / "docs" / "vanishing_gradients.md"
    shown = page.read_text(encoding="utf-8").split("```text\n", 1)[1].split("```", 1)[0]
    assert shown.strip() == format_table(decay_table()).strip()
