"""Quantized weights: grids and rounding, the update rules, the exact SR chain, BC on a quadratic."""
from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch
from scipy import sparse

import qmf_lite as qmf
from qmf_lite import weights as qw

LAM, W_STAR = 1.0, 0.37


def quadratic(w):
    return LAM * (w - W_STAR)


def rademacher_grad(w, rng):
    return quadratic(w) + (2.0 * (rng.random(np.shape(w)) < 0.5) - 1.0)


# --- grids ------------------------------------------------------------------------------------
def test_grid_constructors():
    g = qw.Grid.fixed_point(8, 4)
    assert (g.delta, g.low, g.high, g.n_levels) == (1 / 16, -8.0, 8 - 1 / 16, 256)
    assert np.array_equal(qw.Grid.fixed_point(1, 0).points, [-1.0, 0.0])
    b = qw.Grid.binary(0.25)
    assert np.array_equal(b.points, [-0.25, 0.25]) and b.delta == 0.5
    s = qw.Grid.symmetric(0.1, 3)
    assert s.n_levels == 7 and s.points[3] == 0.0


@pytest.mark.parametrize("kwargs,match", [
    (dict(delta=0.0, low=-1, high=1), "delta"),
    (dict(delta=-0.5, low=-1, high=1), "delta"),
    (dict(delta=float("nan"), low=-1, high=1), "delta"),
    (dict(delta=float("inf"), low=-1, high=1), "delta"),
    (dict(delta="0.5", low=-1, high=1), "delta"),
    (dict(delta=0.5, low=0.5, high=2.0), "contain 0"),
    (dict(delta=0.5, low=-2.0, high=-0.5), "contain 0"),
    (dict(delta=0.5, low=0.0, high=0.0), "low must be < high"),
    (dict(delta=0.3, low=-1.0, high=1.0), "integer"),
    (dict(delta=0.5, low=True, high=1.0), "low"),
    (dict(delta=0.5, low=-1.0, high=float("inf")), "high"),
])
def test_grid_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        qw.Grid(**kwargs)


@pytest.mark.parametrize("call,match", [
    (lambda: qw.Grid.binary(0.0), "a"),
    (lambda: qw.Grid.fixed_point(0, 0), "bits"),
    (lambda: qw.Grid.fixed_point(4, -1), "frac_bits"),
    (lambda: qw.Grid.symmetric(0.1, 0), "half_levels"),
    (lambda: qw.Grid.symmetric(0.1, 2).round([0.0, float("nan")]), "w"),
    (lambda: qw.Grid.symmetric(0.1, 2).round(torch.tensor([float("nan")])), "w"),
    (lambda: qw.Grid.symmetric(0.1, 2).stochastic_round([0.0], rng=None), "rng"),
    (lambda: qw.Grid.symmetric(0.1, 2).stochastic_round([0.0], rng=1.5), "rng"),
    (lambda: qw.Grid.symmetric(0.1, 2).quantize([0.0], "nearest"), "rounding"),
])
def test_grid_method_bad_input(call, match):
    with pytest.raises(ValueError, match=rf"^{match} must"):     # the message starts with the argument's name
        call()


# --- deterministic rounding -------------------------------------------------------------------
@pytest.mark.parametrize("grid", [qw.Grid.fixed_point(6, 3), qw.Grid.symmetric(0.1, 15), qw.Grid.binary(0.3),
                                  qw.Grid(0.25, -1.0, 3.0)])
def test_round_is_idempotent_and_nearest(grid):
    pts = grid.points
    assert np.array_equal(grid.round(pts), pts)
    assert torch.equal(grid.round(torch.tensor(pts)), torch.tensor(pts))
    w = np.random.default_rng(0).uniform(grid.low, grid.high, 100_000)
    q = grid.round(w)
    assert np.isin(q, pts).all()
    # nearest: no grid point is closer than the one chosen
    assert np.all(np.abs(q - w) <= np.min(np.abs(w[:, None] - pts[None, :]), axis=1) + 1e-15)
    assert np.all(np.abs(q - w) <= grid.delta / 2 + 1e-15)


def test_round_float32_tensor_on_a_dyadic_grid():
    grid = qw.Grid.fixed_point(8, 5)
    pts = torch.tensor(grid.points, dtype=torch.float32)
    assert torch.equal(grid.round(pts), pts) and grid.round(pts).dtype == torch.float32


def test_round_halves_up_so_binary_is_sign_with_sign0_positive():
    g = qw.Grid.binary(0.5)
    assert np.array_equal(g.round([-0.2, 0.0, 1e-300, 0.2]), [-0.5, 0.5, 0.5, 0.5])
    assert np.array_equal(qw.Grid.symmetric(1.0, 3).round([0.5, 1.5, -0.5]), [1.0, 2.0, 0.0])


def test_clipping():
    g = qw.Grid(0.25, -1.0, 0.5)
    w = np.array([-7.0, -1.0, 0.5, 0.6, 12.0, np.inf, -np.inf])
    assert np.array_equal(g.round(w), [-1.0, -1.0, 0.5, 0.5, 0.5, 0.5, -1.0])
    q = g.stochastic_round(w, rng=0)
    assert np.array_equal(q, [-1.0, -1.0, 0.5, 0.5, 0.5, 0.5, -1.0])
    qt = g.stochastic_round(torch.tensor(w), rng=0)
    assert torch.equal(qt, torch.tensor([-1.0, -1.0, 0.5, 0.5, 0.5, 0.5, -1.0], dtype=torch.float64))


# --- stochastic rounding ----------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_stochastic_rounding_is_unbiased_with_the_right_variance(backend):
    """E Q_s(w) = w and Var Q_s(w) = s (Delta - s), s = w - floor(w), within 4 standard errors."""
    grid = qw.Grid.symmetric(0.25, 8)
    n = 200_000
    for w in (-1.9, -0.3, 0.0, 0.01, 0.124, 0.5, 1.37, 1.99):
        x = np.full(n, w)
        q = grid.stochastic_round(x, rng=1) if backend == "numpy" else \
            grid.stochastic_round(torch.tensor(x), rng=1).numpy()
        lower = math.floor(w / grid.delta) * grid.delta
        s = w - lower
        var = s * (grid.delta - s)
        assert set(np.unique(q)) <= {lower, lower + grid.delta}
        if var == 0:
            assert np.all(q == w)
            continue
        assert abs(q.mean() - w) < 4 * math.sqrt(var / n)
        # a two-point variable: 4th central moment mu4 = Delta^4 p(1-p)(1 - 3p(1-p)), s.e. of the variance
        # estimate sqrt((mu4 - var^2) / n)
        p = s / grid.delta
        mu4 = grid.delta**4 * p * (1 - p) * (1 - 3 * p * (1 - p))
        assert abs(q.var() - var) < 4 * math.sqrt((mu4 - var**2) / n)


def test_stochastic_rounding_up_probability_is_exact_fraction():
    grid = qw.Grid.binary(1.0)              # BinaryConnect's stochastic binarisation: P(+1) = (w + 1)/2
    n = 400_000
    for w in (-0.8, 0.0, 0.6):
        p = (w + 1) / 2
        q = grid.stochastic_round(np.full(n, w), rng=np.random.default_rng(3))
        assert abs(np.mean(q == 1.0) - p) < 4 * math.sqrt(p * (1 - p) / n)


def test_stochastic_rounding_is_reproducible_with_a_seed():
    g = qw.Grid.symmetric(0.1, 10)
    w = np.linspace(-1, 1, 1001)
    assert np.array_equal(g.stochastic_round(w, 5), g.stochastic_round(w, 5))
    assert not np.array_equal(g.stochastic_round(w, 5), g.stochastic_round(w, 6))
    wt = torch.tensor(w)
    assert torch.equal(g.stochastic_round(wt, 5), g.stochastic_round(wt, torch.Generator().manual_seed(5)))


# --- update rules ---------------------------------------------------------------------------
def test_rule_r_stalls_when_every_step_is_below_half_a_grid_step():
    grid = qw.Grid.symmetric(1 / 16, 32)
    lr = 0.009                             # from -1.5: |g| <= 2.87 + ... -> lr |g| < 1/32 = Delta / 2
    run = qw.run_rule("r", rademacher_grad, np.full(500, -1.5), lr=lr, steps=2000, grid=grid, seed=0)
    assert np.all(run.deployed == -1.5)
    # and a step size with lr max|g| just above Delta / 2 moves it
    run = qw.run_rule("r", rademacher_grad, np.full(500, -1.5), lr=0.012, steps=2000, grid=grid, seed=0)
    assert np.all(run.deployed > -1.5)


def test_update_functions_and_run_rule_agree():
    """Each one-step update is its formula, and one step of run_rule is that update (same seed for SR)."""
    grid = qw.Grid.symmetric(0.125, 16)
    w = grid.round(np.linspace(-1.9, 1.9, 50))
    g = np.sin(7 * w)
    updates = {"r": qw.r_update(w, g, 0.1, grid), "sr": qw.sr_update(w, g, 0.1, grid, np.random.default_rng(4)),
               "bc": qw.bc_update(w, g, 0.1, grid), "sgd": qw.sgd_update(w, g, 0.1)}
    assert np.array_equal(updates["r"], grid.round(w - 0.1 * g))
    assert np.array_equal(updates["sr"], grid.stochastic_round(w - 0.1 * g, np.random.default_rng(4)))
    assert np.array_equal(updates["bc"], np.clip(w - 0.1 * g, -2, 2))
    assert np.array_equal(updates["sgd"], w - 0.1 * g)
    for rule, expected in updates.items():
        run = qw.run_rule(rule, lambda v, rng: np.sin(7 * v), w, lr=0.1, steps=1, grid=grid, seed=4,
                          bc_rounding="deterministic")
        assert np.array_equal(run.buffer, expected), rule
        assert np.array_equal(run.deployed, grid.round(expected) if rule == "bc" else expected), rule
    assert not np.array_equal(updates["sr"], updates["r"])    # SR's draws matter: the comparison can fail


@pytest.mark.parametrize("call,match", [
    (lambda: qw.run_rule("adam", rademacher_grad, [0.0], lr=0.1, steps=1, grid=qw.Grid.binary(1)), "rule"),
    (lambda: qw.run_rule("sr", rademacher_grad, [0.0], lr=0.1, steps=1), "grid"),
    (lambda: qw.run_rule("sgd", rademacher_grad, [0.0], lr=0.0, steps=1), "lr"),
    (lambda: qw.run_rule("sgd", rademacher_grad, [0.0], lr=0.1, steps=-1), "steps"),
    (lambda: qw.run_rule("bc", rademacher_grad, [0.0], lr=0.1, steps=1, grid=qw.Grid.binary(1),
                         bc_rounding="up"), "bc_rounding"),
    (lambda: qw.sgd_update(0.0, 1.0, float("nan")), "lr"),
])
def test_rules_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_sgd_stationary_variance_against_simulation():
    lr, n = 0.05, 4000
    run = qw.run_rule("sgd", rademacher_grad, np.full(n, W_STAR), lr=lr, steps=1500, seed=2,
                      observe=lambda d, b: (d - W_STAR) ** 2, every=10)
    per_chain = run.trace[50:].mean(axis=0)            # after 500 steps = 25 relaxation times
    v = qw.sgd_stationary_variance(lr, LAM, 1.0)
    assert abs(per_chain.mean() - v) < 4 * per_chain.std() / math.sqrt(n)
    with pytest.raises(ValueError, match="lr"):
        qw.sgd_stationary_variance(2.5, 1.0, 1.0)


def test_bc_buffer_converges_to_the_grid_free_optimum():
    """BC with stochastic forward rounding: E grad f(Q_s(w_r)) = grad f(w_r) on a quadratic, so with a
    decreasing step the buffer goes to w* (off the grid)."""
    grid = qw.Grid.symmetric(0.25, 8)                   # w* = 0.37 lies between 0.25 and 0.5
    rng = np.random.default_rng(0)
    n, steps, w0 = 2000, 20_000, -1.5
    buf = np.full(n, w0)
    for t in range(steps):
        wb = grid.stochastic_round(buf, rng)
        buf = qw.bc_update(buf, rademacher_grad(wb, rng), 1.0 / (LAM * (t + 10)), grid)
    # E w_r follows the noise-free recursion exactly: w* + (w0 - w*) prod(1 - lr_t lam) = w* - 1.87 * 10/20010
    expected = W_STAR + (w0 - W_STAR) * 10 / (steps + 10)
    assert abs(buf.mean() - expected) < 4 * buf.std() / math.sqrt(n)
    assert buf.std() < 0.03                             # Var ~ (sigma^2 + s(Delta - s)) / t
    # the same with run_rule (constant small step): buffer mean within 4 s.e. of w*
    run = qw.run_rule("bc", rademacher_grad, np.full(n, -1.5), lr=0.002, steps=6000, grid=grid, seed=1)
    assert abs(run.buffer.mean() - W_STAR) < 4 * run.buffer.std() / math.sqrt(n)


def test_deterministic_bc_hovers_at_the_switching_point_and_deploys_w_star_on_average():
    """Noise-free BC with Q_d: the buffer ends near the midpoint m = 0.375 between the grid points
    around w* = 0.37, and the deployed weight's time average is w* (our derivation in the chapter)."""
    grid = qw.Grid.symmetric(0.25, 8)
    lr, steps = 0.004, 30_000
    run = qw.run_rule("bc", lambda w, rng: quadratic(w), np.array([-1.2]), lr=lr, steps=steps, grid=grid,
                      bc_rounding="deterministic", observe=lambda d, b: d[0], every=1)
    assert abs(run.buffer[0] - 0.375) < 2 * lr * LAM * grid.delta
    late = run.trace[steps // 2:]
    assert abs(late.mean() - W_STAR) < 1e-3
    assert set(np.unique(late)) == {0.25, 0.5}


# --- the exact SR chain -----------------------------------------------------------------------
def small_chain(lr=None, delta=0.25, half=6):
    grid = qw.Grid.symmetric(delta, half)
    lr = qw.neighbour_lr(grid, quadratic) if lr is None else lr
    return grid, qw.sr_transition_matrix(grid, quadratic, lr)


def test_transition_matrix_is_stochastic_and_banded():
    grid, P = small_chain(lr=0.3)
    assert sparse.issparse(P)
    assert np.allclose(np.asarray(P.sum(axis=1)).ravel(), 1.0, atol=1e-14, rtol=0)
    rows, cols = P.nonzero()
    band = math.ceil(0.3 * (LAM * np.max(np.abs(grid.points - W_STAR)) + 1) / grid.delta)
    assert np.max(np.abs(rows - cols)) <= band
    _, P1 = small_chain()
    r1, c1 = P1.nonzero()
    assert np.max(np.abs(r1 - c1)) == 1                 # neighbours only at lr <= neighbour_lr


def test_transition_matrix_against_monte_carlo_of_one_step():
    grid, P = small_chain(lr=0.3)
    rng = np.random.default_rng(7)
    n = 200_000
    for k in (0, 3, 6, 9, 12):
        w = np.full(n, grid.points[k])
        nxt = grid.stochastic_round(w - 0.3 * rademacher_grad(w, rng), rng)
        idx = np.rint((nxt - grid.low) / grid.delta).astype(int)
        freq = np.bincount(idx, minlength=grid.n_levels) / n
        p = P.toarray()[k]
        assert np.all(np.abs(freq - p) <= 4 * np.sqrt(p * (1 - p) / n) + 1e-12)


def test_stationary_distribution_detailed_balance_and_birth_death_formula():
    grid = qw.Grid.symmetric(0.125, 8)                   # |lam (w - w*)| < 2: every state recurrent
    P = qw.sr_transition_matrix(grid, quadratic, qw.neighbour_lr(grid, quadratic, [-2, 2]), noise=[-2, 2])
    pi = qw.stationary_distribution(P)
    assert pi.sum() == pytest.approx(1.0, abs=1e-14) and pi.min() >= 0
    assert qw.detailed_balance_error(P, pi) < 1e-10
    # independent: the product formula of a birth-death chain
    d = P.toarray()
    ratios = np.diag(d, 1) / np.diag(d, -1)
    direct = np.concatenate([[1.0], np.cumprod(ratios)])
    direct /= direct.sum()
    assert np.max(np.abs(pi - direct)) < 1e-13
    assert np.max(np.abs(pi @ P - pi)) < 1e-14
    # a large step jumps over grid points: the chain is no longer reversible, pi is still stationary
    P_big = qw.sr_transition_matrix(grid, quadratic, 0.3, noise=[-2, 2])
    pi_big = qw.stationary_distribution(P_big)
    assert np.max(np.abs(pi_big @ P_big - pi_big)) < 1e-14
    assert qw.detailed_balance_error(P_big, pi_big) > 1e-4


def test_stationary_distribution_does_not_depend_on_the_step_size():
    grid = qw.Grid.symmetric(1 / 16, 40)
    lr_max = qw.neighbour_lr(grid, quadratic)
    pis, gens = [], []
    for lr in (lr_max, lr_max / 3, lr_max / 100):
        P = qw.sr_transition_matrix(grid, quadratic, lr)
        pis.append(qw.stationary_distribution(P))
        gens.append(((P - sparse.identity(grid.n_levels)) / lr).toarray())
    assert np.max(np.abs(pis[0] - pis[1])) < 1e-12 and np.max(np.abs(pis[0] - pis[2])) < 1e-12
    assert np.max(np.abs(gens[0] - gens[2])) < 1e-9      # P = I + lr A with one A
    # above the neighbour step size the distribution changes
    pi_big = qw.stationary_distribution(qw.sr_transition_matrix(grid, quadratic, 5 * lr_max))
    assert np.max(np.abs(pi_big - pis[0])) > 1e-3


def test_stationary_vector_against_a_long_simulation():
    """Independent chains run for 40 relaxation times: their end states are draws from pi."""
    grid = qw.Grid.symmetric(0.25, 6)
    lr = qw.neighbour_lr(grid, quadratic)
    pi = qw.stationary_distribution(qw.sr_transition_matrix(grid, quadratic, lr))
    n = 40_000
    run = qw.run_rule("sr", rademacher_grad, np.zeros(n), lr=lr, steps=int(40 / (lr * LAM)), grid=grid, seed=11)
    freq = np.bincount(np.rint((run.deployed - grid.low) / grid.delta).astype(int), minlength=grid.n_levels) / n
    assert np.all(np.abs(freq - pi) <= 4 * np.sqrt(pi * (1 - pi) / n) + 1e-9)
    # and the time average of one long run of a non-reversible (large-step) chain
    lr_big = 3 * lr
    P_big = qw.sr_transition_matrix(grid, quadratic, lr_big)
    pi_big = qw.stationary_distribution(P_big)
    run = qw.run_rule("sr", rademacher_grad, np.zeros(2000), lr=lr_big, steps=3000, grid=grid, seed=12,
                      observe=lambda d, b: d, every=1)
    states = np.rint((run.trace[500:] - grid.low) / grid.delta).astype(int)
    per_chain = np.stack([(states == k).mean(axis=0) for k in range(grid.n_levels)])   # (levels, chains)
    se = per_chain.std(axis=1) / math.sqrt(per_chain.shape[1])
    assert np.all(np.abs(per_chain.mean(axis=1) - pi_big) <= 4 * se + 1e-9)


def test_sr_floor_identity_on_a_quadratic():
    """E_pi[f] - f* = (Delta/4) E_pi |g| exactly at lr <= neighbour_lr (our generator identity)."""
    for delta in (0.25, 0.125, 1 / 16):
        grid = qw.Grid.symmetric(delta, int(6 / delta))   # wide: boundary mass < 1e-30
        pi = qw.stationary_distribution(qw.sr_transition_matrix(grid, quadratic, qw.neighbour_lr(grid, quadratic)))
        x = quadratic(grid.points)
        floor = pi @ (0.5 * LAM * (grid.points - W_STAR) ** 2)
        mean_abs_g = pi @ (0.5 * (np.abs(x + 1) + np.abs(x - 1)))
        assert floor == pytest.approx(float(qw.sr_floor(delta, mean_abs_g)), rel=1e-10)
        # Rademacher noise of size 1 and |x| < 1 wherever pi lives: E|g| = 1, floor = Delta / 4
        assert floor == pytest.approx(delta / 4, rel=2e-3)


def test_big_lattice_solves_sparsely():
    grid = qw.Grid.symmetric(1e-3, 10_000)               # 20001 points
    P = qw.sr_transition_matrix(grid, quadratic, qw.neighbour_lr(grid, quadratic))
    pi = qw.stationary_distribution(P)
    assert qw.detailed_balance_error(P, pi) < 1e-10
    assert pi @ (0.5 * (grid.points - W_STAR) ** 2) == pytest.approx(1e-3 / 4, rel=1e-3)


@pytest.mark.parametrize("call,match", [
    (lambda: qw.sr_transition_matrix(qw.Grid.binary(1), quadratic, 0.1, noise=[-1, 1], probs=[0.5, 1.5]), "probs"),
    (lambda: qw.sr_transition_matrix(qw.Grid.binary(1), quadratic, 0.1, noise=[-1, 1], probs=[-0.5, 1.5]), "probs"),
    (lambda: qw.sr_transition_matrix(qw.Grid.binary(1), quadratic, 0.1, noise=[-1, 1], probs=[0.5, 0.4]), "sum to 1"),
    (lambda: qw.sr_transition_matrix(qw.Grid.binary(1), quadratic, 0.1, noise=[-1, 1], probs=[1.0]), "probs"),
    (lambda: qw.sr_transition_matrix(qw.Grid.binary(1), quadratic, -0.1), "lr"),
    (lambda: qw.sr_transition_matrix(qw.Grid.binary(1), quadratic, 0.1, noise=[np.nan]), "noise"),
    (lambda: qw.sr_transition_matrix(qw.Grid.binary(1), [1.0, 2.0, 3.0], 0.1), "grad"),
    (lambda: qw.sr_transition_matrix("grid", quadratic, 0.1), "grid"),
    (lambda: qw.stationary_distribution(np.array([[0.5, 0.6], [0.5, 0.5]])), "rows summing to 1"),
    (lambda: qw.stationary_distribution(np.array([[1.5, -0.5], [0.5, 0.5]])), r"\[0, 1\]"),
    (lambda: qw.stationary_distribution(np.ones((2, 3)) / 3), "square"),
    (lambda: qw.stationary_distribution(np.eye(3)), "stationary"),
    (lambda: qw.detailed_balance_error(np.eye(2), [1.0]), "pi"),
    (lambda: qw.sr_floor(0.0, 1.0), "delta"),
    (lambda: qw.sr_floor(0.1, -1.0), "mean_abs_grad"),
])
def test_chain_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --- logistic regression ----------------------------------------------------------------------
def test_logistic_problem_gradients_and_optimum():
    prob = qw.LogisticProblem.make(6, n=200, seed=3)
    w = np.random.default_rng(1).standard_normal(6)
    eps = 1e-6
    fd = np.array([(prob.loss(w + eps * e) - prob.loss(w - eps * e)) / (2 * eps) for e in np.eye(6)])
    assert np.allclose(prob.grad(w), fd, atol=1e-8)
    ws = prob.solve()
    assert np.max(np.abs(prob.grad(ws))) < 1e-12
    # minibatch gradients are unbiased: mean of many draws within 4 s.e. of the full gradient
    rng = np.random.default_rng(2)
    g = prob.minibatch_grad(np.broadcast_to(w, (50_000, 6)), rng, 4)
    assert np.all(np.abs(g.mean(0) - prob.grad(w)) < 4 * g.std(0) / math.sqrt(50_000))
    # many chains at once
    assert prob.loss(np.stack([w, ws])).shape == (2,)


@pytest.mark.parametrize("d,n,ridge,seed", [(6, 200, 0.1, 3), (1, 512, 0.1, 1), (32, 512, 0.1, 32),
                                           (20, 50, 1e-3, 1), (4, 40, 10.0, 5)])
def test_logistic_solve_matches_newton(d, n, ridge, seed):
    """solve (scipy.optimize.root on grad F) against a plain Newton iteration, written here as the reference,
    and the expit forms of the gradient and Hessian against the tanh forms 0.5 (1 - tanh(m / 2)).

    Tolerance: F is ridge-strongly convex, so any w has |w - w*|_2 <= |grad F(w)|_2 / ridge. Both
    solutions' gradients are computed in float64 with an error of at most about n eps max|x_ij| per
    coordinate (a sum of n terms each below max|x|, divided by n, plus ridge |w|), so
    |w_scipy - w_newton|_2 <= (|g_scipy|_2 + |g_newton|_2 + 2 sqrt(d) e) / ridge with that e."""
    prob = qw.LogisticProblem.make(d, n=n, ridge=ridge, seed=seed)
    x, y = prob.x, prob.y

    def grad_tanh(w):
        return (-y * 0.5 * (1 - np.tanh(0.5 * y * (x @ w)))) @ x / n + ridge * w

    def hess_tanh(w):
        s = 0.5 * (1 - np.tanh(0.5 * (x @ w)))
        return (x.T * (s * (1 - s))) @ x / n + ridge * np.eye(d)

    w_newton = np.zeros(d)
    for _ in range(100):
        step = np.linalg.solve(hess_tanh(w_newton), grad_tanh(w_newton))
        w_newton -= step
        if np.max(np.abs(step)) < 1e-13:
            break
    w = prob.solve()
    eps = np.finfo(float).eps
    e = n * eps * (np.abs(x).max() + ridge * max(np.abs(w).max(), np.abs(w_newton).max()))
    bound = (np.linalg.norm(prob.grad(w)) + np.linalg.norm(grad_tanh(w_newton)) + 2 * math.sqrt(d) * e) / ridge
    assert bound < 1e-9                            # the bound is not vacuous
    assert np.linalg.norm(w - w_newton) <= bound
    # expit against tanh: the same function, to a few ulps of the terms (|r_i x_ij| <= max|x|)
    w1 = np.random.default_rng(seed).standard_normal(d)
    assert np.max(np.abs(prob.grad(w1) - grad_tanh(w1))) <= 8 * e + 1e-300
    assert np.max(np.abs(prob.hessian(w1) - hess_tanh(w1))) <= 8 * n * eps * np.abs(x).max() ** 2 + 1e-300
    assert np.allclose(prob.loss(w1), np.mean(np.logaddexp(0.0, -y * (x @ w1))) + 0.5 * ridge * w1 @ w1,
                       rtol=8 * n * eps, atol=0)


# --- torch: the optimizer on a model ----------------------------------------------------------
def test_quantized_sgd_rules_on_parameters():
    grid = qw.Grid.symmetric(0.125, 8)
    init = torch.linspace(-0.9, 0.9, 13, dtype=torch.float64)
    grad = torch.cos(7 * init)
    results = {}
    for rule in ("sgd", "r", "sr", "bc"):
        p = torch.nn.Parameter(init.clone())
        opt = qw.QuantizedSGD([p], lr=0.1, rule=rule, grid=grid if rule != "sgd" else None, seed=3)
        start = p.detach().clone()
        p.grad = grad.clone()
        opt.step()
        results[rule] = (start, p.detach().clone(), opt)
    s, after, _ = results["sgd"]
    assert torch.equal(after, init - 0.1 * grad)
    s, after, _ = results["r"]
    assert torch.equal(s, grid.round(init)) and torch.equal(after, grid.round(s - 0.1 * grad))
    s, after, _ = results["sr"]
    assert torch.equal(after, grid.stochastic_round(s - 0.1 * grad, torch.Generator().manual_seed(3)))
    s, after, opt = results["bc"]
    p = opt.param_groups[0]["params"][0]
    assert torch.equal(opt.buffer(p), init - 0.1 * grad)           # the buffer takes the full step
    assert torch.equal(after, grid.round(init - 0.1 * grad))       # the parameter holds Q_d(w_r)
    assert torch.equal(opt.deployed(p), after)


def test_weight_groups_binary_weights_full_precision_biases_and_fit():
    data = qmf.load_digits()
    model = qw.binary_mlp((64, 32, 10), seed=0)
    opt = qw.QuantizedSGD(qw.weight_groups(model, "sr", 0.1), lr=0.1, seed=0)
    w1, b1, w2, b2 = [p.detach().clone() for p in model.parameters()]
    assert set(torch.unique(w1).tolist()) == {-1 / 8, 1 / 8}
    assert sorted(torch.unique(w2).tolist()) == pytest.approx([-1 / math.sqrt(32), 1 / math.sqrt(32)])
    hist = qw.fit(model, data, opt, steps=50, batch_size=32, seed=1, drop_last=True, eval_every=25)
    w1, b1 = model[0].weight.detach(), model[0].bias.detach()
    assert set(torch.unique(w1).tolist()) <= {-1 / 8, 1 / 8}
    assert len(torch.unique(b1)) > 2                      # biases stay in full precision
    n = len(data.y_train)
    assert np.all(hist["batch_sizes"] == 32) and list(hist["step"]) == [25, 50]
    # without drop_last the last batch of every epoch is ragged
    hist = qw.fit(model, data, opt, steps=n // 32 + 1, batch_size=32, seed=1, drop_last=False)
    assert hist["batch_sizes"][-1] == n % 32 and np.all(hist["batch_sizes"][:-1] == 32)


@pytest.mark.parametrize("call,match", [
    (lambda p: qw.QuantizedSGD([p], lr=0.1, rule="sr"), "grid"),
    (lambda p: qw.QuantizedSGD([p], lr=0.0, rule="sgd"), "lr"),
    (lambda p: qw.QuantizedSGD([p], lr=0.1, rule="lion"), "rule"),
    (lambda p: qw.QuantizedSGD([p], lr=0.1, rule="bc", grid=qw.Grid.binary(1), bc_rounding="x"), "bc_rounding"),
    (lambda p: qw.QuantizedSGD([p], lr=0.1, seed=0.5), "seed"),
    (lambda p: qw.QuantizedSGD([], lr=0.1), "params"),
    (lambda p: qw.binary_mlp((64,)), "sizes"),
    (lambda p: qw.binary_mlp((4, 3), activation="gelu"), "activation"),
])
def test_optimizer_bad_input(call, match):
    p = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match=match):
        call(p)


def test_binary_weights_propagate_signal_like_gaussian_ones():
    """The maps depend on the weights only through sigma_w^2: binary and Gaussian nets both follow them.

    Both q and c are checked: with sigma_b = 0 the correlation map hardly depends on sigma_w, so c alone
    would not see weights of the wrong scale (q does: 10% too large a scale is 4 to 8 times the bound)."""
    init = qmf.optimal_init(4)
    depth, width = 8, 512
    q_th, c_th = qmf.iterate_maps(init.activation, init.sigma_w, 0.0, depth=depth, q0=init.q_star, c0=0.3)
    for kind in ("gaussian", "binary"):
        sim = qmf.simulate_correlations(init.activation, init.sigma_w, 0.0, depth=depth, width=width, c0=0.3,
                                        q0=init.q_star, weights=kind, n_nets=8, seed=0)
        # 5 standard errors over the 8 networks, plus 1/width for the O(1/width) bias of a finite network
        assert np.all(np.abs(sim.q - q_th) <= 5 * sim.q_sem + 1 / width)
        assert np.all(np.abs(sim.c - c_th) <= 5 * sim.c_sem + 1 / width)
    with pytest.raises(ValueError, match="weights"):
        qmf.simulate_correlations("tanh", 1.0, 0.0, depth=1, width=4, c0=0.0, q0=1.0, weights="ternary")


def test_module_imports_without_torch():
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"
            "from qmf_lite import weights\n"
            "g = weights.Grid.binary(1.0); print(g.round([0.3]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


# --- bad input: each check names its argument and what is allowed -----------------------------
NAN, INF = float("nan"), float("inf")
G = qw.Grid.symmetric(0.25, 8)


def _prob():
    return qw.LogisticProblem.make(3, n=20, seed=0)


def _net():
    return qw.binary_mlp((64, 8, 10), seed=0)


def _fit(**kw):
    model = _net()
    args = dict(model=model, data=qmf.load_digits(), opt=qw.QuantizedSGD(model.parameters(), lr=0.1), steps=1,
                batch_size=8)
    return qw.fit(**{**args, **kw})


def _nan_grad(w, rng):
    return w * NAN


BAD_INPUT = {
    # grids: |low|, |high| <= 1e300, at most 2**53 steps; constructors' own ranges
    "Grid-high-1e308": (lambda: qw.Grid(0.25, -1.0, 1e308), "high"),
    "Grid-low--1e301": (lambda: qw.Grid(0.25, -1e301, 1.0), "low"),
    "Grid-delta-too-fine": (lambda: qw.Grid(1e-300, -1.0, 1.0), "delta"),
    "Grid-delta-subnormal": (lambda: qw.Grid(5e-324, -1.0, 1.0), "delta"),
    "fixed_point-bits-54": (lambda: qw.Grid.fixed_point(54, 0), "bits"),
    "fixed_point-frac_bits-1023": (lambda: qw.Grid.fixed_point(8, 1023), "frac_bits"),
    "binary-a-1e308": (lambda: qw.Grid.binary(1e308), "a"),
    "binary-a-str": (lambda: qw.Grid.binary("1"), "a"),
    "symmetric-half_levels-2**52+1": (lambda: qw.Grid.symmetric(1e-300, 2**52 + 1), "half_levels"),
    "symmetric-range-1e301": (lambda: qw.Grid.symmetric(1e299, 11), "half_levels"),
    "quantize-rounding-array": (lambda: G.quantize([0.1], np.array(["deterministic"])), "rounding"),
    "stochastic_round-rng--1": (lambda: G.stochastic_round([0.1], rng=-1), "rng"),
    "stochastic_round-rng-2**63": (lambda: G.stochastic_round(torch.zeros(2), rng=2**63), "rng"),
    # update rules: finite w and g, lr > 0, broadcasting together, a Grid
    "sgd_update-w-nan": (lambda: qw.sgd_update(np.array([0.3, NAN]), 1.0, 0.1), "w"),
    "sgd_update-w-inf": (lambda: qw.sgd_update(INF, 1.0, 0.1), "w"),
    "sgd_update-w-None": (lambda: qw.sgd_update(None, 1.0, 0.1), "w"),
    "sgd_update-g-str": (lambda: qw.sgd_update(0.3, "3", 0.1), "g"),
    "sgd_update-g-True": (lambda: qw.sgd_update(0.3, True, 0.1), "g"),
    "sgd_update-g-complex": (lambda: qw.sgd_update(0.3, 1 + 1j, 0.1), "g"),
    "sgd_update-g-tensor-inf": (lambda: qw.sgd_update(torch.zeros(2), torch.tensor([1.0, INF]), 0.1), "g"),
    "sgd_update-overflow": (lambda: qw.sgd_update(0.0, 2.0, 1e308), "lr"),
    "sgd_update-shapes": (lambda: qw.sgd_update(np.zeros(2), np.ones(3), 0.1), "broadcast"),
    "r_update-g-None": (lambda: qw.r_update(0.5, None, 0.1, G), "g"),
    "r_update-g-nan": (lambda: qw.r_update(0.5, NAN, 0.1, G), "g"),
    "r_update-grid-str": (lambda: qw.r_update(0.5, 1.0, 0.1, "grid"), "grid"),
    "sr_update-grid-None": (lambda: qw.sr_update(0.5, 1.0, 0.1, None, 0), "grid"),
    "sr_update-rng--1": (lambda: qw.sr_update(0.5, 1.0, 0.1, G, -1), "rng"),
    "bc_update-buffer-nan": (lambda: qw.bc_update(np.array([NAN]), 1.0, 0.1, G), "buffer"),
    "bc_update-g-str": (lambda: qw.bc_update(0.1, "", 0.1, G), "g"),
    "bc_update-grid-array": (lambda: qw.bc_update(0.1, 1.0, 0.1, np.array([0.5, 2.0])), "grid"),
    "bc_update-clip-array": (lambda: qw.bc_update(0.1, 1.0, 0.1, G, clip_buffer=np.array([1, 0])), "clip_buffer"),
    "bc_update-unclipped-overflow": (lambda: qw.bc_update(0.0, 2.0, 1e308, G, clip_buffer=False), "buffer"),
    # run_rule
    "run_rule-rule-array": (lambda: qw.run_rule(np.array(["sr"]), rademacher_grad, [0.0], lr=0.1, steps=1, grid=G),
                            "rule"),
    "run_rule-grad-None": (lambda: qw.run_rule("sr", None, [0.0], lr=0.1, steps=1, grid=G), "grad"),
    "run_rule-grad-nan": (lambda: qw.run_rule("sr", _nan_grad, [0.1], lr=0.1, steps=1, grid=G), "grad"),
    "run_rule-grad-shape": (lambda: qw.run_rule("sgd", lambda w, rng: np.ones(3), np.zeros(2), lr=0.1, steps=1),
                            "grad"),
    "run_rule-w0-inf": (lambda: qw.run_rule("sr", rademacher_grad, [INF], lr=0.1, steps=1, grid=G), "w0"),
    "run_rule-lr-shape": (lambda: qw.run_rule("sr", rademacher_grad, np.zeros(4), lr=np.array([0.1, 0.2]), steps=1,
                                              grid=G), "lr"),
    "run_rule-steps-too-many": (lambda: qw.run_rule("sr", rademacher_grad, [0.0], lr=0.1, steps=10**8 + 1, grid=G),
                                "steps"),
    "run_rule-steps-float": (lambda: qw.run_rule("sr", rademacher_grad, [0.0], lr=0.1, steps=1e7, grid=G), "steps"),
    "run_rule-seed--1": (lambda: qw.run_rule("sr", rademacher_grad, [0.0], lr=0.1, steps=1, grid=G, seed=-1), "seed"),
    "run_rule-bc_rounding-array": (lambda: qw.run_rule("bc", rademacher_grad, [0.0], lr=0.1, steps=1, grid=G,
                                                       bc_rounding=np.array([1.0, 2.0])), "bc_rounding"),
    "run_rule-clip_buffer-int": (lambda: qw.run_rule("bc", rademacher_grad, [0.0], lr=0.1, steps=1, grid=G,
                                                     clip_buffer=1), "clip_buffer"),
    "run_rule-observe-number": (lambda: qw.run_rule("sr", rademacher_grad, [0.0], lr=0.1, steps=1, grid=G, observe=3),
                                "observe"),
    "run_rule-sgd-grid-str": (lambda: qw.run_rule("sgd", rademacher_grad, [0.0], lr=0.1, steps=1, grid="x"), "grid"),
    "run_rule-sgd-overflow": (lambda: qw.run_rule("sgd", lambda w, rng: np.full(w.shape, -1e300), [0.0], lr=1e10,
                                                  steps=1), "lr"),
    # the exact chain: at most 2**24 grid points x noise values; P square, real, row-stochastic
    "neighbour_lr-grid-None": (lambda: qw.neighbour_lr(None, quadratic), "grid"),
    "neighbour_lr-grid-too-big": (lambda: qw.neighbour_lr(qw.Grid.symmetric(1e-9, 2**23), quadratic), "grid"),
    "sr_transition_matrix-noise-too-many": (lambda: qw.sr_transition_matrix(qw.Grid.symmetric(1e-6, 2**20), quadratic,
                                                                            0.1, noise=np.ones(9)), "noise"),
    "stationary_distribution-P-True": (lambda: qw.stationary_distribution(True), "P"),
    "stationary_distribution-P-scalar": (lambda: qw.stationary_distribution(0.5), "P"),
    "stationary_distribution-P-complex": (lambda: qw.stationary_distribution(np.array([[0.9 + 1j, 0.1], [0.3, 0.7]])),
                                          "P"),
    "stationary_distribution-P-sparse-complex": (lambda: qw.stationary_distribution(
        sparse.csr_matrix(np.array([[0.9 + 1j, 0.1], [0.3, 0.7]]))), "P"),
    "detailed_balance_error-P-not-square": (lambda: qw.detailed_balance_error(np.eye(3)[:2], [0.5, 0.5]), "P"),
    "detailed_balance_error-P-None": (lambda: qw.detailed_balance_error(None, [1.0]), "P"),
    "detailed_balance_error-pi-above-1": (lambda: qw.detailed_balance_error(np.eye(2), [0.5, 1.5]), "pi"),
    # closed forms: results that would overflow float64 are refused
    "sgd_stationary_variance-overflow": (lambda: qw.sgd_stationary_variance(0.1, 5e-324, 1.0), "curvature"),
    "sgd_stationary_variance-shapes": (lambda: qw.sgd_stationary_variance([0.1, 0.2], 1.0, [1.0, 2.0, 3.0]),
                                       "noise_var"),
    "sr_floor-overflow": (lambda: qw.sr_floor(4.0, [1.7e308, 1.7e308]), "mean_abs_grad"),
    # LogisticProblem: x (n, d) finite within 1e50, labels +-1, 0 < ridge <= 1e50; make's sizes; methods' w
    "LogisticProblem-x-1d": (lambda: qw.LogisticProblem(np.ones(3), np.ones(3), 0.1), "x"),
    "LogisticProblem-x-nan": (lambda: qw.LogisticProblem(np.array([[1.0], [NAN]]), np.ones(2), 0.1), "x"),
    "LogisticProblem-x-huge": (lambda: qw.LogisticProblem(np.full((2, 1), 1e60), np.ones(2), 0.1), "x"),
    "LogisticProblem-x-str": (lambda: qw.LogisticProblem("3", np.ones(2), 0.1), "x"),
    "LogisticProblem-y-length": (lambda: qw.LogisticProblem(np.ones((3, 2)), np.ones(2), 0.1), "y"),
    "LogisticProblem-y-labels": (lambda: qw.LogisticProblem(np.ones((2, 2)), np.array([1.0, 0.5]), 0.1), "y"),
    "LogisticProblem-ridge-0": (lambda: qw.LogisticProblem(np.ones((2, 2)), np.ones(2), 0.0), "ridge"),
    "LogisticProblem-ridge-str": (lambda: qw.LogisticProblem(np.ones((2, 2)), np.ones(2), "0.1"), "ridge"),
    "LogisticProblem-ridge-huge": (lambda: qw.LogisticProblem(np.ones((2, 2)), np.ones(2), 1e60), "ridge"),
    "make-n-times-d": (lambda: qw.LogisticProblem.make(3, n=2**26), "n \\* d"),
    "make-teacher_scale-huge": (lambda: qw.LogisticProblem.make(3, teacher_scale=1e200), "teacher_scale"),
    "make-seed--1": (lambda: qw.LogisticProblem.make(3, seed=-1), "seed"),
    "loss-w-shape": (lambda: _prob().loss(np.ones(4)), "w"),
    "grad-w-nan": (lambda: _prob().grad([0.0, NAN, 0.0]), "w"),
    "grad-w-huge": (lambda: _prob().grad([0.0, 1e60, 0.0]), "w"),
    "minibatch_grad-rng--1": (lambda: _prob().minibatch_grad(np.zeros(3), -1, 4), "rng"),
    "minibatch_grad-batch-0": (lambda: _prob().minibatch_grad(np.zeros(3), np.random.default_rng(0), 0), "batch"),
    "hessian-w-2d": (lambda: _prob().hessian(np.zeros((2, 3))), "w"),
    "solve-tol-0": (lambda: _prob().solve(tol=0.0), "tol"),
    "solve-max_iter-0": (lambda: _prob().solve(max_iter=0), "max_iter"),
    "noise_mean_abs-n_draws-too-many": (lambda: _prob().noise_mean_abs(np.zeros(3), 4, n_draws=2**24), "n_draws"),
    # torch: the optimizer, the groups, the MLP, fit, the signal-propagation simulation
    "QuantizedSGD-params-number": (lambda: qw.QuantizedSGD(3.0, lr=0.1), "params"),
    "QuantizedSGD-params-strings": (lambda: qw.QuantizedSGD(["3"], lr=0.1), "params"),
    "QuantizedSGD-params-int-tensor": (lambda: qw.QuantizedSGD([torch.tensor([1, 2])], lr=0.1), "params"),
    "QuantizedSGD-params-nan": (lambda: qw.QuantizedSGD([torch.tensor([NAN])], lr=0.1), "params"),
    "QuantizedSGD-params-dict-without-params": (lambda: qw.QuantizedSGD([{"lr": 0.1}], lr=0.1), "params"),
    "QuantizedSGD-rule-array": (lambda: qw.QuantizedSGD([torch.zeros(2)], lr=0.1, rule=np.array(["sr"])), "rule"),
    "QuantizedSGD-lr-in-group": (lambda: qw.QuantizedSGD([{"params": [torch.zeros(2)], "lr": NAN}], lr=0.1), "lr"),
    "QuantizedSGD-sgd-grid-str": (lambda: qw.QuantizedSGD([torch.zeros(2)], lr=0.1, grid="x"), "grid"),
    "QuantizedSGD-seed--1": (lambda: qw.QuantizedSGD([torch.zeros(2)], lr=0.1, seed=-1), "seed"),
    "QuantizedSGD-bc_rounding-array": (lambda: qw.QuantizedSGD([torch.zeros(2)], lr=0.1,
                                                               bc_rounding=np.array([1.0])), "bc_rounding"),
    "QuantizedSGD-clip_buffer-array": (lambda: qw.QuantizedSGD([torch.zeros(2)], lr=0.1,
                                                               clip_buffer=np.array([1, 0])), "clip_buffer"),
    "weight_groups-model-number": (lambda: qw.weight_groups(3.0, "sr", 0.1), "model"),
    "weight_groups-rule-nan": (lambda: qw.weight_groups(_net(), NAN, 0.1), "rule"),
    "weight_groups-lr-inf": (lambda: qw.weight_groups(_net(), "sr", INF), "lr"),
    "weight_groups-bias_lr-str": (lambda: qw.weight_groups(_net(), "sr", 0.1, bias_lr="3"), "bias_lr"),
    "binary_mlp-sizes-number": (lambda: qw.binary_mlp(8), "sizes"),
    "binary_mlp-sizes-string": (lambda: qw.binary_mlp("84"), "sizes"),
    "binary_mlp-sizes-too-wide": (lambda: qw.binary_mlp((8, 2**24 + 1)), "sizes"),
    "binary_mlp-sizes-layer-too-big": (lambda: qw.binary_mlp((2**15, 2**14 + 1)), "sizes"),
    "binary_mlp-seed--1": (lambda: qw.binary_mlp((4, 3), seed=-1), "seed"),
    "binary_mlp-seed-str": (lambda: qw.binary_mlp((4, 3), seed="3"), "seed"),
    "binary_mlp-activation-array": (lambda: qw.binary_mlp((4, 3), activation=np.array(["relu"])), "activation"),
    "fit-model-number": (lambda: _fit(model=3.0), "model"),
    "fit-data-None": (lambda: _fit(data=None), "data"),
    "fit-opt-None": (lambda: _fit(opt=None), "opt"),
    "fit-steps-too-many": (lambda: _fit(steps=10**8 + 1), "steps"),
    "fit-seed-True": (lambda: _fit(seed=True), "seed"),
    "fit-drop_last-array": (lambda: _fit(drop_last=np.array([1, 0])), "drop_last"),
}


@pytest.mark.parametrize("call,arg", list(BAD_INPUT.values()), ids=list(BAD_INPUT))
def test_bad_input_names_the_argument_and_what_is_allowed(call, arg):
    with pytest.raises(ValueError, match=rf"(?<![\w.]){arg}(?!\w)") as info:
        call()
    assert re.search(r"\bmust\b|at most|<=|>=|in \[|one of", str(info.value)), str(info.value)


def test_the_limits_themselves_are_accepted():
    assert qw.Grid.fixed_point(53, 0).n_levels == 2**53
    assert qw.Grid.fixed_point(1, 1022).delta == 2.0**-1022
    assert qw.Grid.binary(1e300).points.tolist() == [-1e300, 1e300]
    assert qw.Grid.symmetric(2.0**-1000, 2**52).n_levels == 2**53 + 1
    assert qw.Grid.symmetric(2.0**944, 2**52).high == 2.0**996            # ~6.7e299 <= 1e300
    assert qw.run_rule("sr", rademacher_grad, [0.0], lr=0.1, steps=0, grid=G).deployed.tolist() == [0.0]
    big = qw.Grid.symmetric(1e-6, 2**23 - 1)                      # 2**24 - 1 points x 1 noise value
    assert qw.neighbour_lr(big, 1.0, noise=[0.0]) == pytest.approx(1e-6)


def test_steps_that_overflow_are_clipped_to_the_grid():
    """With a grid an overflowing step lands beyond the range: clipped, the exact limit, without warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert qw.r_update(0.0, 2.0, 1e308, G) == G.low
        assert qw.r_update(0.0, -2.0, 1e308, G) == G.high
        assert qw.sr_update(np.zeros(3), 2.0, 1e308, G, 0).tolist() == [G.low] * 3
        assert qw.bc_update(0.0, 2.0, 1e308, G) == G.low
        run = qw.run_rule("sr", lambda w, rng: np.where(w > 0, 2.0, -2.0), np.array([-0.5, 0.5]), lr=1e308,
                          steps=3, grid=G)
        assert run.deployed.tolist() == [G.high, G.low]          # the sign flips: from end to end
        P = qw.sr_transition_matrix(G, quadratic, 1e308).toarray()
    assert np.allclose(P.sum(axis=1), 1.0) and np.all(P[:, 1:-1] == 0)  # every step reaches an end
    inside = np.abs(G.points - W_STAR) < 1                              # there the noise's sign decides which
    assert np.allclose(P[inside][:, [0, -1]], 0.5)
    assert np.all(P[~inside][:, [0, -1]].max(axis=1) == 1.0)            # elsewhere the mean gradient's sign


def test_bc_update_calls_its_flag_clip_buffer_as_run_rule_does():
    """``clip`` is the STE's clipping point elsewhere; bc_update's flag is ``clip_buffer`` (``clip`` deprecated)."""
    assert G.high == 2.0
    assert qw.bc_update(1.9, -1.0, 1.0, G, clip_buffer=False) == pytest.approx(2.9)      # beyond the range
    assert qw.bc_update(1.9, -1.0, 1.0, G) == G.high                                    # clipped back to it
    with pytest.warns(DeprecationWarning, match="now called clip_buffer"):
        assert qw.bc_update(1.9, -1.0, 1.0, G, clip=False) == pytest.approx(2.9)
    with pytest.raises(ValueError, match="pass clip_buffer only"):
        qw.bc_update(1.9, -1.0, 1.0, G, clip_buffer=False, clip=False)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match=r"\bclip must"):
        qw.bc_update(1.9, -1.0, 1.0, G, clip="yes")


def test_update_functions_take_tensors_and_numbers_together():
    w = torch.tensor([0.5, -0.25], dtype=torch.float64)
    g = torch.tensor([1.0, 2.0], dtype=torch.float64)
    assert torch.equal(qw.sgd_update(w, g, 0.1), w - 0.1 * g)
    assert torch.equal(qw.sgd_update(w, 1.0, 0.1), w - 0.1)
    assert torch.equal(qw.r_update(w, g, 0.1, G), G.round(w - 0.1 * g))
    assert torch.equal(qw.bc_update(w, g, 10.0, G), torch.tensor([G.low, G.low], dtype=torch.float64))
    assert torch.equal(qw.sgd_update(w, g, np.array([0.1, 0.2])), w - torch.tensor([0.1, 0.2], dtype=torch.float64) * g)


def test_optimizer_refuses_non_finite_gradients():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = qw.QuantizedSGD([p], lr=0.1)
    p.grad = torch.tensor([1.0, INF])
    with pytest.raises(ValueError, match=r"p\.grad must be finite"):
        opt.step()
    p.grad = torch.tensor([1.0, -1.0])
    opt.step()
    assert torch.equal(p.detach(), torch.tensor([-0.1, 0.1]))
