"""Sphinx extension: execute the chapters that a build reads several at once, each in its own kernel.

myst-nb executes a book's notebooks one after the other, while Sphinx reads them. With
``execute_notebooks: cache`` in ``_config.yml`` it first looks each notebook up in its jupyter-cache
and executes only what it does not find. This extension fills that cache just before Sphinx reads:

* on ``env-before-read-docs`` it takes the notebooks Sphinx is about to read (all of them with
  ``--all``, the changed ones otherwise) and executes *every one of them afresh*, as myst-nb's
  ``force`` mode would, in ``qmf_execution_jobs`` worker processes, each notebook in its own
  kernel, in the notebook's folder, with the book's timeout and ``allow_errors``; the kernels share
  out the cores (``OMP_NUM_THREADS`` and its kin are set to cores / jobs);
* each executed notebook is stored in the cache, replacing what was there, so that myst-nb then
  renders exactly these outputs; a notebook whose execution fails is not stored, and myst-nb
  executes it again by itself and fails the build with its traceback, as before.

So a notebook that is read is always executed by this build (a cached result of an older
``qmf_lite`` is never shown), and a notebook that is not read is not executed, exactly as with
``force``. ``qmf_execution_jobs`` (``sphinx: config:``) is the number of workers; ``None`` (the
default): one per core, at most 4; ``1`` leaves all execution to myst-nb.
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import pathlib
import time

from sphinx.util import logging

logger = logging.getLogger(__name__)

#: the most chapters executed at once by default (each kernel holds a chapter's arrays)
MAX_DEFAULT_JOBS = 4


def jobs_for(setting, cpu_count=None):
    """Workers for ``qmf_execution_jobs = setting``: the setting, or one per core (at most 4) for None."""
    if setting is None:
        return max(1, min(MAX_DEFAULT_JOBS, cpu_count or os.cpu_count() or 1))
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise ValueError(f"qmf_execution_jobs must be None or an integer >= 1, got {setting!r}")
    return setting


def _worker_init(threads):
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)


def _execute(path, timeout, allow_errors):
    """Execute the notebook at ``path`` in its folder; ``(notebook or None, seconds, error text)``."""
    import nbformat
    from jupyter_cache.executors.utils import single_nb_execution

    nb = nbformat.read(path, as_version=4)
    result = single_nb_execution(nb, cwd=str(pathlib.Path(path).parent), timeout=timeout,
                                 allow_errors=allow_errors, meta_override=True)
    if result.err is not None:
        return None, result.time, result.exc_string
    return result.nb, result.time, None


def _notebooks(app, env, docnames):
    """The notebooks among ``docnames`` that myst-nb would execute, slowest (largest) first."""
    found = []
    for doc in docnames:
        path = pathlib.Path(env.doc2path(doc))
        if path.suffix == ".ipynb" and path.exists():
            found.append((doc, path))
    return sorted(found, key=lambda item: -item[1].stat().st_size)


def _forget(cache, path):
    """Drop the cached outputs of the notebook at ``path`` (if any), so that myst-nb executes it."""
    try:
        record = cache.match_cache_file(str(path))
    except KeyError:
        return
    cache.remove_cache(record.pk)


def execute_before_reading(app, env, docnames):
    if app.config.nb_execution_mode != "cache":
        return
    from jupyter_cache import get_cache

    jobs = jobs_for(app.config.qmf_execution_jobs)
    notebooks = _notebooks(app, env, docnames)
    cache = get_cache(app.config.nb_execution_cache_path or ".jupyter_cache")
    if jobs < 2 or len(notebooks) < 2:
        for _, path in notebooks:        # force, not cache: what is read is executed by this build
            _forget(cache, path)
        return
    _execute_all(app, cache, notebooks, jobs)


def _execute_all(app, cache, notebooks, jobs):
    from jupyter_cache.base import CacheBundleIn

    threads = max(1, (os.cpu_count() or 1) // jobs)
    logger.info(f"[parallel_execute] executing {len(notebooks)} notebooks, {jobs} at once ({threads} thread(s) each)")
    t0 = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_worker_init, initargs=(threads,)) as pool:
        futures = {pool.submit(_execute, str(path), app.config.nb_execution_timeout,
                               app.config.nb_execution_allow_errors): (doc, path) for doc, path in notebooks}
        for done in concurrent.futures.as_completed(futures):
            doc, path = futures[done]
            nb, seconds, error = done.result()
            if error is not None:
                _forget(cache, path)          # no older outputs stand in for these
                logger.info(f"[parallel_execute] {doc} failed after {seconds:.1f} s; myst-nb executes it again "
                            "and reports the error")
                continue
            record = cache.add_nb_to_project(str(path))
            cache.cache_notebook_bundle(CacheBundleIn(nb, record.uri, data={"execution_seconds": seconds}),
                                        check_validity=False, overwrite=True)
            logger.info(f"[parallel_execute] {doc}: executed in {seconds:.1f} s")
    logger.info(f"[parallel_execute] {len(notebooks)} notebooks in {time.perf_counter() - t0:.1f} s")


def setup(app):
    app.add_config_value("qmf_execution_jobs", None, "", types=(type(None), int))
    app.connect("env-before-read-docs", execute_before_reading)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
