r"""The empirical neural tangent kernel of a batch of quantized MLPs, with the STE.

For a scalar output :math:`f(x)` the NTK is
:math:`\Theta(x, x') = \sum_\theta \partial_\theta f(x)\,\partial_\theta f(x')`. In an MLP the gradient
with respect to a weight matrix is an outer product, :math:`\partial f/\partial W^{l} = a^{l-1}\otimes\delta^{l}`
(activations of the layer below, back-propagated error at layer ``l``), so

.. math:: \Theta(x, x') = \sum_l \bigl(\langle a^{l-1}(x), a^{l-1}(x')\rangle + [\text{bias}]\bigr)\,
          \langle\delta^l(x), \delta^l(x')\rangle + \langle a^L(x), a^L(x')\rangle + 1,

where the last two terms are the readout's. One forward and one backward pass over the whole
batch of inputs give every :math:`a^l` and :math:`\delta^l`, and the kernel follows from Gram matrices,
without ever forming per-example gradients. The backward pass uses the straight-through estimator.
"""
from __future__ import annotations

import torch

__all__ = ["empirical_ntk"]


def empirical_ntk(model, x, output=0):
    """The NTK of output ``output`` of every network in ``model`` on the inputs ``x``.

    Parameters
    ----------
    model : :class:`qmf_lite.training.QuantizedMLPBatch`
        In the ``"book"`` layout (no first-layer bias, an unquantized linear readout), which the
        formula above assumes.
    x : tensor, shape (n, features)
        Finite inputs with the model's ``n_in`` features, on any device and of any real dtype
        (moved to the model's device and converted to its dtype).
    output : int
        Which output (logit) is ``f``, in [0, n_out - 1].

    Returns
    -------
    tensor, shape (B, n, n)
    """
    from ._validate import check_tensor
    from .training import QuantizedMLPBatch

    if not isinstance(model, QuantizedMLPBatch):
        raise ValueError(f"model must be a QuantizedMLPBatch, got {type(model).__name__}")
    if model.layout != "book":
        raise ValueError(f"model must use layout='book' (the readout term above assumes it), got {model.layout!r}")
    check_tensor(x, "x", ndim=2)
    n_in = model.w_in.shape[1]
    if x.shape[1] != n_in or x.shape[0] < 1:
        raise ValueError(f"x must have shape (n, {n_in}) with n >= 1 (the model's n_in features), got "
                         f"{tuple(x.shape)}")
    output = model._check_output(output)
    x = x.to(device=model.w_out.device, dtype=model.w_out.dtype)
    hs, grads = model.preactivation_grads(x, output)
    with torch.no_grad():
        acts = [model.phi(h) for h in hs]
        gram = lambda a: torch.bmm(a, a.transpose(1, 2))  # noqa: E731
        xb = x.unsqueeze(0).expand(len(model.specs), -1, -1)
        theta = gram(xb) * gram(grads[0])                         # first layer: no bias
        for l in range(1, len(hs)):
            theta += (gram(acts[l - 1]) + 1.0) * gram(grads[l])    # weights and biases of layer l
        theta += gram(acts[-1]) + 1.0                              # readout weights and bias
    return theta
