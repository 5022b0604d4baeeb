"""Gaussian expectations: quadrature rules, the arcsine integral, and the Monte Carlo kernel helper."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import qmf_lite as qmf
from qmf_lite import gaussian


def test_normal_rule_integrates_moments():
    x, w = gaussian.normal_rule(400)
    for k, moment in ((0, 1.0), (2, 1.0), (4, 3.0), (6, 15.0)):
        assert np.sum(w * x**k) == pytest.approx(moment, rel=1e-13)


def test_monte_carlo_kernel_sign_arcsine():
    """The estimate of E[sign sign] = (2/pi) arcsin c lies within 4 standard errors; se ~ 1/sqrt(n)."""
    c = np.array([-0.7, 0.0, 0.5, 0.95])
    est = qmf.monte_carlo_kernel("sign", 1.3, c, n_samples=200_000, seed=5)
    exact = 2 / np.pi * np.arcsin(c)
    assert est.mean.shape == est.sem.shape == c.shape
    assert np.all(np.abs(est.z_score(exact)) < 4)
    # the standard error is that of a +-1 variable: sqrt((1 - K^2) / n). For +-1 values the sample variance is
    # 1 - m^2 (m the sample mean), so the estimated sem is off by -K (m - K) / (1 - K^2) relative, to first order:
    # a standard deviation of |K| / sqrt(n (1 - K^2)); 4 of them, plus the second-order 1/n where K = 0
    n = 200_000
    tol = 4 * np.abs(exact) / np.sqrt(n * (1 - exact**2)) + 2 / n
    assert np.all(np.abs(est.sem / np.sqrt((1 - exact**2) / n) - 1) < tol)


def test_monte_carlo_kernel_detects_a_wrong_kernel():
    """The same 4-standard-error test rejects a kernel that is off by 1%."""
    est = qmf.monte_carlo_kernel(qmf.QuantizedActivation(4), 0.4, 0.6, n_samples=400_000, seed=0)
    exact = qmf.QuantizedActivation(4).kernel(0.4, 0.6)
    assert abs(est.z_score(exact)) < 4
    assert abs(est.z_score(1.01 * exact)) > 4


def test_monte_carlo_kernel_is_seeded_and_scalar_shaped():
    a = qmf.monte_carlo_kernel("erf", 0.5, 0.3, n_samples=1000, seed=1)
    b = qmf.monte_carlo_kernel("erf", 0.5, 0.3, n_samples=1000, seed=1)
    assert np.ndim(a.mean) == 0 and a.mean == b.mean


@pytest.mark.parametrize("kwargs,name", [
    (dict(q=0.0), "q"), (dict(q=np.nan), "q"), (dict(c=1.5), "c"), (dict(n_samples=1), "n_samples"),
    (dict(n_samples=10.5), "n_samples"),
])
def test_monte_carlo_kernel_bad_input(kwargs, name):
    args = dict(activation="sign", q=1.0, c=0.5, n_samples=100, seed=0) | kwargs
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        qmf.monte_carlo_kernel(**args)


def test_arcsine_integral_warns_when_not_converged():
    """A density sum that is not smooth in the correlation cannot be interpolated to 1e-13 at degree 32."""
    with pytest.warns(RuntimeWarning, match="did not converge"):
        gaussian.ArcsineIntegral(lambda rho: np.abs(rho - 0.3), max_degree=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gaussian.ArcsineIntegral(lambda rho: 1.0 + rho**2)


def test_uniform_density_sum_equals_direct_sum_at_the_end_points():
    """rho = +-1 are limits (rotated coordinates): the O(N) sum and the direct O(N^2) sum agree there too."""
    d, m = 0.37, 9
    a = d * (np.arange(m) - (m - 1) / 2)
    for rho in (-1.0, -0.999, 0.0, 0.999, 1.0):
        assert gaussian.uniform_density_sum(d, m, rho) == pytest.approx(
            gaussian.step_density_sum(a, np.ones(m), rho), rel=1e-13)


@pytest.mark.parametrize("n", [0, 2.5, np.nan, "3", None, True, 5000, np.array([4, 8])], ids=repr)
def test_normal_rule_refuses_bad_node_counts(n):
    """Before, numpy's TypeError ('deg must be an integer') or lru_cache's 'unhashable' leaked out."""
    with pytest.raises(ValueError, match=r"\bn must be an integer in \[1, 4096\]"):
        gaussian.normal_rule(n)
    x, w = gaussian.normal_rule(np.int64(40))
    assert x.shape == (40,) and w.sum() == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("kwargs,name", [
    (dict(f=3.0), "f"), (dict(q=-1.0), "q"), (dict(q=np.inf), "q"), (dict(q=np.nan), "q"), (dict(q="3"), "q"),
    (dict(n=0), "n"),
])
def test_expect_bad_input(kwargs, name):
    """-inf gave a sqrt RuntimeWarning, NaN a NaN, a number in place of f a TypeError."""
    args = dict(f=np.cos, q=0.5, n=40) | kwargs
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        gaussian.expect(**args)


@pytest.mark.parametrize("kwargs,name", [
    (dict(g=None), "g"), (dict(q=-1.0), "q"), (dict(c=1e308), "c"), (dict(c=np.nan), "c"), (dict(chunk=0), "chunk"),
    (dict(chunk=2.5), "chunk"), (dict(n=-1), "n"),
])
def test_expect_pair_bad_input(kwargs, name):
    """c = 1e308 overflowed (RuntimeWarning), chunk = 0 raised range()'s ValueError naming nothing."""
    args = dict(f=np.tanh, g=np.tanh, q=0.5, c=0.3, n=20, chunk=4) | kwargs
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        gaussian.expect_pair(**args)


def test_expect_at_zero_variance_is_the_value_at_zero():
    assert gaussian.expect(np.cos, 0.0, 40) == pytest.approx(1.0, rel=1e-14)


@pytest.mark.parametrize("seed", [np.nan, -1, 2.5, "3", 1e7, None])
def test_monte_carlo_kernel_refuses_bad_seeds(seed):
    """numpy's SeedSequence raised TypeError (or accepted True); now a ValueError naming seed."""
    with pytest.raises(ValueError, match=r"\bseed must be an integer in \[0, "):
        qmf.monte_carlo_kernel("sign", 1.0, 0.5, n_samples=100, seed=seed)
    with pytest.raises(ValueError, match=r"\bn_samples must be an integer in \[2, 100000000\]"):
        qmf.monte_carlo_kernel("sign", 1.0, 0.5, n_samples=10**9)


@pytest.mark.parametrize("levels,q", [(16, 100.0), (16, 1000.0), (5, 300.0)])
def test_graded_panels_agree_with_the_chebyshev_fit(levels, q):
    """Where the Chebyshev fit converges (degree <= 2048), the graded panels give the same G(theta)."""
    phi = qmf.QuantizedActivation(levels)
    cheb = gaussian.ArcsineIntegral(lambda rho: phi.density_sum(q, rho))
    panels = gaussian.ArcsineIntegral(lambda rho: phi.density_sum(q, rho), max_degree=32, layer=phi._layer(q))
    assert cheb._panels is None and panels._panels is not None
    theta = np.arcsin(np.linspace(-1, 1, 201))
    g = cheb(theta)
    assert panels(theta) == pytest.approx(g, abs=1e-13 * np.abs(g).max())


def test_narrow_layers_switch_to_panels_without_warning_or_memory_blowup():
    """q / D^2 = 1e6: the fit would need > 16384 coefficients (a 2 GiB collocation matrix and a warning)."""
    phi = qmf.QuantizedActivation(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        integral = phi.arcsine_integral(1e6)
    assert integral._panels is not None and integral.degree == gaussian.ArcsineIntegral.PANEL_SWITCH_DEGREE
    # G(-pi/2) = int S(sin t) dt over the whole range; at c = -1 the kernel is -E[phi^2] (odd phi)
    assert phi.kernel(1e6, -1.0) == pytest.approx(-phi.second_moment(1e6), rel=1e-13)


def test_simultaneous_threshold_reference_values():
    """Table values: z_{0.975} = 1.959964, t_{7, 0.975} = 2.364624; Sidak over 36 at 1%: z at 1 - 1.3958e-4."""
    assert qmf.simultaneous_threshold(1, alpha=0.05) == pytest.approx(1.959964, abs=1e-6)
    assert qmf.simultaneous_threshold(1, dof=7, alpha=0.05) == pytest.approx(2.364624, abs=1e-6)
    assert qmf.simultaneous_threshold(36, alpha=0.01) == pytest.approx(3.633930, abs=1e-6)
    # more comparisons, fewer degrees of freedom or a smaller alpha all raise the threshold
    assert qmf.simultaneous_threshold(240, dof=7) > qmf.simultaneous_threshold(120, dof=7) > qmf.simultaneous_threshold(120)
    assert qmf.simultaneous_threshold(10, alpha=0.001) > qmf.simultaneous_threshold(10, alpha=0.01)


@pytest.mark.parametrize("dof", [None, 7])
def test_simultaneous_threshold_has_its_false_alarm_rate(dof):
    """Over independent comparisons the maximum exceeds t with probability alpha (binomial tolerance, 5 s.e.)."""
    rng = np.random.default_rng(3)
    m, alpha, reps = 40, 0.05, 20_000
    if dof is None:
        z = rng.standard_normal((reps, m))
    else:                                   # mean over dof + 1 samples divided by its estimated standard error
        x = rng.standard_normal((reps, m, dof + 1))
        z = x.mean(-1) / (x.std(-1, ddof=1) / np.sqrt(dof + 1))
    rate = np.mean(np.abs(z).max(axis=1) > qmf.simultaneous_threshold(m, dof=dof, alpha=alpha))
    assert abs(rate - alpha) < 5 * np.sqrt(alpha * (1 - alpha) / reps)


@pytest.mark.parametrize("kwargs,name", [
    (dict(n_comparisons=0), "n_comparisons"), (dict(n_comparisons=2.5), "n_comparisons"), (dict(dof=0), "dof"),
    (dict(alpha=0.0), "alpha"), (dict(alpha=0.7), "alpha"), (dict(alpha=np.nan), "alpha"),
])
def test_simultaneous_threshold_bad_input(kwargs, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        qmf.simultaneous_threshold(**(dict(n_comparisons=3) | kwargs))


def test_z_score_where_the_samples_do_not_vary():
    """sign at c = +-1: every product is +-1 and the standard error 0; the z-score is 0 for the exact value
    and infinite for any other, not 0/0 = NaN with a RuntimeWarning."""
    est = qmf.monte_carlo_kernel("sign", 1.0, [0.5, 1.0, -1.0], n_samples=2000, seed=0)
    assert est.sem[1] == 0 and est.sem[2] == 0 and est.sem[0] > 0
    z = est.z_score([2 / np.pi * np.arcsin(0.5), 1.0, -1.0])
    assert abs(z[0]) < 4 and z[1] == 0 and z[2] == 0
    assert list(est.z_score([0.0, 0.9, -0.9])[1:]) == [np.inf, -np.inf]
