"""Quantized weights: grids and rounding, the update rules, the exact SR chain, BC on a quadratic."""
from __future__ import annotations

import math

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
    with pytest.raises(ValueError, match=match):
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
    grid = qw.Grid.symmetric(0.125, 16)
    w = grid.round(np.linspace(-1.9, 1.9, 50))
    g = np.sin(7 * w)
    assert np.array_equal(qw.r_update(w, g, 0.1, grid), grid.round(w - 0.1 * g))
    assert np.array_equal(qw.sr_update(w, g, 0.1, grid, 4), grid.stochastic_round(w - 0.1 * g, 4))
    assert np.array_equal(qw.bc_update(w, g, 0.1, grid), np.clip(w - 0.1 * g, -2, 2))
    assert np.array_equal(qw.sgd_update(w, g, 0.1), w - 0.1 * g)


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
    """The maps depend on the weights only through sigma_w^2: binary and Gaussian nets both follow them."""
    init = qmf.optimal_init(4)
    depth = 8
    _, c_th = qmf.iterate_maps(init.activation, init.sigma_w, 0.0, depth=depth, q0=init.q_star, c0=0.3)
    for kind in ("gaussian", "binary"):
        sim = qw.simulate_weight_correlations(init.activation, init.sigma_w, 0.0, depth=depth, width=512, c0=0.3,
                                              q0=init.q_star, weights=kind, n_nets=8, seed=0)
        # finite width biases c by O(1/n); allow 4 s.e. plus 0.01
        assert np.all(np.abs(sim.c - c_th) < 4 * sim.c_sem + 0.01)
    with pytest.raises(ValueError, match="weights"):
        qw.simulate_weight_correlations("tanh", 1.0, 0.0, depth=1, width=4, c0=0.0, q0=1.0, weights="ternary")


def test_module_imports_without_torch():
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"
            "from qmf_lite import weights\n"
            "g = weights.Grid.binary(1.0); print(g.round([0.3]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
