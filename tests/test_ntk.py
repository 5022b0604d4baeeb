"""The empirical NTK: with the true derivative of a quantized network only the readout's term is left;
the empirical NTK from Gram matrices (qmf_lite.ntk)."""
from __future__ import annotations

import pytest
import torch

from qmf_lite.ntk import empirical_ntk
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
