"""Optimisers and clipping against hand-written NumPy updates; checkpoints resume exactly."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_seq.optim as optim_module
from tinygrad_seq import Tensor
from tinygrad_seq.optim import SGD, Adam, clip_grad_norm_, clip_grad_value_

SHAPES = [(3, 2), (4,)]


def make_params(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return [Tensor(rng.standard_normal(s).astype(dtype), requires_grad=True) for s in SHAPES]


def grad_sequence(steps, seed=1, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(steps)]


def run(opt, params, grads):
    for gs in grads:
        for p, g in zip(params, gs, strict=True):
            p.grad = None if g is None else g.copy()
        opt.step()


# ---------------------------------------------------------------- SGD
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_matches_numpy_reference(momentum):
    params = make_params()
    expected = [p.data.copy() for p in params]
    grads = grad_sequence(5)
    run(SGD(params, lr=0.05, momentum=momentum), params, grads)
    bufs = [None] * len(SHAPES)
    for gs in grads:
        for i, g in enumerate(gs):
            bufs[i] = g if bufs[i] is None else momentum * bufs[i] + g  # v = μv + g
            expected[i] = expected[i] - 0.05 * (bufs[i] if momentum else g)
    for p, e in zip(params, expected, strict=True):
        np.testing.assert_allclose(p.data, e, rtol=1e-13, atol=1e-15)


def test_sgd_weight_decay_adds_lambda_p():
    p = Tensor(np.array([2.0, -1.0]), requires_grad=True)
    p.grad = np.array([0.5, 0.5])
    SGD([p], lr=0.1, weight_decay=0.2).step()
    np.testing.assert_allclose(p.data, [2.0 - 0.1 * (0.5 + 0.4), -1.0 - 0.1 * (0.5 - 0.2)])


def test_sgd_updates_in_place_and_keeps_float32():
    params = make_params(np.float32)
    arrays = [p.data for p in params]
    opt = SGD(params, lr=0.1, momentum=0.5)
    run(opt, params, grad_sequence(2, dtype=np.float64))  # float64 grads on float32 params
    for p, a in zip(params, arrays, strict=True):
        assert p.data is a and p.dtype == np.float32
    assert opt.state[0]["momentum_buffer"].dtype == np.float32


# ---------------------------------------------------------------- Adam
def adam_reference(p0, grads, lr, betas, eps, weight_decay=0.0):
    """The textbook transcription: m̂ / (√v̂ + ε) with bias correction."""
    p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    k = 0
    for g in grads:
        if g is None:
            continue
        g = g + weight_decay * p
        k += 1
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g**2
        m_hat, v_hat = m / (1 - betas[0] ** k), v / (1 - betas[1] ** k)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


@pytest.mark.parametrize(
    ("lr", "betas", "eps", "wd"), [(1e-3, (0.9, 0.999), 1e-8, 0.0), (0.05, (0.5, 0.9), 1e-3, 0.1)]
)
def test_adam_matches_numpy_reference(lr, betas, eps, wd):
    params = make_params()
    start = [p.data.copy() for p in params]
    grads = grad_sequence(6)
    run(Adam(params, lr=lr, betas=betas, eps=eps, weight_decay=wd), params, grads)
    for i, p in enumerate(params):
        expected = adam_reference(start[i], [gs[i] for gs in grads], lr, betas, eps, wd)
        np.testing.assert_allclose(p.data, expected, rtol=1e-12, atol=1e-15)
        assert not np.allclose(p.data, start[i])


def test_adam_first_step_is_lr_times_sign():
    p = Tensor(np.zeros(4), requires_grad=True)
    p.grad = np.array([3.0, -0.001, 100.0, -7.0])
    Adam([p], lr=0.01, eps=0.0).step()
    np.testing.assert_allclose(p.data, -0.01 * np.sign(p.grad), rtol=1e-12)


def test_adam_keeps_float32_and_updates_in_place():
    params = make_params(np.float32)
    arrays = [p.data for p in params]
    opt = Adam(params, lr=0.01)
    run(opt, params, grad_sequence(3, dtype=np.float32))
    for p, a in zip(params, arrays, strict=True):
        assert p.data is a and p.dtype == np.float32
    assert opt.state[1]["exp_avg_sq"].dtype == np.float32
    assert int(opt.state[1]["step"]) == 3


@pytest.mark.parametrize("make", [lambda ps: SGD(ps, lr=0.1, momentum=0.9), Adam])
def test_params_without_grad_are_skipped_with_their_state(make):
    params = make_params()
    opt = make(params)
    grads = grad_sequence(4)
    for gs in grads[1:3]:
        gs[1] = None  # parameter 1 has no gradient on steps 2 and 3
    run(opt, params, grads[:1])
    state_after_one = {k: np.copy(v) for k, v in opt.state[1].items()}
    frozen = params[1].data.copy()
    run(opt, params, grads[1:3])
    np.testing.assert_array_equal(params[1].data, frozen)
    for k, v in opt.state[1].items():
        np.testing.assert_array_equal(v, state_after_one[k])
    run(opt, params, grads[3:])
    if isinstance(opt, Adam):  # per-parameter step count: parameter 1 took 2 steps, not 4
        assert int(opt.state[1]["step"]) == 2 and int(opt.state[0]["step"]) == 4
        expected = adam_reference(
            make_params()[1].data, [g[1] for g in grads], 1e-3, (0.9, 0.999), 1e-8
        )
        np.testing.assert_allclose(params[1].data, expected, rtol=1e-12)


def test_zero_grad_clears_every_grad():
    params = make_params()
    for p in params:
        p.grad = np.ones(p.shape)
    opt = Adam(params)
    opt.zero_grad()
    assert all(p.grad is None for p in params)
    before = [p.data.copy() for p in params]
    opt.step()  # nothing to do
    for p, b in zip(params, before, strict=True):
        np.testing.assert_array_equal(p.data, b)


def test_step_records_no_graph_and_works_after_backward():
    w = Tensor(np.array([1.0, -2.0]), requires_grad=True)
    (w * w).sum().backward()
    SGD([w], lr=0.25).step()
    np.testing.assert_allclose(w.data, [0.5, -1.0])  # w − 0.25 · 2w
    assert w.is_leaf


def test_duplicate_parameters_are_stepped_once():
    p = Tensor(np.array([1.0]), requires_grad=True)
    p.grad = np.array([1.0])
    opt = SGD([p, p], lr=0.5)
    opt.step()
    assert len(opt.params) == 1 and p.data[0] == 0.5


# ---------------------------------------------------------------- checkpoints
@pytest.mark.parametrize(
    "make",
    [lambda ps: SGD(ps, lr=0.1, momentum=0.9), lambda ps: Adam(ps, lr=0.02, betas=(0.8, 0.99))],
)
def test_state_dict_round_trip_through_npz_resumes_exactly(make, tmp_path):
    grads = grad_sequence(6, dtype=np.float32)
    straight = make_params(np.float32)
    run(make(straight), straight, grads)

    first = make_params(np.float32)
    opt = make(first)
    run(opt, first, grads[:3])
    arrays = {f"model.{i}": p.data for i, p in enumerate(first)}
    arrays.update({f"optim.{k}": v for k, v in opt.state_dict().items()})
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    np.savez(tmp_path / "ckpt.npz", **arrays)

    with np.load(tmp_path / "ckpt.npz", allow_pickle=False) as f:
        loaded = {k: f[k] for k in f.files}
    resumed = [Tensor(loaded[f"model.{i}"], requires_grad=True) for i in range(len(SHAPES))]
    opt2 = make(resumed)
    opt2.load_state_dict({k[6:]: v for k, v in loaded.items() if k.startswith("optim.")})
    run(opt2, resumed, grads[3:])
    for a, b in zip(straight, resumed, strict=True):
        np.testing.assert_array_equal(a.data, b.data)


def test_state_dict_is_a_copy_and_restores_hyperparameters():
    params = make_params()
    opt = Adam(params, lr=0.1, betas=(0.5, 0.6), eps=1e-4)
    run(opt, params, grad_sequence(1))
    sd = opt.state_dict()
    assert set(sd) == {
        "lr",
        "betas",
        "eps",
        "weight_decay",
        "state.0.step",
        "state.0.exp_avg",
        "state.0.exp_avg_sq",
        "state.1.step",
        "state.1.exp_avg",
        "state.1.exp_avg_sq",
    }
    sd["state.0.exp_avg"][...] = 123.0
    assert not np.any(opt.state[0]["exp_avg"] == 123.0)
    other = Adam(make_params())
    other.load_state_dict(opt.state_dict())
    assert (other.lr, other.betas, other.eps) == (0.1, (0.5, 0.6), 1e-4)


def test_load_state_dict_errors_leave_the_optimiser_unchanged():
    params = make_params()
    opt = SGD(params, lr=0.1, momentum=0.9)
    run(opt, params, grad_sequence(2))
    good = opt.state_dict()
    snapshot = {k: v.copy() for k, v in good.items()}
    bad_shape = dict(good, **{"state.1.momentum_buffer": np.zeros((5,))})
    with pytest.raises(ValueError, match=r"state\.1\.momentum_buffer.*\(5,\)"):
        opt.load_state_dict(dict(bad_shape, lr=np.array(9.0)))
    with pytest.raises(KeyError, match="lr"):
        opt.load_state_dict({k: v for k, v in good.items() if k != "lr"})
    with pytest.raises(KeyError, match=r"state\.7\.momentum_buffer"):
        opt.load_state_dict(dict(good, **{"state.7.momentum_buffer": np.zeros(3)}))
    with pytest.raises(KeyError, match="bogus"):
        opt.load_state_dict(dict(good, bogus=np.zeros(1)))
    assert opt.lr == 0.1
    for k, v in opt.state_dict().items():
        np.testing.assert_array_equal(v, snapshot[k])


# ---------------------------------------------------------------- construction errors
@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: SGD([], lr=0.1), "empty"),
        (lambda: SGD([np.zeros(2)], lr=0.1), "ndarray"),
        (lambda: SGD([Tensor(np.zeros(2, int))], lr=0.1), "int"),
        (lambda: SGD(make_params(), lr=-1.0), "lr"),
        (lambda: SGD(make_params(), lr=0.1, momentum=-0.5), "momentum"),
        (lambda: Adam(make_params(), betas=(0.9, 1.0)), "betas"),
        (lambda: Adam(make_params(), eps=-1.0), "eps"),
    ],
)
def test_bad_construction_raises(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_grad_of_wrong_shape_raises_naming_shapes():
    p = Tensor(np.zeros((2, 3)), requires_grad=True)
    p.grad = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        Adam([p]).step()


# ---------------------------------------------------------------- clipping
grad_lists = st.lists(
    hnp.arrays(
        np.float64,
        st.sampled_from([(2,), (2, 3), ()]),
        elements=st.floats(-10, 10, allow_subnormal=False),
    ),
    min_size=1,
    max_size=3,
)


@given(grad_lists, st.floats(0.01, 20))
def test_clip_grad_norm_property(grads, max_norm):
    params = [Tensor(np.zeros(g.shape), requires_grad=True) for g in grads]
    params.append(Tensor(np.zeros(3), requires_grad=True))  # grad None: skipped
    for p, g in zip(params, grads, strict=False):
        p.grad = g.copy()
    true_norm = math.sqrt(sum(float((g**2).sum()) for g in grads))
    returned = clip_grad_norm_(params, max_norm)
    assert isinstance(returned, float)
    assert returned == pytest.approx(true_norm, rel=1e-12, abs=1e-300)
    after = math.sqrt(sum(float((p.grad**2).sum()) for p in params[:-1]))
    if true_norm > max_norm:
        assert after == pytest.approx(max_norm, rel=1e-12)
        for p, g in zip(params, grads, strict=False):  # one common factor
            np.testing.assert_allclose(p.grad, g * (max_norm / true_norm), rtol=1e-12)
    else:
        for p, g in zip(params, grads, strict=False):
            np.testing.assert_array_equal(p.grad, g)
    assert params[-1].grad is None


def test_clip_grad_norm_float32_and_single_tensor():
    p = Tensor(np.zeros(2, np.float32), requires_grad=True)
    p.grad = np.array([30.0, 40.0], np.float32)
    assert clip_grad_norm_(p, 5.0) == 50.0
    assert p.grad.dtype == np.float32
    np.testing.assert_allclose(p.grad, [3.0, 4.0], rtol=1e-6)
    assert clip_grad_norm_([p], 100.0) == pytest.approx(5.0, rel=1e-6)
    np.testing.assert_allclose(p.grad, [3.0, 4.0], rtol=1e-6)


def test_clip_grad_norm_nonfinite_and_bad_max_norm():
    p = Tensor(np.zeros(2), requires_grad=True)
    p.grad = np.array([np.inf, 1.0])
    with pytest.raises(RuntimeError, match="inf"):
        clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm_([p], -1.0)
    assert clip_grad_norm_([Tensor(np.zeros(1), requires_grad=True)], 1.0) == 0.0


@given(grad_lists, st.floats(0, 5))
def test_clip_grad_value_property(grads, c):
    params = [Tensor(np.zeros(g.shape), requires_grad=True) for g in grads]
    for p, g in zip(params, grads, strict=True):
        p.grad = g.copy()
    assert clip_grad_value_(params, c) is None
    for p, g in zip(params, grads, strict=True):
        assert np.all(np.abs(p.grad) <= c)
        inside = np.abs(g) <= c
        np.testing.assert_array_equal(p.grad[inside], g[inside])
        np.testing.assert_array_equal(p.grad[~inside], np.sign(g[~inside]) * c)


def test_clip_grad_value_skips_none_and_rejects_negative():
    a, b = Tensor(np.zeros(2), requires_grad=True), Tensor(np.zeros(2), requires_grad=True)
    a.grad = np.array([-3.0, 0.25])
    clip_grad_value_([a, b], 1.0)
    np.testing.assert_array_equal(a.grad, [-1.0, 0.25])
    assert b.grad is None
    with pytest.raises(ValueError, match="clip_value"):
        clip_grad_value_([a], -1.0)


def test_optim_depends_on_autograd_only():
    tree = ast.parse(Path(optim_module.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported.add(("." * node.level) + (node.module or ""))
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    internal = {m for m in imported if m.startswith(".") or m.startswith("tinygrad_seq")}
    assert internal == {".autograd"}, internal


def test_adam_load_state_dict_rejects_bad_step_and_partial_state():
    params = make_params()
    opt = Adam(params)
    run(opt, params, grad_sequence(2))
    good = opt.state_dict()
    with pytest.raises(ValueError, match=r"state\.0\.step.*integer"):
        opt.load_state_dict(dict(good, **{"state.0.step": np.array([1, 2])}))
    with pytest.raises(ValueError, match=r"incomplete.*state\.1"):
        opt.load_state_dict({k: v for k, v in good.items() if k != "state.1.exp_avg"})
    assert int(opt.state[0]["step"]) == 2
