"""The empirical NTK from Gram matrices (qmf_lite.ntk)."""
from __future__ import annotations

import pytest
import torch

from qmf_lite.ntk import empirical_ntk
from qmf_lite.training import NetSpec, QuantizedMLPBatch


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
