"""Reference data the book and the tests compare with, each with its source.

Kept in one place so that a chapter, a test and a benchmark never hold diverging copies. Every
entry says where it comes from; nothing here is typed from memory of a paper's PDF:

* ``PAPER_*``: stated in the abstract of Blumenfeld, Gilboa & Soudry (2019), "A Mean Field Theory of
  Quantized Deep Networks: The Quantization-Depth Trade-Off", NeurIPS 32 (arXiv:1906.00771),
  as printed on the proceedings page and on arXiv.
* ``AUTHORS_*``: printed by the authors' public notebook
  ``jupyter-examples/Optimal_Spacing_Analysis.ipynb`` of https://github.com/yanivbl6/quantized_meanfield
  (commit a291196), the code behind the paper's Fig. 2. It maximises chi(0) over a grid of 2000
  normalized spacings in [0, 2] (step 2/1999) in float32, so its optimal spacings are grid points
  (within one step of the exact maximiser) and its ``1 - chi_max`` agrees with the exact value
  to about one unit in the sixth decimal.

Exact values (``qmf_lite.chi_max``) are ours; ``tests/test_reference.py`` compares them with these.
"""
from __future__ import annotations

__all__ = ["FIG2_LEVELS", "PAPER_DEPTH_EXPONENT", "AUTHORS_FIG2_VALUES", "AUTHORS_FIG2_FITS", "AUTHORS_GRID_STEP",
           "AUTHORS_SOURCE"]

#: where the ``AUTHORS_*`` values were read
AUTHORS_SOURCE = ("github.com/yanivbl6/quantized_meanfield, jupyter-examples/Optimal_Spacing_Analysis.ipynb "
                  "(commit a291196)")

#: the numbers of levels N of the authors' Fig. 2 notebook: every N from 3 to 63 (even ones 4..62, odd
#: ones 3..63) and eight larger values around powers of two; 69 in all (N = 64 is not among them)
FIG2_LEVELS = tuple(range(3, 64)) + (125, 128, 255, 256, 512, 515, 1024, 1025)

#: the exponent of the abstract, :math:`L_{\max}\propto N^{1.82}` (asymptotically, as the paper puts it)
PAPER_DEPTH_EXPONENT = 1.82

#: the spacing grid of the authors' notebook: ``torch.linspace(0.0, 2.0, 2000)``
AUTHORS_GRID_STEP = 2.0 / 1999

#: N -> (1 - chi_max, D~_opt) as the authors' notebook prints them ("%.06f"); D~_opt is a grid point
AUTHORS_FIG2_VALUES = {
    3: (0.190174, 1.223612), 4: (0.118846, 0.995498), 5: (0.082178, 0.842421), 6: (0.060657, 0.734367),
    7: (0.046860, 0.650325), 8: (0.037440, 0.586293), 9: (0.030696, 0.534267), 10: (0.025687, 0.490245),
    11: (0.021856, 0.454227), 12: (0.018853, 0.423212), 13: (0.016452, 0.397199), 14: (0.014501, 0.374187),
    15: (0.012890, 0.353177), 16: (0.011543, 0.335168), 17: (0.010405, 0.319160), 18: (0.009434, 0.304152),
    19: (0.008598, 0.291146), 20: (0.007873, 0.279140), 21: (0.007239, 0.268134), 22: (0.006682, 0.258129),
    23: (0.006189, 0.248124), 24: (0.005751, 0.239120), 25: (0.005360, 0.231116), 26: (0.005008, 0.224112),
    27: (0.004692, 0.217109), 28: (0.004406, 0.210105), 29: (0.004146, 0.204102), 30: (0.003909, 0.199100),
    31: (0.003693, 0.193097), 32: (0.003495, 0.188094), 33: (0.003313, 0.183092), 34: (0.003146, 0.179090),
    35: (0.002991, 0.174087), 36: (0.002848, 0.170085), 37: (0.002716, 0.166083), 38: (0.002593, 0.163082),
    39: (0.002477, 0.159080), 40: (0.002371, 0.155078), 41: (0.002271, 0.152076), 42: (0.002176, 0.149075),
    43: (0.002089, 0.146073), 44: (0.002007, 0.143072), 45: (0.001930, 0.141071), 46: (0.001857, 0.138069),
    47: (0.001788, 0.136068), 48: (0.001724, 0.133067), 49: (0.001663, 0.131066), 50: (0.001605, 0.129065),
    51: (0.001550, 0.127064), 52: (0.001498, 0.124062), 53: (0.001449, 0.122061), 54: (0.001402, 0.121061),
    55: (0.001358, 0.118059), 56: (0.001316, 0.117059), 57: (0.001275, 0.115058), 58: (0.001237, 0.113057),
    59: (0.001200, 0.111056), 60: (0.001165, 0.110055), 61: (0.001132, 0.109055), 62: (0.001100, 0.107054),
    63: (0.001070, 0.105053), 125: (0.000318, 0.058029), 128: (0.000304, 0.057029), 255: (0.000088, 0.031016),
    256: (0.000088, 0.031016), 512: (0.000025, 0.017009), 515: (0.000025, 0.017009), 1024: (0.000007, 0.009005),
    1025: (0.000007, 0.009005),
}

#: the notebook's straight-line fits of ln(1 - chi_max) and ln(D~_opt) against ln(N + 1) over FIG2_LEVELS
#: (scipy.stats.linregress on its grid values): (slope, intercept, standard error of the slope)
AUTHORS_FIG2_FITS = {"gap": (-1.8172, 0.7100, 0.0030), "spacing": (-0.8790, 1.4025, 0.00066)}
