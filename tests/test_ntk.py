"""The empirical NTK: with the true derivative of a quantized network only the readout's term is left;
the empirical NTK from Gram matrices; the infinite-width NTK with the STE against both (qmf_lite.ntk)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

import qmf_lite as qmf
from qmf_lite.ntk import backward_depth_scale, backward_rate, empirical_ntk, ste_derivative_kernel, ste_ntk
from qmf_lite.ste import quantize
from qmf_lite.training import NetSpec, QuantizedMLPBatch


def _true_derivative_forward(net, x):
    """The network's forward pass with autograd through the staircase itself (derivative 0 almost everywhere)."""
    phi = lambda h: quantize(h, net.levels, net.spacing, net.scale)  # noqa: E731
    h = torch.bmm(x.unsqueeze(0).expand(len(net.specs), -1, -1), net.w_in)
    for w, b in zip(net.weights, net.biases):
        h = torch.baddbmm(b, phi(h), w)
    return torch.baddbmm(net.b_out, phi(h), net.w_out)


def _autograd_ntk(net, forward, x):
    grads = []
    for i in range(len(x)):
        net.zero_grad()
        forward(net, x[i:i + 1])[0, 0, 0].backward()
        grads.append(torch.cat([p.grad[0].reshape(-1) for p in net.parameters()]))
    g = torch.stack(grads)
    return g @ g.T


@pytest.mark.parametrize("levels,sigma_b", [(2, 0.0), (4, 0.0), (5, 0.3)])
def test_true_derivative_leaves_only_the_readout_term_phi_dot_phi_plus_one(levels, sigma_b):
    torch.manual_seed(0)
    net = QuantizedMLPBatch([NetSpec(levels, 1.1, sigma_b, seed=2, slope=0.0)], 6, 1, 4, 32, device="cpu",
                            dtype=torch.float64)
    x = torch.randn(5, 6, dtype=torch.float64)
    with torch.no_grad():
        a_last = net.phi(net.preactivations(x)[-1])[0]
    readout = a_last @ a_last.T + 1.0           # readout weights (standard parameterization) and its bias
    theta_true = _autograd_ntk(net, lambda n, xx: _true_derivative_forward(n, xx), x)
    assert torch.allclose(theta_true, readout, rtol=1e-12, atol=1e-12)
    # the STE with slope 0 is the true derivative almost everywhere: empirical_ntk gives the same
    assert torch.allclose(empirical_ntk(net, x, output=0)[0], readout, rtol=1e-12, atol=1e-12)
    # the readout bias term alone is 1: without it the kernel would miss exactly that constant
    assert torch.allclose(theta_true - a_last @ a_last.T, torch.ones(5, 5, dtype=torch.float64), atol=1e-12)


def test_the_ste_adds_every_layer():
    torch.manual_seed(0)
    net = QuantizedMLPBatch([NetSpec(4, 1.1, 0.0, seed=2, slope=1.0)], 6, 1, 4, 32, device="cpu",
                            dtype=torch.float64)
    x = torch.randn(5, 6, dtype=torch.float64)
    with torch.no_grad():
        a_last = net.phi(net.preactivations(x)[-1])[0]
    theta = empirical_ntk(net, x, output=0)[0]
    assert torch.all(torch.diag(theta - a_last @ a_last.T - 1.0) > 0)


def test_empirical_ntk_equals_per_example_gradients():
    torch.manual_seed(0)
    specs = [NetSpec(3, 1.2, 0.1, seed=0), NetSpec(5, 0.9, 0.0, seed=1)]
    model = QuantizedMLPBatch(specs, 6, 3, 4, 16, device="cpu", dtype=torch.float64)
    x = torch.randn(5, 6, dtype=torch.float64)
    theta = empirical_ntk(model, x, output=1)
    for b in range(2):
        grads = []
        for i in range(5):
            model.zero_grad()
            model(x[i:i + 1])[b, 0, 1].backward()
            grads.append(torch.cat([p.grad[b].reshape(-1) for p in model.parameters()]))
        g = torch.stack(grads)
        assert torch.allclose(theta[b], g @ g.T, rtol=1e-10, atol=1e-10)


def test_empirical_ntk_rejects_the_papers_layout():
    model = QuantizedMLPBatch([NetSpec(3, 1.2)], 6, 3, 4, 8, device="cpu", layout="bgs19")
    with pytest.raises(ValueError, match="layout"):
        empirical_ntk(model, torch.randn(2, 6))


@pytest.mark.parametrize("kwargs, needle", [
    (dict(model=torch.nn.Linear(6, 3)), r"^model must be a QuantizedMLPBatch"),
    (dict(x=[[0.0] * 6]), r"^x must be a torch tensor"),
    (dict(x=torch.zeros(6)), r"^x must have 2 dimensions"),
    (dict(x=torch.zeros(2, 5)), r"^x must have shape \(n, 6\)"),
    (dict(x=torch.tensor([[float("nan")] * 6])), r"^x must be finite"),
    (dict(output=3), r"^output must be an integer in \[0, 2\]"),
    (dict(output=None), r"^output must be an integer in \[0, 2\]"),
    (dict(output=True), r"^output must be an integer in \[0, 2\]"),
])
def test_empirical_ntk_checks_its_arguments(kwargs, needle):
    args = {"model": QuantizedMLPBatch([NetSpec(3, 1.2)], 6, 3, 2, 8, device="cpu"), "x": torch.zeros(2, 6), **kwargs}
    with pytest.raises(ValueError, match=needle):
        empirical_ntk(**args)


def test_empirical_ntk_takes_inputs_of_another_dtype():
    """x is converted to the model's dtype (and device): a float64 input gives the float32 model's kernel."""
    model = QuantizedMLPBatch([NetSpec(3, 1.2)], 6, 3, 2, 8, device="cpu")
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(empirical_ntk(model, x.double()), empirical_ntk(model, x))


# --- the infinite-width NTK with the STE (qmf_lite.ntk, numpy/scipy) ----------------------------


@pytest.mark.parametrize("q,c,clip", [(1.0, 0.3, 0.7), (0.4, -0.6, 1.0), (2.5, 0.95, 1.5), (1.0, -0.999, 0.2)])
def test_derivative_kernel_is_the_bivariate_normal_rectangle(q, c, clip):
    """Owen's T closed form against scipy's bivariate normal cdf (Genz, abseps 1e-10) and a 1-D integral
    of the conditional normal (adaptive quadrature, 1e-13)."""
    mv = stats.multivariate_normal(mean=[0, 0], cov=q * np.array([[1, c], [c, 1]]), abseps=1e-12, releps=1e-12)
    rect = mv.cdf([clip, clip]) - mv.cdf([-clip, clip]) - mv.cdf([clip, -clip]) + mv.cdf([-clip, -clip])
    a, s = clip / math.sqrt(q), math.sqrt(1 - c * c)
    def inner(z):
        return stats.norm.pdf(z) * (stats.norm.cdf((a - c * z) / s) - stats.norm.cdf((-a - c * z) / s))

    one_d = integrate.quad(inner, -a, a, epsabs=1e-14, epsrel=1e-13)[0]
    got = ste_derivative_kernel(q, c, clip, slope=1.3) / 1.3**2
    assert got == pytest.approx(one_d, abs=1e-12)
    assert got == pytest.approx(rect, abs=1e-8)


def test_derivative_kernel_limits_and_monte_carlo():
    a = special.erf(1 / math.sqrt(2 * 0.5))
    assert ste_derivative_kernel(0.5, 0.0, 1.0) == pytest.approx(a * a, abs=1e-15)      # independent gates
    assert ste_derivative_kernel(0.5, 1.0, 1.0) == pytest.approx(a, abs=1e-15)          # the same gate
    assert ste_derivative_kernel(0.5, -1.0, 1.0) == pytest.approx(a, abs=1e-15)         # mirrored, |u| equal
    assert ste_derivative_kernel(0.5, 0.4, 0.0) == 0.0
    # a clip so wide that T / sqrt(q) leaves float64: the gate is always open, K = slope^2 (no warning)
    assert np.array_equal(ste_derivative_kernel([0.5, 2.0], [0.3, -0.9], 1.7e308, 1.1), [1.1**2, 1.1**2])
    # slope zero in c at c = 0: symmetric differences of 1e-4 agree with the value to second order
    d = ste_derivative_kernel(0.5, [1e-4, -1e-4], 1.0)
    assert abs(d[0] - d[1]) < 1e-13
    # Monte Carlo, 10^6 pairs: the binomial standard error, 5 of them
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, 1_000_000))
    c, q, t = 0.6, 0.8, 0.9
    u1, u2 = math.sqrt(q) * z[0], math.sqrt(q) * (c * z[0] + math.sqrt(1 - c * c) * z[1])
    p_mc = np.mean((abs(u1) <= t) & (abs(u2) <= t))
    assert abs(ste_derivative_kernel(q, c, t) - p_mc) < 5 * math.sqrt(p_mc * (1 - p_mc) / z.shape[1])


def test_backward_rate_reference_values():
    """N = 4 at the optimal sigma_w: r = erf(T / sqrt(2 q*)) at c* = 0; the backward depth scales at 0.8, 1 and 1.25
    sigma_w_opt (recomputed: 419.03, 6.879, 2.6458 layers)."""
    init = qmf.optimal_init(4)
    q_star = init.q_star
    assert backward_rate(4, init.sigma_w) == pytest.approx(special.erf(1 / math.sqrt(2 * q_star)), rel=1e-12)
    xi = backward_depth_scale(4, np.array([0.8, 1.0, 1.25]) * init.sigma_w)
    assert xi == pytest.approx([419.026, 6.87895, 2.645848], rel=1e-5)
    # with a bias c* > 0, and the rate is the rectangle over the single gate at (q*, c*)
    sb = 0.2
    q_b = float(qmf.fixed_point_q(init.activation, init.sigma_w, sb))
    c_b = float(qmf.fixed_point_c(init.activation, init.sigma_w, sb))
    p_in = special.erf(1 / math.sqrt(2 * q_b))
    assert backward_rate(4, init.sigma_w, sb) == pytest.approx(ste_derivative_kernel(q_b, c_b, 1.0) / p_in, rel=1e-12)


def test_ste_ntk_recursion_by_hand():
    """Two layers written out: Delta^2 = Kd^2, Delta^1 = sigma_w^2 Kd^1 Delta^2, Theta/n = K^1 Delta^2 + K^2."""
    act, sw, c0 = qmf.QuantizedActivation(4), 1.1, 0.4
    q1 = float(qmf.fixed_point_q(act, sw, 0.0))
    s = 1 / (sw * math.sqrt(special.erf(1 / math.sqrt(2 * q1))))
    k1 = float(act.kernel(q1, c0))
    q2 = sw**2 * float(act.second_moment(q1))
    c2 = sw**2 * k1 / q2
    kd1, kd2 = ste_derivative_kernel(q1, c0, 1.0, s), ste_derivative_kernel(q2, c2, 1.0, s)
    k = ste_ntk(act, sw, 2, c0)
    assert k.grad_off[1] == pytest.approx(kd2, rel=1e-13)
    assert k.grad_off[0] == pytest.approx(sw**2 * kd1 * kd2, rel=1e-13)
    assert k.theta_off == pytest.approx(k1 * kd2 + float(act.kernel(q2, c2)), rel=1e-12)
    kw = ste_ntk(act, sw, 2, c0, width=100, n_in=10)
    assert kw.theta_off == pytest.approx(k.theta_off + 0.01 * kd2 + 0.01 + 0.1 * c0 * k.grad_off[0], rel=1e-12)
    # chi_1 = 1 at the fixed point: the diagonal backward kernel is the same at every layer
    assert np.allclose(k.grad_diag, k.grad_diag[-1], rtol=1e-12)


def test_backward_correlation_decays_by_p_per_layer_at_c_zero():
    act, sw = qmf.QuantizedActivation(4), qmf.optimal_init(4).sigma_w
    k = ste_ntk(act, sw, 30, 0.0)
    assert np.allclose(k.grad_corr[:-1] / k.grad_corr[1:], backward_rate(4, sw), rtol=1e-12)


def _pair_on_sphere(n_in, c0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, n_in, generator=g, dtype=torch.float64)
    e1 = x[0] / x[0].norm()
    v = x[1] - (x[1] @ e1) * e1
    e2 = v / v.norm()
    return torch.stack([e1, c0 * e1 + math.sqrt(1 - c0 * c0) * e2]) * math.sqrt(n_in)


@pytest.mark.parametrize("factor", [0.8, 1.0, 1.25])
def test_ste_ntk_matches_the_empirical_ntk_of_wide_networks(factor):
    """Theta/n of 16 networks of width 384: the mean within 4 standard errors of the theory (6 comparisons per factor,
    two-sided normal tail of 4 s.e.: 6e-5 each), plus a finite-width bias of 2 depth/width relative."""
    n, n_in, depth, nets, c0 = 384, 16, 6, 16, 0.3
    sw = factor * qmf.optimal_init(4).sigma_w
    x = _pair_on_sphere(n_in, c0)
    model = QuantizedMLPBatch([NetSpec(4, sw, 0.0, seed=s) for s in range(nets)], n_in, 1, depth, n, device="cpu",
                              dtype=torch.float64)
    theta = empirical_ntk(model, x, output=0).numpy() / n
    k = ste_ntk(4, sw, depth, [c0, 1.0], width=n, n_in=n_in)
    for values, expected in ((theta[:, 0, 1], k.theta_off[0]), (theta[:, [0, 1], [0, 1]].ravel(), k.theta_diag)):
        se = values.std(ddof=1) / math.sqrt(len(values))
        assert abs(values.mean() - expected) < 4 * se + 2 * depth / n * abs(expected)


def test_backward_correlation_of_wide_networks_follows_the_rate():
    """Correlation of the back-propagated errors of two inputs at c0 = 0, 10 layers, width 512, 16 networks:
    within 4 standard errors of the 16 networks, plus 2/width for the finite-width bias, of grad_corr at layers 1, 5, 9."""
    n, n_in, depth, nets = 512, 16, 10, 16
    sw = qmf.optimal_init(4).sigma_w
    x = _pair_on_sphere(n_in, 0.0, seed=3)
    model = QuantizedMLPBatch([NetSpec(4, sw, 0.0, seed=s) for s in range(nets)], n_in, 1, depth, n, device="cpu",
                              dtype=torch.float64)
    _, grads = model.preactivation_grads(x, output=0)
    k = ste_ntk(4, sw, depth, 0.0)
    for layer in (0, 4, 8):
        g = grads[layer].numpy()                         # (nets, 2, width)
        corr = (g[:, 0] * g[:, 1]).sum(1) / np.sqrt((g[:, 0] ** 2).sum(1) * (g[:, 1] ** 2).sum(1))
        se = corr.std(ddof=1) / math.sqrt(nets)
        assert abs(corr.mean() - k.grad_corr[layer]) < 4 * se + 2 / n


@pytest.mark.parametrize("call, needle", [
    (lambda: ste_derivative_kernel(0.0, 0.3, 1.0), r"^q must be"),
    (lambda: ste_derivative_kernel(1.0, 1.5, 1.0), r"^c must lie in \[-1, 1\]"),
    (lambda: ste_derivative_kernel(1.0, 0.3, -1.0), r"^clip must be"),
    (lambda: backward_rate("tanh", 1.0), r"^activation must be a QuantizedActivation"),
    (lambda: backward_rate(3, 0.5), r"^sigma_w and sigma_b must give the variance map a finite positive fixed point"),
    (lambda: ste_ntk(4, 1.0, 0, 0.0), r"^depth must be"),
    (lambda: ste_ntk(4, 1.0, 3, 0.0, width=64), r"^width and n_in must be given together"),
    (lambda: ste_ntk(4, 1.0, 3, 0.0, q1=-1.0), r"^q1 must be"),
    # each slope is allowed alone (<= 1e150), but chi_1 ~ slope^2 over three layers leaves float64
    (lambda: ste_ntk(4, 1.0, 3, [0.0, 0.5], slope=2.5e51, width=64, n_in=16), r"^slope, sigma_w and depth must keep"),
    (lambda: ste_ntk(4, 1.0, 40, 0.5, slope=1e4), r"^slope, sigma_w and depth must keep"),
])
def test_infinite_width_functions_check_their_arguments(call, needle):
    with pytest.raises(ValueError, match=needle):
        call()
