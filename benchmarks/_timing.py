"""What the benchmarks share: the fastest of a few runs (run as ``python benchmarks/<name>.py``)."""
from __future__ import annotations

import time


def best_of(fn, repeat=3):
    """The shortest wall time of ``repeat`` calls of ``fn()``, in seconds (the least disturbed run)."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)
