r"""Activation functions, each paired with its Gaussian kernel.

Every activation knows four Gaussian expectations, with :math:`u = \sqrt q z` and
:math:`(u_1,u_2)` of variance ``q`` and correlation ``c``:

* :meth:`~qmf_lite.Activation.mean` :math:`\mathbb E[\phi(u)]`,
* :meth:`~qmf_lite.Activation.second_moment` :math:`\mathbb E[\phi(u)^2]`,
* :meth:`~qmf_lite.Activation.kernel` :math:`\mathbb E[\phi(u_1)\phi(u_2)]`,
* :meth:`~qmf_lite.Activation.derivative_kernel` :math:`\mathbb E[\phi'(u_1)\phi'(u_2)]`.

The base class computes them by Gaussian quadrature; subclasses override them with
closed forms where one exists (linear, ReLU, erf, and every step function, the quantized
activations among them). Activations are called on numpy arrays or torch tensors.
:func:`~qmf_lite.monte_carlo_kernel` checks any of these kernels by sampling.
"""
from __future__ import annotations

import functools

import numpy as np
from scipy import special

from . import gaussian
from ._common import is_torch
from ._validate import (_as_float_array, check_bool, check_correlation, check_int, check_levels, check_nonnegative,
                        check_positive, check_seed)

__all__ = [
    "Activation",
    "StepActivation",
    "QuantizedActivation",
    "Linear",
    "ReLU",
    "Erf",
    "Tanh",
    "HardTanh",
    "CallableActivation",
    "QuadratureWarning",
    "get_activation",
    "monte_carlo_kernel",
]


#: the largest |output value| of a step activation, and the range of QuantizedActivation's scale and
#: spacing: squares and the variance stay far inside float64
VALUE_MAX = 1e100
#: the most levels a QuantizedActivation stores (two float64 arrays of that length: 32 MiB each)
MAX_STORED_LEVELS = 2**22


class Activation:
    """Base class: a scalar nonlinearity with its Gaussian expectations.

    The extension contract
    ----------------------
    A subclass **must** implement, on float64 numpy arrays of any shape (elementwise, same shape out):

    * ``_numpy(x)``: the function;
    * ``_numpy_derivative(x)``: its derivative (zeros for a step function; the Dirac masses are
      accounted for in closed form by :class:`StepActivation`);
    * ``_torch(x)``: the function on a torch tensor, same dtype and device out, differentiable
      where the function is (import torch inside, so that the core stays torch-free).

    It **may** override, with closed forms, the four Gaussian expectations, with
    :math:`u = \\sqrt q z` and :math:`(u_1, u_2)` of variance ``q`` and correlation ``c``:

    * ``mean(q)`` :math:`\\mathbb E[\\phi(u)]` and ``second_moment(q)`` :math:`\\mathbb E[\\phi(u)^2]`:
      ``q`` an array (``q > 0``), result of its shape;
    * ``kernel(q, c)`` :math:`\\mathbb E[\\phi(u_1)\\phi(u_2)]` and ``derivative_kernel(q, c)``
      :math:`\\mathbb E[\\phi'(u_1)\\phi'(u_2)]`: ``q`` and ``c`` broadcast (``c`` in [-1, 1]), result of
      the broadcast shape;

    and should set the class attributes ``name`` (a short string), ``odd`` (``True`` when
    :math:`\\phi(-x) = -\\phi(x)`, which makes ``c* = 0`` at ``sigma_b = 0``) and, for a bounded
    function, ``bound`` (:math:`\\sup|\\phi|`, which bounds the fixed point
    :math:`q^* \\le \\sigma_w^2\\,\\mathrm{bound}^2 + \\sigma_b^2`; default ``inf``, unbounded or
    unknown). A closed form must be accurate to about 1e-12 (tests compare with quadrature or
    exact arithmetic). Without overrides the base class uses Gauss-Legendre quadrature against the normal density
    (:func:`qmf_lite.expect`, :func:`~qmf_lite.expect_pair`): about 1e-10 for smooth
    functions, but only ~1e-4 for functions with kinks or jumps, which therefore deserve a
    closed form (as :class:`ReLU`, :class:`HardTanh` and every :class:`StepActivation` have).
    :class:`CallableActivation` wraps a plain function this way and warns, once, that the
    accuracy of quadrature depends on its smoothness.
    """

    name = "activation"
    #: quadrature nodes: 1-d rule, and per dimension for the pair rule
    quadrature_nodes = (400, 240)

    def __call__(self, x):
        """phi(x) on real numbers (a number or numpy array: float64 out) or a torch tensor (same device
        out, and the same dtype for a floating-point one). NaN gives NaN."""
        if is_torch(x):
            return self._torch(x)
        values = np.asarray(x)
        if values.dtype.kind not in "biuf":
            raise ValueError(f"x must be real numbers (a number, a numpy array or a torch tensor), got "
                             f"{type(x).__name__} of dtype {values.dtype}")
        return self._numpy(values.astype(np.float64, copy=False))

    def derivative(self, x):
        """phi'(x) on numpy arrays."""
        return self._numpy_derivative(np.asarray(x, dtype=np.float64))

    # --- Gaussian expectations (quadrature defaults) ---------------------------------------
    def mean(self, q):
        r""":math:`\mathbb E[\phi(\sqrt q z)]`, ``q > 0`` (array; result of its shape)."""
        return gaussian._expect(self._numpy, check_nonnegative(q, "q"), self.quadrature_nodes[0])

    def second_moment(self, q):
        r""":math:`\mathbb E[\phi(\sqrt q z)^2]`, ``q > 0`` (array; result of its shape)."""
        return gaussian._expect(lambda x: self._numpy(x) ** 2, check_nonnegative(q, "q"), self.quadrature_nodes[0])

    def kernel(self, q, c):
        r""":math:`\mathbb E[\phi(u_1)\phi(u_2)]` for :math:`(u_1, u_2)` of variance ``q`` and correlation ``c`` (broadcast)."""
        q, c = check_nonnegative(q, "q"), check_correlation(c, "c")
        return gaussian._expect_pair(self._numpy, self._numpy, q, c, self.quadrature_nodes[1], 32)

    def derivative_kernel(self, q, c):
        r""":math:`\mathbb E[\phi'(u_1)\phi'(u_2)]`, the slope of the kernel in ``c`` divided by ``q`` (Price's theorem)."""
        d = self._numpy_derivative
        q, c = np.broadcast_arrays(check_nonnegative(q, "q"), check_correlation(c, "c"))
        if np.all(np.abs(c) == 1):  # u2 = +-u1: a one-dimensional integral (chi(1) in phase diagrams)
            return np.where(c > 0, gaussian._expect(lambda x: d(x) ** 2, q, self.quadrature_nodes[0]),
                            gaussian._expect(lambda x: d(x) * d(-x), q, self.quadrature_nodes[0]))
        return gaussian._expect_pair(d, d, q, c, self.quadrature_nodes[1], 32)

    #: whether phi is odd, so that with sigma_b = 0 the correlation map is odd and c* = 0
    odd = False
    #: ``sup |phi(x)|`` (inf: unbounded or unknown); it bounds the search for q*
    bound = float("inf")

    def __repr__(self):
        return f"{type(self).__name__}()"


class Linear(Activation):
    r"""phi(x) = x. Closed forms: E[phi^2] = q, K = q c, E[phi' phi'] = 1."""

    name, odd = "linear", True

    def _numpy(self, x):
        return x

    def _torch(self, x):
        return x

    def _numpy_derivative(self, x):
        return np.ones_like(x)

    def mean(self, q):
        return np.zeros_like(np.asarray(q, np.float64))

    def second_moment(self, q):
        return np.asarray(q, np.float64) * 1.0

    def kernel(self, q, c):
        return np.asarray(q, np.float64) * np.asarray(c, np.float64)

    def derivative_kernel(self, q, c):
        return np.ones(np.broadcast(np.asarray(q), np.asarray(c)).shape)


class ReLU(Activation):
    r"""phi(x) = max(x, 0), with the arc-cosine kernel of degree 1 (Cho & Saul 2009).

    .. math:: K = \frac{q}{2\pi}\bigl(\sqrt{1-c^2} + (\pi - \arccos c)\,c\bigr),\qquad
              \mathbb E[\phi'\phi'] = \frac{\pi - \arccos c}{2\pi}.
    """

    name = "relu"

    def _numpy(self, x):
        return np.maximum(x, 0.0)

    def _torch(self, x):
        return x.clamp_min(0)

    def _numpy_derivative(self, x):
        return (x > 0).astype(np.float64)

    def mean(self, q):
        return np.sqrt(np.asarray(q, np.float64) / (2.0 * np.pi))

    def second_moment(self, q):
        return 0.5 * np.asarray(q, np.float64)

    def kernel(self, q, c):
        q, c = np.asarray(q, np.float64), np.asarray(c, np.float64)
        return q / (2 * np.pi) * (np.sqrt(np.clip(1 - c * c, 0, None)) + (np.pi - np.arccos(c)) * c)

    def derivative_kernel(self, q, c):
        q, c = np.broadcast_arrays(np.asarray(q, np.float64), np.asarray(c, np.float64))
        return (np.pi - np.arccos(c)) / (2 * np.pi)


class Erf(Activation):
    r"""phi(x) = erf(x), with Williams' (1997) arcsine kernel.

    .. math:: K = \frac{2}{\pi}\arcsin\frac{2qc}{1+2q},\qquad
              \mathbb E[\phi'\phi'] = \frac{4}{\pi}\,\bigl((1+2q)^2 - 4q^2c^2\bigr)^{-1/2}.
    """

    name, odd, bound = "erf", True, 1.0

    def _numpy(self, x):
        return special.erf(x)

    def _torch(self, x):
        import torch

        return torch.erf(x)

    def _numpy_derivative(self, x):
        return 2.0 / np.sqrt(np.pi) * np.exp(-x * x)

    def mean(self, q):
        return np.zeros_like(np.asarray(q, np.float64))

    def second_moment(self, q):
        q = np.asarray(q, np.float64)
        return 2.0 / np.pi * np.arcsin(2 * q / (1 + 2 * q))

    def kernel(self, q, c):
        q, c = np.asarray(q, np.float64), np.asarray(c, np.float64)
        return 2.0 / np.pi * np.arcsin(2 * q * c / (1 + 2 * q))

    def derivative_kernel(self, q, c):
        q, c = np.asarray(q, np.float64), np.asarray(c, np.float64)
        return 4.0 / np.pi / np.sqrt((1 + 2 * q) ** 2 - 4 * q * q * c * c)


class Tanh(Activation):
    r"""phi(x) = tanh(x), by Gaussian quadrature.

    Below ``q = U_RULE_Q`` (16; ``U_RULE_Q_PAIR`` = 5 for the kernels of a pair) the expectations use the
    standard-normal rules of the base class (about 1e-12 for ``q <= 4``). Above it those rules, whose nodes
    are spaced in :math:`z = u/\sqrt q`,
    would step over the unit width of :math:`\operatorname{sech}^2 u` (its error grows like
    :math:`(1 + \pi/(2 Z_{\max}\sqrt q))^{-2n}`: 0.3% at ``q = 100``, a factor 3 at ``1e3``), so they are
    taken in ``u`` itself: Gauss-Legendre on :math:`|u|\le 20` against the density of ``u``, where
    :math:`\tanh` and :math:`\operatorname{sech}` vary, and beyond it :math:`\tanh = \pm 1`,
    :math:`\operatorname{sech} = 0` to float64 (:math:`\operatorname{sech}^2 40 < 10^{-34}`). A pair
    :math:`(u_1, u_2)` is integrated as :math:`u_1` and then :math:`u_2` given :math:`u_1`, of mean
    :math:`c u_1` and variance :math:`q(1-c^2)`, each by the rule that suits its variance. About 1e-13
    relative at any ``q`` (tests compare with adaptive quadrature).
    """

    name, odd, bound = "tanh", True, 1.0
    #: from this variance on, the expectations of one variable are taken in u = sqrt(q) z (class docstring)
    U_RULE_Q = 16.0
    #: and those of a pair (the base class's pair rule, with fewer nodes per dimension, errs by 1e-11 at q = 6)
    U_RULE_Q_PAIR = 5.0
    #: the half-width of the core of the u-rule: beyond it tanh = +-1 and sech^2 < 1e-16 (4 e^{-40})
    U_CORE = 20.0
    #: Gauss-Legendre nodes of the core: its error falls like (1 + pi / (2 U_CORE))^(-2n), e^{-30} here
    U_NODES = 200

    def _numpy(self, x):
        return np.tanh(x)

    def _torch(self, x):
        return x.tanh()

    def _numpy_derivative(self, x):
        with np.errstate(over="ignore"):      # cosh overflows past |x| = 710, where sech^2 is 0
            return 1.0 / np.cosh(x) ** 2

    # --- expectations: the base class's rule below U_RULE_Q, the u-rule above --------------------
    @staticmethod
    @functools.lru_cache(maxsize=1)
    def _core_rule():
        """The U_NODES-point Gauss-Legendre rule on [-U_CORE, U_CORE]."""
        x, w = gaussian.legendre_rule(Tanh.U_NODES)
        return Tanh.U_CORE * x, Tanh.U_CORE * w

    def _split(self, q, small, large):
        """``small(q)`` where ``q < U_RULE_Q`` and ``large(q)`` elsewhere (each called on its part only)."""
        q = np.asarray(q, np.float64)
        big = q >= self.U_RULE_Q
        if not big.any():
            return small(q)
        out = np.empty(q.shape)
        if (~big).any():
            out[~big] = small(q[~big])
        out[big] = large(q[big])
        return out[()] if out.ndim == 0 else out

    def _u_expect(self, f, q, f_at_inf):
        """E[f(u)] for u ~ N(0, q), q >= U_RULE_Q (array), f even with f = f_at_inf beyond U_CORE."""
        u, w = self._core_rule()
        sd = np.sqrt(q)[..., None]
        dens = np.exp(-0.5 * (u / sd) ** 2) / (np.sqrt(2 * np.pi) * sd)
        return np.sum(f(u) * w * dens, axis=-1) + f_at_inf * special.erfc(self.U_CORE / np.sqrt(2 * q))

    def second_moment(self, q):
        q = check_nonnegative(q, "q")
        return self._split(q, lambda qs: gaussian._expect(lambda x: np.tanh(x) ** 2, qs, self.quadrature_nodes[0]),
                           lambda qb: 1.0 - self._u_expect(lambda u: 1.0 / np.cosh(u) ** 2, qb, 0.0))

    def mean(self, q):
        return np.zeros_like(check_nonnegative(q, "q"))[()]

    def _given_u1(self, f, u1, c, v, tails):
        """E[f(c u1 + sqrt(v) z)], z ~ N(0, 1), of shape (len(c), len(u1)), for 1-d ``u1``, and ``c``, ``v`` of
        one length; ``tails``: f(-inf), f(+inf)."""
        mean = c[:, None] * u1[None, :]
        out = np.empty(mean.shape)
        point, z_rule = v == 0, (v > 0) & (v < self.U_RULE_Q_PAIR)
        u_rule = ~(point | z_rule)
        out[point] = f(mean[point])
        if z_rule.any():      # the pair rule's nodes in z, as the base class's pair rule
            z, w = gaussian._normal_rule(self.quadrature_nodes[1])
            out[z_rule] = np.sum(f(mean[z_rule][..., None] + np.sqrt(v[z_rule])[:, None, None] * z) * w, axis=-1)
        if u_rule.any():
            u, w = self._core_rule()
            m, sd = mean[u_rule], np.sqrt(v[u_rule])[:, None]
            dens = np.exp(-0.5 * ((u - m[..., None]) / sd[..., None]) ** 2) / (np.sqrt(2 * np.pi) * sd[..., None])
            out[u_rule] = (np.sum(f(u) * w * dens, axis=-1) + tails[0] * special.ndtr((-self.U_CORE - m) / sd)
                           + tails[1] * special.ndtr((m - self.U_CORE) / sd))
        return out

    def _pair_large(self, f, tails, q, c):
        """E[f(u1) f(u2)] at one q >= U_RULE_Q_PAIR, for the correlations ``c`` (1-d): u1 on the core rule,
        plus, when f does not vanish at infinity, its tails |u1| > U_CORE (where f(u1) = f(+-inf)) on a rule
        in z = u1 / sqrt(q)."""
        v = q * (1.0 - c * c)
        u, w = self._core_rule()
        sd = np.sqrt(q)
        dens = np.exp(-0.5 * (u / sd) ** 2) / (np.sqrt(2 * np.pi) * sd)
        total = np.sum(f(u) * self._given_u1(f, u, c, v, tails) * (w * dens), axis=-1)
        if tails[1] != 0:   # tanh: f(u1) = +-1 beyond U_CORE; both tails are equal (f odd)
            t0 = self.U_CORE / sd
            if t0 < gaussian.Z_MAX:     # a smooth integrand: 100 nodes on [t0, Z_MAX]
                x, wx = gaussian.legendre_rule(100)
                t = t0 + (gaussian.Z_MAX - t0) * (x + 1) / 2
                wt = (gaussian.Z_MAX - t0) / 2 * wx * np.exp(-0.5 * t * t) / np.sqrt(2 * np.pi)
                total += 2 * tails[1] * np.sum(self._given_u1(f, sd * t, c, v, tails) * wt, axis=-1)
        return total

    def _pair(self, f, tails, q, c, base):
        q, c = np.broadcast_arrays(np.asarray(q, np.float64), np.asarray(c, np.float64))
        big = q >= self.U_RULE_Q_PAIR
        if not big.any():
            return base(q, c)
        out = np.empty(q.shape)
        if (~big).any():
            out[~big] = base(q[~big], c[~big])
        qb, cb, ob = q[big], c[big], np.empty(int(big.sum()))
        for qv in np.unique(qb):            # every correlation of one variance at once
            at = qb == qv
            for start in range(0, int(at.sum()), 64):
                idx = np.flatnonzero(at)[start:start + 64]
                ob[idx] = self._pair_large(f, tails, float(qv), cb[idx])
        out[big] = ob
        return out[()] if out.ndim == 0 else out

    def kernel(self, q, c):
        q, c = check_nonnegative(q, "q"), check_correlation(c, "c")
        return self._pair(np.tanh, (-1.0, 1.0), q, c, super().kernel)

    def derivative_kernel(self, q, c):
        q, c = check_nonnegative(q, "q"), check_correlation(c, "c")
        return self._pair(self._numpy_derivative, (0.0, 0.0), q, c, super().derivative_kernel)


class HardTanh(Activation):
    r"""phi(x) = clip(x, -1, 1), the N -> infinity limit of the quantized activations.

    Its kernels follow from Price's theorem. With :math:`a = 1/\sqrt q`, the derivative kernel
    is the probability that both pre-activations lie in the linear region,

    .. math:: \mathbb E[\phi'(u_1)\phi'(u_2)] = P(|u_1|<1, |u_2|<1)
              = \operatorname{erf}\bigl(\tfrac{a}{\sqrt2}\bigr)^2 + \frac1\pi\int_0^{\arcsin c}
                \Bigl(e^{-a^2/(1+\sin t)} - e^{-a^2/(1-\sin t)}\Bigr)\,dt,

    (the bivariate normal density at the four corners :math:`(\pm a, \pm a)`, integrated over the
    correlation with :math:`\rho = \sin t`), and integrating once more in ``c`` from
    :math:`K(0) = 0`,

    .. math:: K(c) = q\Bigl(c\,\operatorname{erf}\bigl(\tfrac{a}{\sqrt2}\bigr)^2 + \frac1\pi
              \int_0^{\arcsin c} (c - \sin t)\Bigl(e^{-a^2/(1+\sin t)} - e^{-a^2/(1-\sin t)}\Bigr)dt\Bigr).

    The integrands are smooth in ``t``; they are integrated by Gauss-Legendre panels graded
    towards :math:`t = \pm\pi/2`, where they vary on the scale ``a``, and the difference of
    exponentials is formed with ``expm1``. Accurate to about 1e-15 for ``q <= 100`` and 1e-13
    relative up to ``q = 1e10`` (tests compare with a one-dimensional quadrature of the exact
    conditional mean). :math:`\mathbb E[\phi^2] = q\,P(\chi^2_3 < a^2) + P(\chi^2_1 > a^2)`.
    """

    name, odd, bound = "hardtanh", True, 1.0
    #: Gauss-Legendre nodes per panel of the correlation integral
    panel_nodes = 24

    def _numpy(self, x):
        return np.clip(x, -1.0, 1.0)

    def _torch(self, x):
        return x.clamp(-1, 1)

    def _numpy_derivative(self, x):
        return (np.abs(x) < 1).astype(np.float64)

    def mean(self, q):
        return np.zeros_like(np.asarray(q, np.float64))

    def second_moment(self, q):
        # E[min(u^2, 1)] = q E[z^2; |z| < a] + P(|z| > a), both regularised incomplete gammas (no cancellation)
        q = np.asarray(q, np.float64)
        half_a2 = 0.5 / q
        return q * special.gammainc(1.5, half_a2) + special.gammaincc(0.5, half_a2)

    def _correlation_integrals(self, q, c):
        """(P(|u1|<1, |u2|<1), K) at one variance ``q`` for an array of ``c``."""
        a2 = 1.0 / q
        a = np.sqrt(a2)
        p0 = special.erf(np.sqrt(0.5 * a2)) ** 2
        x, w = gaussian.legendre_rule(self.panel_nodes)
        # panels on [0, pi/2] with breakpoints graded towards pi/2 on the scale a
        k_max = max(-3, int(np.ceil(np.log2(0.5 * np.pi / a))))
        breaks = np.concatenate([[0.0], np.sort(0.5 * np.pi - a * 2.0 ** np.arange(-4, k_max + 1))])
        breaks = breaks[breaks >= 0.0]
        prob, kern = np.empty(c.shape), np.empty(c.shape)
        for idx, cv in np.ndenumerate(c):
            theta = float(np.arcsin(cv))
            top = abs(theta)
            b = np.append(breaks[breaks < top], top)
            lo, hi = b[:-1, None], b[1:, None]
            t = (0.5 * (hi - lo) * (x + 1.0) + lo).ravel()
            wt = (0.5 * (hi - lo) * w).ravel()
            s = np.sin(t)                  # s >= 0; the integrand h is odd in s
            with np.errstate(divide="ignore"):
                h = -np.exp(-a2 / (1.0 + s)) * np.expm1(-2.0 * a2 * s / ((1.0 - s) * (1.0 + s))) / np.pi
            sign = np.sign(theta)
            prob[idx] = p0 + np.sum(wt * h)     # even in c
            kern[idx] = q * (cv * p0 + sign * np.sum(wt * (abs(cv) - s) * h))
        return prob, kern

    def derivative_kernel(self, q, c):
        return _per_q(q, c, lambda qv, cc: self._correlation_integrals(qv, np.asarray(cc, np.float64))[0])

    def kernel(self, q, c):
        return _per_q(q, c, lambda qv, cc: self._correlation_integrals(qv, np.asarray(cc, np.float64))[1])


class QuadratureWarning(UserWarning):
    """Gaussian expectations of an activation are computed by generic quadrature."""


class CallableActivation(Activation):
    """Any scalar function ``f`` (numpy-vectorised), with Gaussian expectations by quadrature.

    The derivative, needed for chi, is ``derivative`` if given, else a central difference
    with step ``1e-5`` (error ~1e-10 for smooth ``f``). Quadrature is accurate to about 1e-10
    for smooth functions but only ~1e-4 where ``f`` has kinks or jumps: a
    :class:`QuadratureWarning` says so the first time an expectation is computed, unless
    ``smooth=True`` declares ``f`` analytic near the real axis.
    """

    def __init__(self, f, derivative=None, name=None, smooth=False):
        if not callable(f):
            raise ValueError(f"f must be callable (the activation function), got {f!r}")
        if derivative is not None and not callable(derivative):
            raise ValueError(f"derivative must be callable or None, got {derivative!r}")
        if name is not None and not isinstance(name, str):
            raise ValueError(f"name must be a string or None, got {name!r}")
        self._f = f
        self._df = derivative
        self.name = name or getattr(f, "__name__", "callable")
        self.smooth = check_bool(smooth, "smooth")
        self._warned = self.smooth

    def _warn_once(self):
        if not self._warned:
            import warnings

            self._warned = True
            warnings.warn(f"activation {self.name!r}: Gaussian expectations by generic quadrature, accurate to "
                          "~1e-10 for a smooth function but only ~1e-4 with kinks or jumps (give it a closed "
                          "form by subclassing Activation, or pass smooth=True to CallableActivation)",
                          QuadratureWarning, stacklevel=4)

    def mean(self, q):
        self._warn_once()
        return super().mean(q)

    def second_moment(self, q):
        self._warn_once()
        return super().second_moment(q)

    def kernel(self, q, c):
        self._warn_once()
        return super().kernel(q, c)

    def derivative_kernel(self, q, c):
        self._warn_once()
        return super().derivative_kernel(q, c)

    def _numpy(self, x):
        return np.asarray(self._f(x), dtype=np.float64)

    def _torch(self, x):
        return self._f(x)

    def _numpy_derivative(self, x):
        if self._df is not None:
            return np.asarray(self._df(x), dtype=np.float64)
        h = 1e-5
        return (self._numpy(x + h) - self._numpy(x - h)) / (2 * h)

    def __repr__(self):
        return f"CallableActivation({self.name})"


def _per_q(q, c, fn):
    """Evaluate ``fn(q_scalar, c_array)`` for each distinct ``q``; fast path for a scalar ``q``."""
    q, c = np.asarray(q, np.float64), np.asarray(c, np.float64)
    if q.ndim == 0:
        return np.asarray(fn(float(q), c), dtype=np.float64)
    q, c = np.broadcast_arrays(q, c)
    out = np.empty(q.shape)
    for qv in np.unique(q):
        sel = q == qv
        out[sel] = fn(float(qv), c[sel])
    return out


class StepActivation(Activation):
    r"""A step function :math:`\phi(x) = v_0 + \sum_i \Delta_i H(x - g_i)`.

    Parameters
    ----------
    thresholds : array_like, shape (M,)
        Strictly increasing thresholds :math:`g_i`.
    values : array_like, shape (M + 1,)
        The output level on each of the ``M + 1`` cells; :math:`\Delta_i = v_{i+1} - v_i`.

    Notes
    -----
    ``phi(x) = values[k]`` where ``k`` is the number of thresholds ``<= x``. All four Gaussian
    expectations are finite sums over thresholds (see :mod:`qmf_lite.gaussian`); the
    derivative kernel is infinite at ``c = 1`` (the Dirac masses of :math:`\phi'` coincide).
    """

    name = "step"

    def __init__(self, thresholds, values):
        g = np.atleast_1d(_as_float_array(thresholds, "thresholds"))
        v = np.atleast_1d(_as_float_array(values, "values"))
        if g.ndim != 1 or g.size < 1 or not np.all(np.isfinite(g)):
            raise ValueError("thresholds must be a non-empty 1-d array of finite numbers")
        if np.any(np.diff(g) <= 0):
            raise ValueError("thresholds must be strictly increasing")
        if v.shape != (g.size + 1,) or not np.all(np.isfinite(v)):
            raise ValueError(f"values must be finite with one more entry than thresholds ({g.size + 1})")
        if np.abs(v).max() > VALUE_MAX:
            raise ValueError(f"values must lie in [-{VALUE_MAX:g}, {VALUE_MAX:g}] (their squares enter the "
                             f"variance), got {values!r}")
        self._set(g, v)

    def _set(self, g, v):
        self.thresholds = g
        self.values = v
        self.jumps = np.diff(v)
        self.bound = float(np.abs(v).max())
        self.odd = bool(np.allclose(g, -g[::-1], rtol=0, atol=1e-14 * (1 + np.abs(g).max()))
                        and np.allclose(v, -v[::-1], rtol=0, atol=1e-14 * (1 + np.abs(v).max())))
        self._integrals = {}
        self._torch_cache = {}

    # --- the function ------------------------------------------------------------------------
    def _numpy(self, x):
        out = self.values[np.searchsorted(self.thresholds, x, side="right")]
        nan = np.isnan(x)
        return np.where(nan, np.nan, out)[()] if nan.any() else out     # NaN in, NaN out (not the top level)

    def _torch(self, x):
        import torch

        if not x.is_floating_point():    # an integer tensor: the levels are fractions, so float out
            x = x.to(torch.get_default_dtype())
        key = (x.device, x.dtype)
        if key not in self._torch_cache:
            self._torch_cache[key] = (
                torch.as_tensor(self.thresholds, dtype=x.dtype, device=x.device),
                torch.as_tensor(self.values, dtype=x.dtype, device=x.device),
            )
        g, v = self._torch_cache[key]
        # right=True counts the thresholds <= x, like searchsorted(side="right"); NaN in, NaN out
        return torch.where(torch.isnan(x), x, v[torch.bucketize(x, g, right=True)])

    def _numpy_derivative(self, x):
        return np.zeros_like(x)

    # --- closed-form expectations ------------------------------------------------------------
    def _normalised(self, q):
        root = np.sqrt(np.asarray(q, np.float64))[..., None]
        with np.errstate(divide="ignore", invalid="ignore"):
            a = self.thresholds / root
        # q = 0: u = 0 exactly, which the staircase counts as at or above every threshold <= 0
        return np.where(root == 0, np.where(self.thresholds > 0, np.inf, -np.inf), a)

    def mean(self, q):
        if self.odd:     # 0, but at q = 0, where u = 0 sits on the level that the lookup gives phi(0)
            q = np.asarray(q, np.float64)
            return np.where(q == 0, float(self._numpy(np.float64(0.0))), 0.0)[()]
        return gaussian.step_mean(self._normalised(q), self.jumps, self.values[0])

    def second_moment(self, q):
        return gaussian.step_second_moment(self._normalised(q), self.values)

    def density_sum(self, q, rho):
        """S(rho) = sum_ij D_i D_j exp(-(a_i^2 + a_j^2 - 2 rho a_i a_j) / (2 (1 - rho^2))) at ``q``."""
        a = self.thresholds / np.sqrt(float(q))
        return gaussian.step_density_sum(a, self.jumps, rho)

    def derivative_kernel(self, q, c):
        r"""E[phi'(u1) phi'(u2)] = sum_ij D_i D_j p_c(a_i, a_j) / q.

        At ``c = 1`` the Dirac masses of :math:`\phi'(u_1)` and :math:`\phi'(u_2)` coincide and the
        value is ``inf``. At ``c = -1`` (``u2 = -u1``) they coincide only where two thresholds are
        mirror images, :math:`g_j = -g_i` (every symmetric activation): ``inf`` then, else 0.
        """
        mirrored = bool(np.any(np.isclose(self.thresholds[:, None], -self.thresholds[None, :], rtol=0,
                                          atol=1e-12 * (1.0 + np.abs(self.thresholds).max()))))

        def at(qv, cc):
            with np.errstate(divide="ignore", invalid="ignore"):
                pref = 1.0 / (2 * np.pi * np.sqrt(1.0 - cc * cc) * qv)
                inside = pref * self.density_sum(qv, cc)
            at_minus_one = np.inf if mirrored else 0.0
            return np.where(np.abs(cc) < 1, inside, np.where(cc > 0, np.inf, at_minus_one))

        return _per_q(q, c, at)

    def _layer(self, q):
        """The finest scale on which S(sin t) varies near t = +-pi/2: the closest distinct pair among
        the normalised thresholds and their mirror images, or 1 / max|a| (see ``ArcsineIntegral``)."""
        a = self.thresholds / np.sqrt(q)
        gaps = np.diff(np.sort(np.concatenate([a, -a])))
        gaps = gaps[gaps > 0]
        widest = np.abs(a).max()
        return float(min(gaps.min() if gaps.size else np.inf, 1.0 / widest if widest > 0 else np.inf))

    def arcsine_integral(self, q):
        """The cached ``ArcsineIntegral`` (:mod:`qmf_lite.gaussian`) of this activation at ``q``."""
        key = float(q)
        if key not in self._integrals:
            if len(self._integrals) > 64:
                self._integrals.clear()
            self._integrals[key] = gaussian.ArcsineIntegral(lambda rho: self.density_sum(key, rho),
                                                            layer=self._layer(key))
        return self._integrals[key]

    def kernel(self, q, c):
        r"""E[phi(u1) phi(u2)] = E[phi^2] - (1/2pi) int_{arcsin c}^{pi/2} S(sin t) dt."""
        def at(qv, cc):
            if qv == 0:                      # u1 = u2 = 0: phi(0)^2 at every correlation
                return np.full(np.shape(cc), float(self._numpy(np.float64(0.0))) ** 2)
            return self.second_moment(qv) - self.arcsine_integral(qv)(np.arcsin(cc)) / (2 * np.pi)

        return _per_q(q, c, at)

    def __repr__(self):
        return f"StepActivation(thresholds={self.thresholds!r}, values={self.values!r})"


class QuantizedActivation(StepActivation):
    r"""The N-level uniform quantized activation.

    .. math:: \phi_N(x) = A\Bigl(-1 + \frac{2}{N-1}\sum_{k=0}^{N-2} H(x - g_k)\Bigr),\qquad
              g_k = D\,\bigl(k - \tfrac{N-2}{2}\bigr).

    Parameters
    ----------
    levels : int
        Number of output levels, ``2 <= N <= 2**22`` (the thresholds and levels are stored).
    spacing : float, optional
        Threshold spacing ``D`` in [1e-100, 1e100]. The default ``2 A / (N - 1)`` puts each
        threshold midway between two output levels, so that phi_N rounds hardtanh to the nearest level.
    scale : float
        Output range ``A`` in [1e-100, 1e100]: the levels are ``A (-1 + 2k/(N-1))``.

    Examples
    --------
    >>> phi = QuantizedActivation(4)
    >>> phi.values
    array([-1.        , -0.33333333,  0.33333333,  1.        ])
    >>> phi([-0.5, 0.1, 2.0])
    array([-0.33333333,  0.33333333,  1.        ])
    """

    def __init__(self, levels, spacing=None, scale=1.0):
        self._build(*_check_quantized(levels, spacing, scale))

    @classmethod
    def _checked(cls, levels, spacing, scale):
        """The activation of arguments already checked by :func:`_check_quantized` (no checks again)."""
        act = cls.__new__(cls)
        act._build(levels, spacing, scale)
        return act

    def _build(self, levels, spacing, scale):
        self.levels, self.spacing, self.scale = levels, spacing, scale
        k = np.arange(levels - 1, dtype=np.float64)
        thresholds = spacing * (k - (levels - 2) / 2.0)
        values = scale * (-1.0 + 2.0 * np.arange(levels) / (levels - 1))
        self._set(thresholds, values)
        self.odd = True
        self.name = f"quantized(N={levels})"

    @property
    def step(self):
        """The jump between adjacent levels, ``2 A / (N - 1)``."""
        return 2.0 * self.scale / (self.levels - 1)

    def density_sum(self, q, rho):
        # uniform thresholds: the O(N) factorised sum
        d = self.spacing / np.sqrt(float(q))
        return self.step ** 2 * gaussian.uniform_density_sum(d, self.levels - 1, rho)

    def __eq__(self, other):
        return isinstance(other, QuantizedActivation) and (
            (self.levels, self.spacing, self.scale) == (other.levels, other.spacing, other.scale))

    def __hash__(self):
        return hash((self.levels, self.spacing, self.scale))

    def __repr__(self):
        return f"QuantizedActivation(levels={self.levels}, spacing={self.spacing!r}, scale={self.scale!r})"


def _check_quantized(levels, spacing, scale):
    """``(levels, spacing, scale)`` of a :class:`QuantizedActivation` checked, the default spacing filled in."""
    levels = check_levels(levels, maximum=MAX_STORED_LEVELS)
    scale = _check_scale(scale, "scale")
    spacing = 2.0 * scale / (levels - 1) if spacing is None else _check_scale(spacing, "spacing")
    if spacing * (levels - 2) / 2.0 > VALUE_MAX:
        raise ValueError(f"spacing must be at most {2.0 * VALUE_MAX / max(levels - 2, 1):.3g} for {levels} "
                         f"levels (the outer thresholds +-D (N-2)/2 stay within {VALUE_MAX:g}), got {spacing!r}")
    return levels, spacing, scale


def _check_scale(value, name):
    value = float(check_positive(value, name, allow_array=False))
    if not 1.0 / VALUE_MAX <= value <= VALUE_MAX:
        raise ValueError(f"{name} must lie in [{1.0 / VALUE_MAX:g}, {VALUE_MAX:g}], got {value!r}")
    return value


_NAMED = {
    "linear": Linear,
    "relu": ReLU,
    "tanh": Tanh,
    "erf": Erf,
    "hardtanh": HardTanh,
    "sign": lambda: QuantizedActivation(2),
}


def get_activation(activation) -> Activation:
    """Turn a name, an :class:`Activation` or a callable into an :class:`Activation`.

    Names: ``"linear"``, ``"relu"``, ``"tanh"``, ``"erf"``, ``"sign"`` (the 2-level quantized
    activation, ``sign(x)`` with ``sign(0) = 1``) and ``"hardtanh"``.
    """
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        try:
            return _NAMED[activation.lower()]()
        except KeyError:
            raise ValueError(
                f"activation name must be one of {sorted(_NAMED)}, got {activation!r}") from None
    if not callable(activation):
        raise ValueError(f"activation must be a name, an Activation or a callable, got {activation!r}")
    return CallableActivation(activation)


def monte_carlo_kernel(activation, q, c, n_samples=400_000, seed=0):
    r"""Monte Carlo estimate of :math:`\mathbb E[\phi(u_1)\phi(u_2)]`, an independent check of kernels.

    .. math:: (u_1, u_2) = \sqrt q\,\bigl(z_1,\; c z_1 + \sqrt{1-c^2}\, z_2\bigr),\qquad
              \hat K = \frac1n\sum_{k=1}^n \phi(u_{1k})\phi(u_{2k}),\qquad
              \operatorname{se} = \frac{s}{\sqrt n},

    with ``s`` the sample standard deviation of the products. The same ``n_samples`` pairs
    ``(z1, z2)`` serve every ``c`` (common random numbers), so differences between correlations
    are estimated with less noise than the values themselves.

    Parameters
    ----------
    activation : str, Activation or callable
    q : float
        Variance of ``u1`` and ``u2``, ``q > 0``.
    c : array_like
        Correlations in [-1, 1].
    n_samples : int
        Number of Gaussian pairs, ``2 <= n_samples <= 10**8``.
    seed : int
        Seed of the numpy generator, in [0, 2**63 - 1].

    Returns
    -------
    MonteCarloEstimate
        ``mean`` and ``sem`` with the shape of ``c``.

    Examples
    --------
    >>> import numpy as np
    >>> est = monte_carlo_kernel("sign", 1.0, 0.5, n_samples=100_000, seed=1)
    >>> bool(abs(est.z_score(2 / np.pi * np.arcsin(0.5))) < 4)
    True
    """
    act = get_activation(activation)
    q = float(check_positive(q, "q", allow_array=False))
    c = check_correlation(c)
    n_samples = check_int(n_samples, "n_samples", 2, 10**8)
    return gaussian._monte_carlo_kernel(act, q, c, n_samples, check_seed(seed))
