"""Torch simulations of wide random networks against the infinite-width maps; other weight distributions;
post-activation covariances."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import qmf_lite as qmf
from qmf_lite import simulate


def _assert_follows_the_maps(res, activation, sigma_w, sigma_b, depth, width, q0, c0):
    """The simulated q^l and c^l agree with the maps within 4 standard errors plus an O(1/width)
    finite-width bias, and the tolerance is meaningful: a 10% larger sigma_w is rejected."""
    q_th, c_th = qmf.iterate_maps(activation, sigma_w, sigma_b, depth=depth, q0=q0, c0=c0)
    tol_c = 4 * res.c_sem + 2 / width
    tol_q = 4 * res.q_sem + 2 * q_th / width
    assert np.all(np.abs(res.c - c_th) < tol_c), (res.c, c_th, tol_c)
    assert np.all(np.abs(res.q - q_th) < tol_q), (res.q, q_th, tol_q)
    q_off, c_off = qmf.iterate_maps(activation, 1.1 * sigma_w, sigma_b, depth=depth, q0=q0, c0=c0)
    assert np.any(np.abs(res.c - c_off) > tol_c) or np.any(np.abs(res.q - q_off) > tol_q)


@pytest.mark.parametrize("activation,sigma_w,sigma_b,q0,c0", [
    (qmf.QuantizedActivation(4), 1.4, 0.1, 0.5, 0.6),
    ("tanh", 1.5, 0.2, 1.0, 0.3),
])
def test_torch_simulation_matches_iterated_maps(activation, sigma_w, sigma_b, q0, c0):
    """Per-layer empirical q and c of 16 nets of width 1024 against the infinite-width maps.

    Tolerance: 4 standard errors over nets (fluctuations O(1/sqrt(width)) per net) plus the
    O(1/width) finite-width bias, taken as 2/width.
    """
    width, depth, n_nets = 1024, 8, 16
    res = qmf.simulate_correlations(activation, sigma_w, sigma_b, depth=depth, width=width, c0=c0, q0=q0,
                                    n_nets=n_nets, seed=3, device="cpu")
    assert res.q.shape == res.c.shape == (depth + 1,)
    _assert_follows_the_maps(res, activation, sigma_w, sigma_b, depth, width, q0, c0)


def test_torch_simulation_is_seeded():
    a = qmf.simulate_correlations("erf", 1.2, 0.0, depth=3, width=64, c0=0.5, n_nets=2, seed=7, device="cpu")
    b = qmf.simulate_correlations("erf", 1.2, 0.0, depth=3, width=64, c0=0.5, n_nets=2, seed=7, device="cpu")
    c = qmf.simulate_correlations("erf", 1.2, 0.0, depth=3, width=64, c0=0.5, n_nets=2, seed=8, device="cpu")
    assert np.array_equal(a.c, b.c) and not np.array_equal(a.c, c.c)


def test_standard_errors_are_the_spread_over_networks():
    """q_sem and c_sem, which set the tolerances of the simulation tests and the chapters' error bars, are the
    standard errors of the means over the networks: by definition (from the per-network values), and in
    calibration (the spread of the mean over 30 independent runs; relative error of that comparison about
    0.15, so [0.4, 1.6] is 4 of them, and a sem 2 or 4 times too large falls outside)."""
    kw = dict(depth=3, width=64, c0=0.6, n_nets=16, device="cpu", dtype=torch.float64)
    runs = [qmf.simulate_correlations("tanh", 1.5, 0.1, seed=s, **kw) for s in range(30)]
    for res in runs[:3]:
        for mean, sem, nets in ((res.q, res.q_sem, res.q_nets), (res.c, res.c_sem, res.c_nets)):
            assert nets.shape == (16, 4)
            assert mean == pytest.approx(nets.mean(0), rel=1e-12)
            assert sem == pytest.approx(nets.std(0, ddof=1) / 4, rel=1e-12)
    for field in ("q", "c"):
        means = np.array([getattr(r, field) for r in runs])[:, 1:]
        sems = np.array([getattr(r, field + "_sem") for r in runs])[:, 1:]
        ratio = means.std(0, ddof=1) / np.sqrt((sems**2).mean(0))
        assert np.all((ratio > 0.4) & (ratio < 1.6)), (field, ratio)


def test_covariance_of_circle_inputs():
    """Layer 1 behind sign: sigma_w^2 times the mean product of the inputs' signs, up to the weights' noise
    (variance at most 2 sigma_w^4 / (n n_nets) per entry), and that mean is the arcsine kernel
    (2/pi) arcsin(cos dtheta) up to the input draw's (1 - K^2) / n; each within 4 standard errors."""
    n, nets, sw = 2048, 8, 1.3
    theta, h0 = qmf.circle_inputs(12, n, q0=0.7, seed=1)
    cov = qmf.simulate_covariance("sign", sw, 0.0, h0, layers=[0, 1], n_nets=nets, device="cpu", dtype=torch.float64)
    assert cov[0] == pytest.approx(0.7 * np.cos(theta[:, None] - theta[None, :]), abs=1e-5)
    signs = np.sign(h0)
    given = sw**2 * signs.T @ signs / n
    assert np.abs(cov[1] - given).max() < 4 * sw**2 * math.sqrt(2 / (n * nets))
    arcsine = 2 / np.pi * np.arcsin(np.clip(np.cos(theta[:, None] - theta[None, :]), -1, 1))
    assert np.abs(signs.T @ signs / n - arcsine).max() < 4 / math.sqrt(n)
    assert np.abs(cov[1] / sw**2 - arcsine).max() < 4 * (1 / math.sqrt(n) + math.sqrt(2 / (n * nets)))


# --- weight distributions and post-activation covariances ------------------------------

@pytest.mark.parametrize("weights", simulate.WEIGHTS)
def test_unit_weights_have_mean_zero_and_variance_one(weights):
    gen = torch.Generator().manual_seed(0)
    w = simulate._unit_weights((400, 500), weights, gen, "cpu", torch.float64)
    n = w.numel()
    assert abs(float(w.mean())) < 4 / math.sqrt(n)
    # Var(w^2) is 2, 0 and 0.8 for the three: 4 standard errors of the sample variance
    assert abs(float(w.var()) - 1) < 4 * math.sqrt(2.0 / n)
    if weights == "binary":
        assert set(torch.unique(w).tolist()) == {-1.0, 1.0}
    if weights == "uniform":
        assert float(w.abs().max()) <= math.sqrt(3) and float(w.abs().max()) > 0.99 * math.sqrt(3)


@pytest.mark.parametrize("weights,activation,sigma_w,sigma_b,q0,c0", [
    ("binary", "tanh", 2.5, 0.05, 1.0, 0.9),
    ("uniform", "tanh", 2.5, 0.05, 1.0, 0.9),
    ("binary", "erf", 1.3, 0.1, 0.7, 0.3),
    # not binary weights with a quantized activation: then the pre-activations lie on a lattice of
    # step ~ sigma_w delta / sqrt(width), and a threshold between two lattice points acts as if it sat
    # on one of them, an O(1/sqrt(width)) bias that depends on where sqrt(width)/sigma_w falls
    ("uniform", qmf.QuantizedActivation(4), 1.1, 0.0, 0.5, 0.6),
])
def test_non_gaussian_weights_follow_the_same_maps(weights, activation, sigma_w, sigma_b, q0, c0):
    """Tolerance as for Gaussian weights (test_maps): 4 standard errors over nets plus 2/width."""
    width, depth, n_nets = 1024, 8, 16
    res = qmf.simulate_correlations(activation, sigma_w, sigma_b, depth=depth, width=width, c0=c0, q0=q0,
                                    n_nets=n_nets, seed=5, device="cpu", weights=weights)
    _assert_follows_the_maps(res, activation, sigma_w, sigma_b, depth, width, q0, c0)


def test_weights_change_the_draw_but_not_the_seeding():
    kw = dict(depth=3, width=64, c0=0.5, n_nets=2, seed=7, device="cpu")
    a = qmf.simulate_correlations("erf", 1.2, 0.0, weights="binary", **kw)
    b = qmf.simulate_correlations("erf", 1.2, 0.0, weights="binary", **kw)
    g = qmf.simulate_correlations("erf", 1.2, 0.0, **kw)
    assert np.array_equal(a.c, b.c) and not np.array_equal(a.c, g.c)


def test_post_activation_covariance_is_the_kernel():
    theta, h0 = qmf.circle_inputs(16, 2048, q0=0.6, seed=2)
    phi = qmf.QuantizedActivation(8)
    cov = qmf.simulate_covariance(phi, 1.0, 0.0, h0, layers=[0, 3], post_activation=True, device="cpu",
                                  dtype=torch.float64)
    # layer 0: phi of the given inputs, computed directly
    a = phi(h0)
    assert cov[0] == pytest.approx(a.T @ a / h0.shape[0], abs=1e-12)
    # layer 3: against K(q^3, c^3) of the iterated maps. One network's error is O(1/sqrt(width))
    # (its sd per entry, about 0.009 at width 2048, is what the test measures across networks).
    # Over R independent networks (weights and inputs) the mean error must be within 5 standard errors
    # sd / sqrt(R) of each entry, plus 1/width for the O(1/width) bias of a finite network.
    q_th, c_th = qmf.iterate_maps(phi, 1.0, 0.0, depth=3, q0=0.6, c0=np.cos(theta))
    k_th = phi.kernel(q_th[3], c_th[3])
    width, reps = 1024, 16
    errors = []
    for r in range(reps):
        _, h = qmf.circle_inputs(16, width, q0=0.6, seed=100 + r)
        c = qmf.simulate_covariance(phi, 1.0, 0.0, h, layers=[3], post_activation=True, seed=100 + r, device="cpu",
                                    dtype=torch.float64)
        errors.append(np.asarray(c[3][0]) - k_th)
    errors = np.array(errors)
    sem = errors.std(axis=0, ddof=1) / np.sqrt(reps)
    assert 0 < sem.max() < 0.01
    assert np.all(np.abs(errors.mean(axis=0)) <= 5 * sem + 1 / width)
    assert not cov[3][0] == pytest.approx(q_th[3] * c_th[3], abs=0.01)   # not the pre-activation covariance


@pytest.mark.parametrize("call", [
    lambda: qmf.simulate_correlations("tanh", 1.0, 0.0, depth=2, width=8, c0=0.2, weights="ternary"),
    lambda: qmf.simulate_covariance("tanh", 1.0, 0.0, np.ones((4, 2)), layers=[1], weights=None),
])
def test_unknown_weight_distribution_is_rejected(call):
    with pytest.raises(ValueError, match=r"\bweights\b"):
        call()


@pytest.mark.parametrize("device", [float("nan"), -1, "3", "", 0, "cuda:99"], ids=repr)
def test_default_device_refuses_what_is_no_available_device(device):
    """torch raised TypeError or RuntimeError ('Invalid device string', 'Cannot access accelerator device')."""
    import torch

    if device == 0 and torch.cuda.is_available():
        pytest.skip("device 0 exists here")
    with pytest.raises(ValueError, match=r"\bdevice must be"):
        qmf.default_device(device)
    assert qmf.default_device("cpu").type == "cpu"


SIM = dict(activation="tanh", sigma_w=1.2, sigma_b=0.1, depth=2, width=8, c0=0.3, n_nets=2, seed=0, device="cpu")


@pytest.mark.parametrize("kwargs,name", [
    (dict(seed=float("nan")), "seed"), (dict(seed=-1), "seed"), (dict(seed="3"), "seed"), (dict(seed=None), "seed"),
    (dict(dtype="float64"), "dtype"), (dict(dtype=float("nan")), "dtype"),
    (dict(q0=1e-300), "q0"), (dict(q0=1e308), "q0"),           # beyond float32: h^2 under- or overflows
    (dict(sigma_w=1e30), "sigma_w"),                          # q* = 1.4e60, beyond float32
    (dict(sigma_w=1e308), "sigma_w"), (dict(sigma_b="3"), "sigma_b"),
    (dict(depth=10**30), "depth"), (dict(progress=np.array([1.0, 2.0])), "progress"),
    (dict(activation="relu", sigma_w=1e10, q0=1.0, depth=5), "sigma_w"),   # overflows float32 by layer 4
])
def test_simulate_correlations_bad_input(kwargs, name):
    """Each of these raised TypeError/OverflowError, leaked a RuntimeWarning, or returned NaN/inf statistics."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=rf"\b{name}\b"):
            qmf.simulate_correlations(**(SIM | kwargs))


def test_simulate_correlations_float64_reaches_further():
    import torch

    res = qmf.simulate_correlations(**(SIM | dict(q0=1e-300, dtype=torch.float64)))
    assert np.all(np.isfinite(res.c)) and res.q[0] == pytest.approx(1e-300, rel=0.5)


@pytest.mark.parametrize("kwargs,name", [
    (dict(layers=float("nan")), "layers"), (dict(layers="3"), "layers"), (dict(layers=[]), "layers"),
    (dict(layers=[1.5]), "layers"), (dict(h0=np.zeros(8)), "h0"), (dict(h0="3"), "h0"),
    (dict(h0=np.full((8, 2), np.nan)), "h0"), (dict(h0=np.full((8, 2), 1e300)), "h0"),
    (dict(seed=2.5), "seed"), (dict(dtype="float32"), "dtype"),
])
def test_simulate_covariance_bad_input(kwargs, name):
    """layers = '3' was read as [3]; NaN raised 'cannot convert float NaN to integer'; a 1-d h0 failed in torch."""
    _, h0 = qmf.circle_inputs(4, 8)
    args = dict(activation="tanh", sigma_w=1.2, sigma_b=0.1, h0=h0, layers=[0, 2], device="cpu") | kwargs
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        qmf.simulate_covariance(**args)


def test_circle_inputs_bad_input():
    for kwargs, name in ((dict(seed=float("nan")), "seed"), (dict(n_points=2**21), "n_points"), (dict(q0="3"), "q0")):
        with pytest.raises(ValueError, match=rf"\b{name}\b"):
            qmf.circle_inputs(**(dict(n_points=4, width=8) | kwargs))
