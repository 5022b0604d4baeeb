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
    # the standard error is that of a +-1 variable: sqrt((1 - K^2) / n)
    assert est.sem == pytest.approx(np.sqrt((1 - exact**2) / 200_000), rel=0.02)


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
