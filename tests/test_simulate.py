"""Torch simulations of wide random networks against the infinite-width maps."""
from __future__ import annotations

import numpy as np
import pytest

import qmf_lite as qmf


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
    q_th, c_th = qmf.iterate_maps(activation, sigma_w, sigma_b, depth=depth, q0=q0, c0=c0)
    assert res.q.shape == res.c.shape == (depth + 1,)
    tol_c = 4 * res.c_sem + 2 / width
    tol_q = 4 * res.q_sem + 2 * q_th / width
    assert np.all(np.abs(res.c - c_th) < tol_c), (res.c, c_th, tol_c)
    assert np.all(np.abs(res.q - q_th) < tol_q), (res.q, q_th, tol_q)
    # and the tolerance is meaningful: the maps of a net with a 10% larger sigma_w are rejected
    q_off, c_off = qmf.iterate_maps(activation, 1.1 * sigma_w, sigma_b, depth=depth, q0=q0, c0=c0)
    assert np.any(np.abs(res.c - c_off) > tol_c) or np.any(np.abs(res.q - q_off) > tol_q)


def test_torch_simulation_is_seeded():
    a = qmf.simulate_correlations("erf", 1.2, 0.0, depth=3, width=64, c0=0.5, n_nets=2, seed=7, device="cpu")
    b = qmf.simulate_correlations("erf", 1.2, 0.0, depth=3, width=64, c0=0.5, n_nets=2, seed=7, device="cpu")
    c = qmf.simulate_correlations("erf", 1.2, 0.0, depth=3, width=64, c0=0.5, n_nets=2, seed=8, device="cpu")
    assert np.array_equal(a.c, b.c) and not np.array_equal(a.c, c.c)


def test_covariance_of_circle_inputs():
    theta, h0 = qmf.circle_inputs(12, 256, q0=0.7, seed=1)
    cov = qmf.simulate_covariance("sign", 1.0, 0.0, h0, layers=[0, 1], device="cpu", dtype=None)
    assert cov[0] == pytest.approx(0.7 * np.cos(theta[:, None] - theta[None, :]), abs=1e-5)
    assert np.diag(cov[1]) == pytest.approx(np.ones(12), abs=0.2)
