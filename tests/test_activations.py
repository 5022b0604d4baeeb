"""Activations and their Gaussian expectations against independent computations."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

import qmf_lite as qmf
from qmf_lite.gaussian import step_density_sum, uniform_density_sum


def pdf(x):
    return np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)


@pytest.mark.parametrize("levels", [2, 3, 4, 7, 16])
def test_quantized_levels_and_thresholds(levels):
    phi = qmf.QuantizedActivation(levels, scale=2.0)
    assert phi.values == pytest.approx(2.0 * (-1 + 2 * np.arange(levels) / (levels - 1)))
    assert phi.thresholds.size == levels - 1
    assert phi.thresholds == pytest.approx(-phi.thresholds[::-1], abs=1e-15)
    assert np.diff(phi.thresholds) == pytest.approx(phi.spacing)
    # default spacing: thresholds midway between levels, i.e. rounding hardtanh to the nearest level
    x = np.linspace(-2.5, 2.5, 1001) + 1e-9
    nearest = phi.values[np.argmin(np.abs(np.clip(x, -2, 2)[:, None] - phi.values[None, :]), axis=1)]
    assert np.array_equal(phi(x), nearest)


def test_quantized_on_torch_keeps_dtype_and_matches_numpy():
    phi = qmf.QuantizedActivation(5, spacing=0.3)
    x = torch.linspace(-2, 2, 401, dtype=torch.float64)
    y = phi(x)
    assert y.dtype == torch.float64 and y.device == x.device
    assert np.array_equal(y.numpy(), phi(x.numpy()))
    assert phi(torch.zeros(3, dtype=torch.float32)).dtype == torch.float32


@pytest.mark.parametrize("levels,spacing", [(2, None), (3, 0.7), (4, None), (16, 0.2)])
@pytest.mark.parametrize("q", [0.05, 0.6, 3.0])
def test_step_moments_against_quad(levels, spacing, q):
    phi = qmf.QuantizedActivation(levels, spacing)
    pts = list(phi.thresholds / np.sqrt(q))
    m1 = integrate.quad(lambda z: phi(np.sqrt(q) * z) * pdf(z), -12, 12, points=pts, limit=400, epsabs=1e-13)[0]
    m2 = integrate.quad(lambda z: phi(np.sqrt(q) * z) ** 2 * pdf(z), -12, 12, points=pts, limit=400, epsabs=1e-13)[0]
    assert phi.mean(q) == pytest.approx(m1, abs=1e-10)
    assert phi.second_moment(q) == pytest.approx(m2, abs=1e-10)


def kernel_by_quad(phi, q, c):
    """E[phi(u1) phi(u2)] as a 1-d quadrature over z1 of the exact conditional mean over z2."""
    a = phi.thresholds / np.sqrt(q)
    s = np.sqrt(1 - c * c)

    def inner(z1):
        return phi.values[0] + np.sum(phi.jumps * special.ndtr((c * z1 - a) / s))

    f = lambda z1: phi(np.sqrt(q) * z1) * inner(z1) * pdf(z1)  # noqa: E731
    return integrate.quad(f, -12, 12, points=list(a), limit=500, epsabs=1e-13, epsrel=1e-12)[0]


@pytest.mark.parametrize("levels,spacing", [(3, 0.7), (4, None), (8, 0.25), (16, None)])
@pytest.mark.parametrize("c", [-0.95, -0.3, 0.0, 0.4, 0.9, 0.999])
def test_step_kernel_against_quad(levels, spacing, c):
    phi = qmf.QuantizedActivation(levels, spacing)
    q = 0.37
    assert phi.kernel(q, c) == pytest.approx(kernel_by_quad(phi, q, c), abs=1e-8)


def test_step_kernel_end_points_exact():
    phi = qmf.QuantizedActivation(6, 0.3)
    q = 0.8
    assert phi.kernel(q, 1.0) == pytest.approx(phi.second_moment(q), abs=1e-15)
    assert phi.kernel(q, -1.0) == pytest.approx(-phi.second_moment(q), abs=1e-12)  # odd phi


@pytest.mark.parametrize("c", [-0.8, 0.0, 0.5, 0.99])
def test_step_derivative_kernel_against_scipy_density(c):
    phi = qmf.QuantizedActivation(5, 0.4)
    q = 0.5
    a = phi.thresholds / np.sqrt(q)
    mvn = stats.multivariate_normal(mean=[0, 0], cov=[[1, c], [c, 1]])
    pts = np.array([[x, y] for x in a for y in a])
    expected = np.sum(np.outer(phi.jumps, phi.jumps).ravel() * mvn.pdf(pts)) / q
    assert phi.derivative_kernel(q, c) == pytest.approx(expected, rel=1e-12)
    assert phi.derivative_kernel(q, 1.0) == np.inf


def test_uniform_density_sum_equals_direct_sum():
    for m in (1, 2, 3, 8, 15):
        d = 0.37
        a = d * (np.arange(m) - (m - 1) / 2)
        rho = np.array([-1.0, -0.7, 0.0, 0.3, 0.99, 1.0])
        assert uniform_density_sum(d, m, rho) == pytest.approx(step_density_sum(a, np.ones(m), rho), rel=1e-13)


def test_nonuniform_step_activation_matches_quantized():
    phi = qmf.QuantizedActivation(4, 0.5, scale=1.5)
    step = qmf.StepActivation(phi.thresholds, phi.values)
    for c in (-0.5, 0.2, 0.95):
        assert step.kernel(0.7, c) == pytest.approx(phi.kernel(0.7, c), abs=1e-14)
        assert step.derivative_kernel(0.7, c) == pytest.approx(phi.derivative_kernel(0.7, c), rel=1e-13)


KINKS = {"relu": [0.0], "linear": [], "erf": [], "tanh": []}


def nested_quad_expect(f, g, q, c, kinks):
    """E[f(u1) g(u2)] by nested adaptive quadrature, with break points at the kinks of f and g."""
    s, r = np.sqrt(1 - c * c), np.sqrt(q)

    def inner(z1):
        pts = [(k / r - c * z1) / s for k in kinks]
        pts = [p for p in pts if -12 < p < 12] or None
        return integrate.quad(lambda z2: g(r * (c * z1 + s * z2)) * pdf(z2), -12, 12, points=pts,
                              epsabs=1e-13, epsrel=1e-12, limit=200)[0]

    pts = [k / r for k in kinks] or None
    return integrate.quad(lambda z1: f(r * z1) * inner(z1) * pdf(z1), -12, 12, points=pts,
                          epsabs=1e-12, epsrel=1e-12, limit=200)[0]


@pytest.mark.parametrize("name", ["relu", "erf", "tanh", "linear"])
@pytest.mark.parametrize("q,c", [(0.5, 0.3), (2.0, -0.6), (1.3, 0.97)])
def test_smooth_kernels_against_nested_quad(name, q, c):
    act = qmf.get_activation(name)
    f = lambda x: float(act(x))  # noqa: E731
    d = lambda x: float(act.derivative(x))  # noqa: E731
    assert act.kernel(q, c) == pytest.approx(nested_quad_expect(f, f, q, c, KINKS[name]), abs=1e-8)
    assert act.derivative_kernel(q, c) == pytest.approx(nested_quad_expect(d, d, q, c, KINKS[name]), abs=1e-8)


@pytest.mark.parametrize("name", ["relu", "erf", "tanh", "hardtanh"])
@pytest.mark.parametrize("q", [0.3, 1.0, 4.0])
def test_second_moments_against_quad(name, q):
    act = qmf.get_activation(name)
    expected = integrate.quad(lambda z: act(np.sqrt(q) * z) ** 2 * pdf(z), -12, 12,
                              points=[-1 / np.sqrt(q), 0, 1 / np.sqrt(q)], epsabs=1e-13, limit=200)[0]
    assert act.second_moment(q) == pytest.approx(expected, abs=1e-10)


def _tanh_pair_by_quad(f, q, c):
    """E[f(u1) f(u2)] by adaptive quadrature in u (not z): u1 first, then u2 given u1 (mean c u1, variance
    q (1 - c^2)), with break points where tanh varies, |u| <= 20, so that no node spacing can step over it."""
    v, sd = q * (1 - c * c), np.sqrt(q)

    def inner(u1):
        if v == 0:
            return f(c * u1)
        lo, hi = c * u1 - 12 * np.sqrt(v), c * u1 + 12 * np.sqrt(v)
        pts = sorted({lo, hi, *(x for x in (-20.0, -3.0, 0.0, 3.0, 20.0) if lo < x < hi)})
        g = lambda w: f(w) * np.exp(-0.5 * (w - c * u1) ** 2 / v) / np.sqrt(2 * np.pi * v)  # noqa: E731
        return sum(integrate.quad(g, a, b, epsabs=1e-15, epsrel=1e-12, limit=300)[0] for a, b in zip(pts[:-1], pts[1:]))

    g = lambda u1: f(u1) * inner(u1) * np.exp(-0.5 * u1 * u1 / q) / np.sqrt(2 * np.pi * q)  # noqa: E731
    pts = sorted({-12 * sd, 12 * sd, *(x for x in (-20.0, -3.0, 0.0, 3.0, 20.0) if abs(x) < 12 * sd)})
    return sum(integrate.quad(g, a, b, epsabs=1e-15, epsrel=1e-11, limit=300)[0] for a, b in zip(pts[:-1], pts[1:]))


def _sech2(u):
    with np.errstate(over="ignore"):
        return 1.0 / np.cosh(u) ** 2


@pytest.mark.parametrize("q,c", [(16.0, 0.3), (100.0, -0.5), (1e3, 0.9), (1e4, 0.99), (1e6, 0.1), (100.0, 1.0)])
def test_tanh_at_large_variance_against_quadrature_in_u(q, c):
    """Past q = 16 the standard-normal rule steps over sech^2's unit width (E[sech^4] was off by 0.3% at
    q = 100, a factor 3 at 1e3, and E[tanh^2] exceeded 1 at 1e6); the u-rule holds 1e-10 everywhere."""
    act = qmf.get_activation("tanh")
    m2 = integrate.quad(lambda u: np.tanh(u) ** 2 * np.exp(-0.5 * u * u / q), -12 * np.sqrt(q), 12 * np.sqrt(q),
                        points=[-20, 0, 20], epsabs=0, epsrel=1e-13, limit=500)[0] / np.sqrt(2 * np.pi * q)
    assert act.second_moment(q) == pytest.approx(m2, rel=1e-11)
    assert act.kernel(q, c) == pytest.approx(_tanh_pair_by_quad(np.tanh, q, c), rel=1e-10)
    assert act.derivative_kernel(q, c) == pytest.approx(_tanh_pair_by_quad(_sech2, q, c), rel=1e-9)


def test_tanh_rules_meet_at_the_switch():
    """Just below and at the switches (U_RULE_Q, U_RULE_Q_PAIR) the two rules agree to 1e-11: no jump in the
    maps where they switch."""
    act = qmf.get_activation("tanh")
    below, at = np.nextafter(act.U_RULE_Q, 0), act.U_RULE_Q
    assert act.second_moment(below) == pytest.approx(act.second_moment(at), rel=1e-11)
    below, at = np.nextafter(act.U_RULE_Q_PAIR, 0), act.U_RULE_Q_PAIR
    for c in (-0.7, 0.0, 0.5, 0.99):
        assert act.kernel(below, c) == pytest.approx(act.kernel(at, c), rel=1e-11, abs=1e-14)
        assert act.derivative_kernel(below, c) == pytest.approx(act.derivative_kernel(at, c), rel=1e-10)


def test_callable_activation_uses_quadrature():
    act = qmf.get_activation(np.sin)
    # E[sin(u1) sin(u2)] = exp(-q) sinh(q c)
    q, c = 0.8, 0.4
    with pytest.warns(qmf.activations.QuadratureWarning, match="quadrature"):
        assert act.kernel(q, c) == pytest.approx(np.exp(-q) * np.sinh(q * c), abs=1e-10)
    # E[cos(u1) cos(u2)] = exp(-q) cosh(q c), through the finite-difference derivative
    assert act.derivative_kernel(q, c) == pytest.approx(np.exp(-q) * np.cosh(q * c), abs=1e-8)


MC_SAMPLES = 400_000


@pytest.mark.parametrize("levels", [3, 4, 16])
@pytest.mark.parametrize("c", [-0.5, 0.3, 0.9])
def test_step_kernel_against_monte_carlo(levels, c):
    """Closed form within 4 standard errors of a Monte Carlo mean of phi(u1) phi(u2)."""
    rng = np.random.default_rng(levels * 100 + int(10 * c))
    phi = qmf.QuantizedActivation(levels)
    q = 0.2
    z1, z2 = rng.standard_normal((2, MC_SAMPLES))
    prod = phi(np.sqrt(q) * z1) * phi(np.sqrt(q) * (c * z1 + np.sqrt(1 - c * c) * z2))
    se = prod.std(ddof=1) / np.sqrt(MC_SAMPLES)
    assert abs(prod.mean() - phi.kernel(q, c)) < 4 * se


def test_named_activations_and_bad_names():
    assert isinstance(qmf.get_activation("sign"), qmf.QuantizedActivation)
    assert qmf.get_activation("sign").levels == 2
    with pytest.raises(ValueError, match="activation name"):
        qmf.get_activation("swish")
    with pytest.raises(ValueError, match="activation"):
        qmf.get_activation(42)


def test_quadrature_warning_once_and_silenced_for_smooth_functions():
    import warnings

    act = qmf.CallableActivation(np.abs, name="abs")
    with pytest.warns(qmf.activations.QuadratureWarning, match="abs"):
        act.second_moment(1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        act.second_moment(2.0)                                   # once per activation
        qmf.CallableActivation(np.sin, smooth=True).kernel(1.0, 0.5)


def _hardtanh_kernel_by_conditional_mean(q, c):
    """E[phi(u1) E[phi(u2) | u1]]: the inner mean of clip(Y), Y ~ N(c u1, q (1 - c^2)), in closed form;
    the outer integral by adaptive quadrature split at the kinks u1 = +-1."""
    s, r = np.sqrt(q), np.sqrt(1 - c * c)

    def inner(u1):
        m, sd = c * u1, s * r
        hi, lo = (1 - m) / sd, (-1 - m) / sd
        return (m * (special.ndtr(hi) - special.ndtr(lo)) + sd * (np.exp(-lo * lo / 2) - np.exp(-hi * hi / 2))
                / np.sqrt(2 * np.pi) + special.ndtr(-hi) - special.ndtr(lo))

    f = lambda u1: np.clip(u1, -1, 1) * inner(u1) * np.exp(-u1 * u1 / (2 * q)) / np.sqrt(2 * np.pi * q)  # noqa: E731
    return sum(integrate.quad(f, lo, hi, epsabs=1e-15, epsrel=1e-13, limit=200)[0]
               for lo, hi in ((-12 * s, -1), (-1, 1), (1, 12 * s)))


@pytest.mark.parametrize("q", [0.05, 0.6, 3.0, 40.0])
@pytest.mark.parametrize("c", [-0.97, -0.3, 0.2, 0.9, 0.999])
def test_hardtanh_kernel_is_exact(q, c):
    """Price's theorem in closed form against an independent quadrature of the conditional mean (1e-12)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)  # quad's own round-off notes
        ref = _hardtanh_kernel_by_conditional_mean(q, c)
    assert float(qmf.HardTanh().kernel(q, c)) == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("q", [0.2, 1.0, 5.0])
@pytest.mark.parametrize("c", [-0.8, 0.0, 0.6, 0.99])
def test_hardtanh_derivative_kernel_is_a_rectangle_probability(q, c):
    """E[phi' phi'] = P(|u1| < 1, |u2| < 1), by scipy's bivariate normal CDF at the four corners."""
    a = 1 / np.sqrt(q)
    mvn = stats.multivariate_normal([0, 0], [[1, c], [c, 1]])
    prob = mvn.cdf([a, a]) - mvn.cdf([a, -a]) - mvn.cdf([-a, a]) + mvn.cdf([-a, -a])
    assert float(qmf.HardTanh().derivative_kernel(q, c)) == pytest.approx(prob, abs=1e-9)


def test_hardtanh_end_points_and_monte_carlo():
    ht = qmf.HardTanh()
    for q in (0.3, 1.0, 1e4):
        m2 = ht.second_moment(q)
        assert ht.kernel(q, 1.0) == pytest.approx(m2, rel=1e-13)
        assert ht.kernel(q, -1.0) == pytest.approx(-m2, rel=1e-13)
        assert ht.derivative_kernel(q, [1.0, -1.0]) == pytest.approx([special.erf(1 / np.sqrt(2 * q))] * 2, rel=1e-13)
    c = np.array([-0.5, 0.3, 0.95])
    est = qmf.monte_carlo_kernel(ht, 0.8, c, n_samples=400_000, seed=2)
    assert np.all(np.abs(est.z_score(ht.kernel(0.8, c))) < 4)


def test_hardtanh_second_moment_keeps_precision_at_large_q():
    """E[min(u^2, 1)] = P(|z| > a) + q E[z^2; |z| < a], a = 1/sqrt(q): expanding both in a gives
    1 - sqrt(2/pi) (2a/3 - a^3/15) + O(a^5). The closed form keeps every digit (no cancellation)."""
    q = 1e12
    a = 1 / np.sqrt(q)
    series = 1 - np.sqrt(2 / np.pi) * (2 * a / 3 - a**3 / 15)
    assert qmf.HardTanh().second_moment(q) == pytest.approx(series, rel=1e-15)


def test_chi_at_minus_one_depends_on_mirror_thresholds():
    """u2 = -u1: the Dirac masses of phi'(u1) phi'(u2) meet only where a threshold has a mirror image."""
    assert qmf.QuantizedActivation(4).derivative_kernel(1.0, -1.0) == np.inf
    lopsided = qmf.StepActivation([-0.3, 0.5], [-1.0, 0.0, 1.0])
    assert lopsided.derivative_kernel(1.0, -1.0) == 0.0
    assert lopsided.derivative_kernel(1.0, -1.0 + 1e-9) < 1e-10       # and the limit is 0 too
    assert lopsided.derivative_kernel(1.0, 1.0) == np.inf
    assert qmf.chi(-1.0, lopsided, 1.0, 0.0) == 0.0


def test_activation_contract_is_documented():
    doc = qmf.Activation.__doc__
    for method in ("_numpy", "_numpy_derivative", "_torch", "mean", "second_moment", "kernel", "derivative_kernel"):
        assert method in doc


@pytest.mark.parametrize("kwargs,name", [
    (dict(thresholds="3"), "thresholds"), (dict(thresholds=""), "thresholds"), (dict(values=None), "values"),
    (dict(values=[True, False, True]), "values"), (dict(values=[-1e101, 0.0, 1.0]), "values"),
])
def test_step_activation_refuses_what_is_not_numbers(kwargs, name):
    """"3" was read as the threshold 3.0; "" gave numpy's 'could not convert string to float'."""
    args = dict(thresholds=[-0.5, 0.7], values=[-1.0, 0.2, 1.0]) | kwargs
    with pytest.raises(ValueError, match=rf"\b{name} must"):
        qmf.StepActivation(**args)


@pytest.mark.parametrize("kwargs,name", [
    (dict(levels=2**22 + 1), "levels"), (dict(levels=1e308), "levels"), (dict(levels="3"), "levels"),
    (dict(scale=1e308), "scale"), (dict(scale=1e-300), "scale"), (dict(spacing=1e-101), "spacing"),
    (dict(levels=1001, spacing=1e98), "spacing"),
])
def test_quantized_activation_ranges(kwargs, name):
    """levels = 1e308 asked numpy for an array of 1e308 thresholds; spacing = 1e308 overflowed them to inf."""
    args = dict(levels=4) | kwargs
    with pytest.raises(ValueError, match=rf"\b{name} must"):
        qmf.QuantizedActivation(**args)
    edge = qmf.QuantizedActivation(4, spacing=1e100 / 2, scale=1e100)
    assert np.all(np.isfinite(edge.thresholds)) and edge.values[-1] == 1e100


def test_callable_activation_checks_its_arguments():
    with pytest.raises(ValueError, match=r"\bf must be callable"):
        qmf.CallableActivation(3.0)
    with pytest.raises(ValueError, match=r"\bname must be a string"):
        qmf.CallableActivation(np.tanh, name=float("nan"))
    with pytest.raises(ValueError, match=r"\bsmooth must be True or False"):
        qmf.CallableActivation(np.tanh, smooth=np.array([1.0, np.nan]))
    assert qmf.CallableActivation(np.tanh, name="t", smooth=np.True_).smooth is True


def test_bound_is_the_supremum_of_phi():
    """``bound`` caps the search for q* (maps): sup |phi| of each bounded activation, inf otherwise."""
    for name in ("tanh", "erf", "hardtanh"):
        act = qmf.get_activation(name)
        assert act.bound == 1.0 and np.abs(act(np.linspace(-50, 50, 1001))).max() <= 1.0
    assert qmf.QuantizedActivation(4, scale=2.5).bound == 2.5
    assert qmf.StepActivation([0.0, 1.0], [-0.5, 0.1, 3.0]).bound == 3.0
    assert qmf.get_activation("relu").bound == np.inf and qmf.CallableActivation(np.sin).bound == np.inf


def _phi2(h, k, rho):
    """P(X < h, Y < k) for standard normals of correlation rho, by one-dimensional quadrature."""
    s = np.sqrt(1 - rho * rho)
    return integrate.quad(lambda x: pdf(x) * special.ndtr((k - rho * x) / s), -np.inf, h,
                          epsabs=1e-15, epsrel=1e-13, limit=200)[0]


@pytest.mark.parametrize("q", [1e4, 1e6, 1e7])
def test_step_kernel_far_above_the_thresholds(q):
    """q >> D^2: three levels, phi = 1{u > g} - 1{u < -g}, so K = 2 (P(u1, u2 > g) - P(u1 > g, u2 < -g)).

    Before, the Chebyshev fit of the arcsine integrand did not converge (RuntimeWarning) and, at
    q = 1e7, asked for a 2 GiB matrix (MemoryError under a 2 GiB limit).
    """
    phi = qmf.QuantizedActivation(3)                       # thresholds +-0.5, values -1, 0, 1
    a = 0.5 / np.sqrt(q)
    c = np.array([-0.999999, -0.999, -0.3, 0.0, 0.2, 0.9, 0.99999])
    exact = [2 * (_phi2(-a, -a, x) - _phi2(-a, -a, -x)) for x in c]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert phi.kernel(q, c) == pytest.approx(exact, abs=2e-14)
