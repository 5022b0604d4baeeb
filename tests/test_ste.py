"""The straight-through estimator and the closed-form staircase (qmf_lite.ste)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import qmf_lite as qmf
from qmf_lite.ste import QuantAct, quantize, staircase_tables, ste_quantize


@pytest.mark.parametrize("levels,spacing,scale", [(2, None, 1.0), (4, None, 1.0), (5, 0.3, 2.0), (16, None, 0.5)])
def test_quantact_forward_equals_quantized_activation(levels, spacing, scale):
    phi = qmf.QuantizedActivation(levels, spacing, scale)
    act = qmf.QuantAct(phi, sigma_w=1.2)
    x = torch.randn(20000, dtype=torch.float64) * 2 * scale
    assert torch.equal(act(x), phi(x))


def _near_thresholds(phi, dtype, ulps=4):
    """Every threshold, its neighbours within a few ulps, and signed zeros and tiny values."""
    g = torch.as_tensor(phi.thresholds, dtype=dtype)
    pts = [g, torch.tensor([0.0, -0.0, 6e-17, -6e-17, 1e-300 if dtype == torch.float64 else 1e-30], dtype=dtype)]
    up, down = g.clone(), g.clone()
    for _ in range(ulps):
        up = torch.nextafter(up, torch.tensor(math.inf, dtype=dtype))
        down = torch.nextafter(down, torch.tensor(-math.inf, dtype=dtype))
        pts += [up.clone(), down.clone()]
    return torch.cat(pts)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("levels,spacing,scale", [(n, None, 1.0) for n in range(2, 18)] + [(4, 0.3, 2.0), (7, 0.1, 0.5),
                                                                                           (16, 0.37, 3.0)])
def test_quantize_matches_quantized_activation_at_every_threshold(levels, spacing, scale, dtype):
    """At, and within 4 ulps of, each threshold the closed form picks the same level as the table look-up."""
    phi = qmf.QuantizedActivation(levels, spacing, scale)
    x = _near_thresholds(phi, dtype)
    expected = phi(x)
    assert torch.equal(quantize(x, levels, spacing, scale), expected)
    # the same through the STE and QuantAct, and per network in a batch
    assert torch.equal(qmf.QuantAct(phi, sigma_w=1.0)(x), expected)
    batch = torch.stack([x, -x])
    out = ste_quantize(batch, [levels, levels], [spacing, spacing], [scale, scale], [1.0, 1.0], [1.0, 1.0])
    assert torch.equal(out[0], expected) and torch.equal(out[1], phi(-x))


def test_quantize_reported_case():
    """x = -6e-17 lies below the threshold 0 of N = 2 and N = 4: the lower level, as QuantizedActivation says."""
    x = torch.tensor([-6e-17], dtype=torch.float64)
    assert quantize(x, 2, None, 1.0).item() == -1.0
    assert quantize(x, 4, None, 1.0).item() == qmf.QuantizedActivation(4).values[1]
    assert quantize(-x, 2, None, 1.0).item() == 1.0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_quantize_non_finite_inputs_like_quantized_activation(dtype):
    """+-inf go to the end levels; NaN stays NaN (a diverged layer must not come out as a valid level),
    in the functional form, the layer, the activation on tensors and on numpy arrays."""
    x = torch.tensor([math.nan, math.inf, -math.inf, 1e300 if dtype == torch.float64 else 1e38, -1e38], dtype=dtype)
    for levels in (2, 5, 16):
        phi = qmf.QuantizedActivation(levels)
        expected = torch.tensor([math.nan, 1.0, -1.0, 1.0, -1.0], dtype=dtype)
        for out in (quantize(x, levels, None, 1.0), phi(x), QuantAct(levels, 1.0)(x), ste_quantize(x, levels)):
            assert out.dtype == dtype and torch.equal(out.isnan(), expected.isnan())
            assert torch.equal(out[1:], expected[1:])
        assert np.array_equal(phi(x.double().numpy()), expected.double().numpy(), equal_nan=True)
    assert math.isnan(qmf.QuantizedActivation(4)(math.nan)) and qmf.QuantizedActivation(4)(0.2) == pytest.approx(1 / 3)


def test_integer_tensors_are_quantized_as_real_numbers():
    """An integer tensor is read as the numbers it holds (the output in the default float dtype), not
    against tables rounded to integers."""
    x = torch.tensor([0, 1, -1, 3])
    expected = qmf.QuantizedActivation(4)(x.to(torch.get_default_dtype()))
    assert torch.allclose(expected, torch.tensor([1 / 3, 1.0, -1.0, 1.0]))
    for out in (quantize(x, 4), QuantAct(4, 1.0)(x), qmf.QuantizedActivation(4)(x)):
        assert out.dtype == torch.get_default_dtype() and torch.equal(out, expected)


def test_activations_refuse_what_is_not_real_numbers():
    for bad in (None, "0.5", [0.5, None]):
        with pytest.raises(ValueError, match=r"^x must be real numbers"):
            qmf.QuantizedActivation(4)(bad)
    with pytest.raises(ValueError, match=r"^x must be a torch tensor"):
        QuantAct(4, 1.0)(np.array([0.1]))


def test_quantize_has_zero_autograd_derivative():
    x = torch.randn(50, requires_grad=True)
    quantize(x, 4, None, 1.0).sum().backward()
    assert torch.equal(x.grad, torch.zeros(50))


def test_per_network_parameters_match_single_networks():
    x = torch.randn(3, 7, 11, dtype=torch.float64) * 2
    params = [(2, None, 1.0), (5, 0.3, 2.0), (16, None, 0.5)]
    out = quantize(x, [p[0] for p in params], [p[1] for p in params], [p[2] for p in params])
    for b, (n, d, a) in enumerate(params):
        assert torch.equal(out[b], qmf.QuantizedActivation(n, d, a)(x[b]))


def test_staircase_tables_pad_short_rows():
    g, v = staircase_tables([2, 5], [None, 0.5], [1.0, 2.0])
    assert g.shape == (2, 4) and v.shape == (2, 5)
    assert np.array_equal(g[1], qmf.QuantizedActivation(5, 0.5, 2.0).thresholds)
    assert g[0, 0] == 0.0 and np.all(np.isinf(g[0, 1:]))
    assert np.array_equal(v[0], [-1.0, 1.0, 1.0, 1.0, 1.0])


@pytest.mark.parametrize("kwargs,needle", [
    (dict(levels=1, spacing=None, scale=1.0), "levels"),
    (dict(levels=2.5, spacing=None, scale=1.0), "levels"),
    (dict(levels=4, spacing=-0.1, scale=1.0), "spacing"),
    (dict(levels=4, spacing=None, scale=float("nan")), "scale"),
    (dict(levels=[2, 3, 4], spacing=[0.1, 0.2], scale=1.0), "spacing"),
])
def test_staircase_tables_reject_bad_input(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        staircase_tables(**kwargs)


def test_quantact_gradient_is_the_clipped_slope():
    act = qmf.QuantAct(4, sigma_w=1.0, slope=0.7)
    x = torch.tensor([-1.5, -1.0, -0.3, 0.0, 0.99, 1.01, 3.0], requires_grad=True)
    act(x).sum().backward()
    assert act.clip == pytest.approx(1.0)
    expected = torch.tensor([0.0, 0.7, 0.7, 0.7, 0.7, 0.0, 0.0])
    assert torch.allclose(x.grad, expected)


def test_ste_equals_the_papers_clamp_then_quantize():
    """The authors clamp pre-activations to [-1, 1] before the staircase and pass slope * grad back:
    forward and backward are the same as QuantAct's with T = 1 (default spacing)."""
    init = qmf.optimal_init(5)
    act = qmf.QuantAct(init.activation, init.sigma_w)
    x = (torch.randn(4000, dtype=torch.float64) * 1.5).requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    act(x).sum().backward()
    y = act.slope * x2.clamp(-1.0, 1.0)                       # the gradient of the paper's clamp, times s
    ref = y.detach() / act.slope
    y.sum().backward()
    assert act.clip == 1.0
    assert torch.equal(act(x.detach()), init.activation(ref))   # clamping does not move any level
    assert torch.allclose(x.grad, x2.grad, rtol=0, atol=1e-15)


@pytest.mark.parametrize("levels", [2, 4, 16])
def test_default_slope_makes_chi1_one(levels):
    init = qmf.optimal_init(levels)
    act = qmf.QuantAct(init.activation, init.sigma_w)
    assert act.chi1 == pytest.approx(1.0, rel=1e-12)
    # against a Monte Carlo estimate of sigma_w^2 s^2 P(|u| <= T)
    u = math.sqrt(init.q_star) * np.random.default_rng(0).standard_normal(1_000_000)
    p = np.mean(np.abs(u) <= act.clip)
    se = math.sqrt(p * (1 - p) / u.size)
    assert abs(init.sigma_w**2 * act.slope**2 * p - 1) < 4 * init.sigma_w**2 * act.slope**2 * se


def test_ste_slope_is_the_papers_formula():
    """1 / (sigma_w sqrt(erf(1 / sqrt(2 q*)))) with T = 1, as in the authors' code."""
    from scipy.special import erf

    for n in (3, 8, 16):
        init = qmf.optimal_init(n)
        expected = 1 / (init.sigma_w * math.sqrt(erf(1 / math.sqrt(2 * init.q_star))))
        assert qmf.ste_slope(init.activation, init.sigma_w) == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize("call, needle", [
    (lambda: quantize([0.1, 0.2], 4), r"^x must be a torch tensor"),
    (lambda: quantize(torch.tensor([1 + 1j]), 4), r"^x must be a real"),
    (lambda: quantize(torch.zeros(3), float("nan")), r"^levels must be an integer in \[2, 4194304\]"),
    (lambda: quantize(torch.zeros(3), 10**30), r"^levels must be an integer in \[2, 4194304\]"),
    (lambda: quantize(torch.zeros(3), 4, "0.5"), r"^spacing must be"),
    (lambda: quantize(torch.zeros(3), 4, None, float("inf")), r"^scale must be finite and > 0"),
    (lambda: staircase_tables(4, rows=10**30), r"^rows must be an integer >= 1 and <= 1048576"),
    (lambda: ste_quantize(torch.zeros(3), 4, slope=float("nan")), r"^slope must not be NaN"),
    (lambda: ste_quantize(torch.zeros(3), 4, clip=-1.0), r"^clip must be finite and >= 0"),
    (lambda: ste_quantize(torch.zeros(2, 3), [2, 4], clip=[1.0, 1.0, 1.0]), r"^clip must be a scalar or have 2"),
    (lambda: ste_quantize(torch.zeros(3), 4, slope=torch.tensor(float("inf"))), r"^slope must be finite"),
    (lambda: qmf.ste_clip(qmf.Tanh()), r"^activation must be a QuantizedActivation or a number of levels"),
    (lambda: qmf.ste_clip(True), r"^activation must be a QuantizedActivation"),
    (lambda: qmf.ste_slope(0, 1.0), r"^activation must be an integer in \[2, 4194304\]"),
    (lambda: qmf.ste_slope(10**30, 1.0), r"^activation must be an integer in \[2, 4194304\]"),
    (lambda: qmf.ste_slope(4, np.array([1.0, 2.0])), r"^sigma_w must be a scalar > 0"),
    (lambda: qmf.ste_slope(4, 1.0, np.array([0.0, 1.0])), r"^sigma_b must be a scalar >= 0"),
    (lambda: qmf.ste_chi1(4, 1e101), r"^sigma_w must lie in \[1e-100, 1e\+100\]"),
    (lambda: qmf.ste_chi1(4, 1.0, slope=1e308), r"^slope must be at most 1e\+150"),
    (lambda: qmf.ste_chi1(4, 1e100, slope=1e60), r"^slope must be at most 1e\+50"),
    (lambda: qmf.ste_chi1(4, 1.0, slope="1"), r"^slope must be a real number"),
    (lambda: qmf.QuantAct(4, 1.0, np.array([0.0, 1.0])), r"^sigma_b must be a scalar >= 0"),
    # levels beyond float32's largest value would be inf in a float32 staircase; float64 holds them
    (lambda: qmf.quantize(torch.zeros(3), 4, 0.5, 1e39), r"^scale and spacing must keep every level and threshold "
                                                       r"of the staircase within torch\.float32"),
    (lambda: qmf.QuantAct(qmf.QuantizedActivation(4, 1e39, 1.0), 1.0)(torch.zeros(3)),   # thresholds +-1e39
     r"^scale and spacing must keep every level and threshold of the staircase within torch\.float32 \(magnitude "
     r"at most 3\.40282346\d*e\+38\), got 1e\+39$"),
])
def test_bad_arguments_name_the_argument_and_its_range(call, needle):
    with pytest.raises(ValueError, match=needle):
        call()


def test_ste_clip_takes_a_number_of_levels():
    assert qmf.ste_clip(4) == qmf.ste_clip(qmf.QuantizedActivation(4)) == 1.0
    assert qmf.ste_clip(np.int64(5)) == 1.0


def test_collapsed_fixed_point_gives_the_limit_not_a_division_by_zero():
    """Issue 9: odd N at sigma_b = 0 below the collapse threshold has q* = 0 exactly; every pre-activation is
    then 0, inside the clipping range, so P(|u| <= T) = 1: chi_1 = sigma_w^2 s^2 and the slope is 1/sigma_w."""
    phi, sw = qmf.QuantizedActivation(3), 0.5
    assert qmf.fixed_point_q(phi, sw, 0.0) == 0.0
    assert qmf.ste_chi1(phi, sw, 0.0, slope=1.7) == pytest.approx(sw**2 * 1.7**2, rel=1e-15)
    assert qmf.ste_slope(phi, sw, 0.0) == pytest.approx(1 / sw, rel=1e-15)
    assert qmf.ste_chi1(phi, sw, 0.0, slope=qmf.ste_slope(phi, sw, 0.0)) == pytest.approx(1.0, rel=1e-15)
    # just above q* = 0 (a tiny bias) the erf factor is 1 to double precision: the limit is continuous
    assert qmf.ste_chi1(phi, sw, 1e-6, slope=1.0) == pytest.approx(sw**2, rel=1e-12)


def test_ste_quantize_default_clip_is_ste_clip_per_network():
    x = torch.linspace(-2, 2, 41).repeat(2, 1).requires_grad_()
    ste_quantize(x, [2, 5], [None, 0.3], [1.0, 2.0], slope=1.0).sum().backward()
    for b, (n, d, a) in enumerate([(2, None, 1.0), (5, 0.3, 2.0)]):
        clip = qmf.ste_clip(qmf.QuantizedActivation(n, d, a))
        assert torch.equal(x.grad[b], (x[b].detach().abs() <= clip).float())


def test_slope_is_bounded_where_it_is_stored():
    """QuantAct and NetSpec took any slope >= 0: 1e300 back-propagated inf; they refuse what ste_chi1 refuses."""
    for make in (lambda s: QuantAct(4, 2.0, slope=s), lambda s: qmf.NetSpec(4, 2.0, slope=s)):
        with pytest.raises(ValueError, match=r"^slope must be at most 5e\+149"):
            make(1e150)
        make(5e149)
        make(0.0)                                   # the true derivative of the steps
    with pytest.raises(ValueError, match=r"^slope must be at most"):
        qmf.ste_chi1(4, 2.0, slope=1e150)
