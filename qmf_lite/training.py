r"""Quantized MLPs trained with SGD, many at once, and a cached grid runner.

A batch of ``B`` networks of equal depth and width is stored as stacked weight tensors and run
with batched matrix products, so a grid over levels, weight scales and seeds costs one forward
pass per depth. Network ``b`` computes

.. math:: h^1 = W^{\rm in}_b x,\quad h^{l+1} = W^{l+1}_b\,\phi_b(h^l) + b^{l+1}_b,\quad
          f_b(x) = W^{\rm out}_b\,\phi_b(h^L),

with :math:`W^{l}_{ij}\sim\mathcal N(0,\sigma_{w,b}^2/n)`, biases :math:`\mathcal N(0,\sigma_{b,b}^2)`,
the first layer scaled so that :math:`h^1` has the variance :math:`q^*` of the fixed point
(inputs are standardised), and each :math:`\phi_b` a quantized activation with its own straight-
through slope (:mod:`qmf_lite.ste`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time

import numpy as np
import torch

from ._progress import progress as _progress
from ._validate import check_int, check_levels, check_positive
from .activations import QuantizedActivation
from .maps import fixed_point_q
from .simulate import default_device
from .ste import ste_clip, ste_quantize, ste_slope
from .tradeoff import optimal_init

__all__ = ["NetSpec", "QuantizedMLPBatch", "train", "run_grid", "GridResult", "halfway_depth"]


@dataclasses.dataclass(frozen=True)
class NetSpec:
    """One network of a batch: its activation, initialization and seed (``slope=None``: chi_1 = 1)."""

    levels: int
    sigma_w: float
    sigma_b: float = 0.0
    seed: int = 0
    slope: float | None = None
    spacing: float | None = None
    scale: float = 1.0

    @classmethod
    def optimal(cls, levels, seed=0, **kw):
        """The network initialised by :func:`qmf_lite.optimal_init`."""
        return cls(levels, optimal_init(levels).sigma_w, 0.0, seed, **kw)


class QuantizedMLPBatch(torch.nn.Module):
    """``len(specs)`` quantized MLPs of the same depth and width, evaluated together.

    ``forward(x)`` takes ``x`` of shape ``(batch, features)`` (shared) or
    ``(B, batch, features)`` and returns logits of shape ``(B, batch, n_out)``.
    """

    def __init__(self, specs, n_in, n_out, depth, width, device=None, dtype=torch.float32):
        super().__init__()
        self.specs = list(specs)
        self.depth = check_int(depth, "depth", 1)
        self.width = check_int(width, "width", 1)
        dev = default_device(device)
        B = len(self.specs)
        acts = [QuantizedActivation(s.levels, s.spacing, s.scale) for s in self.specs]
        q_star = [float(fixed_point_q(a, s.sigma_w, s.sigma_b)) for a, s in zip(acts, self.specs)]
        slopes = [ste_slope(a, s.sigma_w, s.sigma_b) if s.slope is None else s.slope for a, s in zip(acts, self.specs)]
        col = lambda v: torch.tensor(v, dtype=dtype, device=dev).view(B, 1, 1)  # noqa: E731
        for name, v in (("levels", [a.levels for a in acts]), ("spacing", [a.spacing for a in acts]),
                        ("scale", [a.scale for a in acts]), ("slope", slopes), ("clip", [ste_clip(a) for a in acts]),
                        ("sigma_w", [s.sigma_w for s in self.specs]), ("sigma_b", [s.sigma_b for s in self.specs]),
                        ("q_star", q_star)):
            self.register_buffer(name, col(v))
        gens = [torch.Generator(device="cpu").manual_seed(int(s.seed)) for s in self.specs]

        def stack(shape, std):
            return torch.stack([torch.randn(*shape, generator=g) * sd for g, sd in zip(gens, std)]).to(dev, dtype)

        sq = [math.sqrt(q) for q in q_star]
        self.w_in = torch.nn.Parameter(stack((n_in, width), [s / math.sqrt(n_in) for s in sq]))
        self.weights = torch.nn.ParameterList(
            [torch.nn.Parameter(stack((width, width), [s.sigma_w / math.sqrt(width) for s in self.specs]))
             for _ in range(depth - 1)])
        self.biases = torch.nn.ParameterList(
            [torch.nn.Parameter(stack((1, width), [s.sigma_b for s in self.specs])) for _ in range(depth - 1)])
        self.w_out = torch.nn.Parameter(stack((width, n_out), [1 / math.sqrt(width)] * B))
        self.b_out = torch.nn.Parameter(torch.zeros(B, 1, n_out, device=dev, dtype=dtype))

    def phi(self, h):
        return ste_quantize(h, self.levels, self.spacing, self.scale, self.slope, self.clip)

    def preactivations(self, x):
        """The list ``[h^1, ..., h^L]``, each of shape ``(B, batch, width)``."""
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(len(self.specs), -1, -1)
        hs = [torch.bmm(x, self.w_in)]
        for w, b in zip(self.weights, self.biases):
            hs.append(torch.baddbmm(b, self.phi(hs[-1]), w))
        return hs

    def readout(self, h_last):
        r"""Logits :math:`\phi(h^L) W^{\rm out} + b^{\rm out}` from the last pre-activations, ``(B, batch, n_out)``."""
        return torch.baddbmm(self.b_out, self.phi(h_last), self.w_out)

    def forward(self, x):
        return self.readout(self.preactivations(x)[-1])

    def preactivation_grads(self, x, output=None):
        r"""Pre-activations :math:`h^l` and the gradients :math:`\partial f/\partial h^l`, through the STE.

        ``f`` is the sum over the inputs of logit ``output`` (of all logits if ``None``). Inputs do
        not interact, so row ``k`` of each gradient is input ``k``'s own gradient
        :math:`\partial f(x_k)/\partial h^l(x_k)`. The parameters' ``.grad`` are left untouched.

        Returns
        -------
        hs, grads : lists of ``depth`` tensors of shape ``(B, batch, width)`` (detached)
        """
        hs = self.preactivations(x)
        out = self.readout(hs[-1])
        f = out.sum() if output is None else out[..., output].sum()
        grads = torch.autograd.grad(f, hs)
        return [h.detach() for h in hs], [g.detach() for g in grads]

    def gradient_norms(self, x, output=None):
        r""":math:`\|\partial f/\partial h^l\|` for each network and layer ``l = 1..L``: an array ``(B, depth)``.

        See :meth:`preactivation_grads` for ``f``. Through ``L`` layers the squared norm changes on
        average by :math:`\chi_1^L` (chapter on gradients).
        """
        _, grads = self.preactivation_grads(x, output)
        return torch.stack([g.norm(dim=(1, 2)) for g in grads], dim=1).cpu().numpy()


def _accuracy(model, x, y, chunk=4096):
    with torch.no_grad():
        correct = torch.zeros(len(model.specs), device=x.device)
        for s in range(0, len(y), chunk):
            correct += (model(x[s:s + chunk]).argmax(-1) == y[s:s + chunk]).float().sum(-1)
    return (correct / len(y)).cpu().numpy()


def train(model, data, steps, lr=0.01, batch_size=128, seed=0, progress=False):
    """Train every network of ``model`` with plain SGD on cross-entropy, in lockstep.

    The loss is the sum of the networks' mean losses, so each network receives exactly its own
    gradient. Returns ``{step: (train_acc, test_acc)}`` (arrays over networks) at each step in
    ``steps`` (a sorted list of step counts).
    """
    steps = sorted(int(s) for s in steps)
    dev = model.w_out.device
    x_tr, y_tr, x_te, y_te = (t.to(dev) for t in (data.x_train, data.y_train, data.x_test, data.y_test))
    opt = torch.optim.SGD(model.parameters(), lr=lr, foreach=True)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    record = {}
    it = _progress(range(1, steps[-1] + 1), progress, desc=f"depth {model.depth}", leave=False)
    if 0 in steps:
        record[0] = (_accuracy(model, x_tr, y_tr), _accuracy(model, x_te, y_te))
    B = len(model.specs)
    for step in it:
        idx = torch.randint(len(y_tr), (batch_size,), generator=gen).to(dev)
        logits = model(x_tr[idx])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y_tr[idx].repeat(B),
                                                 reduction="sum") / batch_size
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step in steps:
            record[step] = (_accuracy(model, x_tr, y_tr), _accuracy(model, x_te, y_te))
    return record


@dataclasses.dataclass
class GridResult:
    """Rows of a grid run: one dict per (levels, depth, sigma_w, seed, step)."""

    rows: list
    config: dict
    seconds: float

    def table(self, value="test_acc", step=None, by="levels"):
        """``(keys, depths, array[keys, depths])`` of ``value`` at ``step``, averaged over the other
        grid axes (seeds, and ``sigma_w`` or ``levels``); ``by`` is ``"levels"`` or ``"sigma_w"``."""
        if by not in ("levels", "sigma_w"):
            raise ValueError(f"by must be 'levels' or 'sigma_w', got {by!r}")
        step = max(r["step"] for r in self.rows) if step is None else step
        rows = [r for r in self.rows if r["step"] == step]
        keys = sorted({r[by] for r in rows})
        depths = sorted({r["depth"] for r in rows})
        grid = np.full((len(keys), len(depths)), np.nan)
        for i, k in enumerate(keys):
            for j, d in enumerate(depths):
                vals = [r[value] for r in rows if r[by] == k and r["depth"] == d]
                if vals:
                    grid[i, j] = float(np.mean(vals))
        return keys, depths, grid


def halfway_depth(depths, accuracy, chance):
    r"""The depth at which accuracy falls halfway from its best value to ``chance``.

    Beyond the best depth, the first depth whose accuracy is below
    :math:`\text{chance} + (\max - \text{chance})/2` and the one before it bracket the crossing,
    interpolated linearly in :math:`\log L`. NaN if the accuracy never falls that low.
    """
    depths, accuracy = np.asarray(depths, float), np.asarray(accuracy, float)
    half = chance + 0.5 * (accuracy.max() - chance)
    best = int(np.argmax(accuracy))
    below = [j for j in range(best + 1, len(depths)) if accuracy[j] < half]
    if not below:
        return float("nan")
    j = below[0]
    t = (accuracy[j - 1] - half) / (accuracy[j - 1] - accuracy[j])
    return float(np.exp(np.log(depths[j - 1]) + t * (np.log(depths[j]) - np.log(depths[j - 1]))))


def _key(config):
    from . import __version__

    blob = json.dumps({"v": __version__, **config}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def run_grid(levels, depths, *, sigma_w=None, seeds=(0,), steps=(100, 200), width=64, lr=0.01, batch_size=128,
             dataset="digits", device=None, cache=True, progress=True, data=None):
    """Train quantized MLPs over a grid of levels x depths (x sigma_w x seeds) and record accuracy.

    Parameters
    ----------
    levels, depths : sequences of int
    sigma_w : None or sequence of float
        ``None``: each ``N`` at its optimal initialization (:func:`qmf_lite.optimal_init`);
        otherwise every value for every ``N``.
    seeds : sequence of int
        Independent initializations (and data orders) per cell.
    steps : sequence of int
        Step counts at which train and test accuracy are recorded.
    dataset : {"digits", "mnist"}
        Which data set to load; ``data`` may pass a loaded :class:`~qmf_lite.Dataset` instead.
    cache : bool
        Store each depth's results under :func:`qmf_lite.cache_dir` ``/ "grid"``, keyed by
        a hash of every input, and reuse them.

    Returns
    -------
    GridResult
    """
    from .data import cache_dir, load_dataset

    levels = [check_levels(n) for n in levels]
    depths = [check_int(int(d), "depths", 1) for d in depths]
    steps = sorted({check_int(int(s), "steps", 1) for s in steps})
    width = check_int(width, "width", 1)
    lr = float(check_positive(lr, "lr", allow_array=False))
    if sigma_w is not None:
        sigma_w = [float(check_positive(s, "sigma_w", allow_array=False)) for s in sigma_w]
    dev = default_device(device)
    data = load_dataset(dataset) if data is None else data
    specs = [NetSpec.optimal(n, seed) if sigma_w is None else NetSpec(n, sw, 0.0, seed)
             for n in levels for sw in ([None] if sigma_w is None else sigma_w) for seed in seeds]
    rows, t0 = [], time.perf_counter()
    for depth in _progress(depths, progress, desc="depths"):
        config = {"specs": [dataclasses.asdict(s) for s in specs], "depth": depth, "steps": steps, "width": width,
                  "lr": lr, "batch_size": batch_size, "dataset": data.name, "n_train": len(data.y_train)}
        path = cache_dir("grid") / f"{_key(config)}.json" if cache else None
        if path is not None and path.exists():
            rows.extend(json.loads(path.read_text()))
            continue
        torch.manual_seed(depth)
        model = QuantizedMLPBatch(specs, data.n_features, data.n_classes, depth, width, device=dev)
        record = train(model, data, steps, lr=lr, batch_size=batch_size, seed=depth)
        new = [{"levels": s.levels, "sigma_w": s.sigma_w, "seed": s.seed, "depth": depth, "step": step,
                "train_acc": float(tr[b]), "test_acc": float(te[b])}
               for step, (tr, te) in record.items() for b, s in enumerate(specs)]
        if path is not None:
            path.write_text(json.dumps(new))
        rows.extend(new)
    return GridResult(rows, {"levels": levels, "depths": depths, "sigma_w": sigma_w, "seeds": list(seeds),
                             "steps": steps, "width": width, "lr": lr, "dataset": data.name}, time.perf_counter() - t0)
