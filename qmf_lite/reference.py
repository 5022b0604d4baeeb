"""Reference data the book and the tests compare with, each with its source.

Kept in one place so that a chapter, a test and a benchmark never hold diverging copies.
"""
from __future__ import annotations

__all__ = ["FIG2_LEVELS"]

#: the numbers of levels N of Blumenfeld et al. (2019), Fig. 2: 3..64 and pairs around powers of two
FIG2_LEVELS = tuple(range(3, 65)) + (125, 128, 255, 256, 512, 515, 1024, 1025)
