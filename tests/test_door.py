"""Checks at the door: a Fig. 3 run checks each of its arguments once, then works on checked values.

The calls into :mod:`qmf_lite._validate` are counted with ``sys.setprofile`` (and ``threading.setprofile``, for
the grid's worker threads): one call per check, the checks that a check makes itself not counted again. A call
is grouped by the check function and the argument name it names, and by where it is made: in the modules of
the training door (``training.py`` and ``fig3.py``) or in a module they call.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import sys
import threading

import pytest

from qmf_lite import _validate, fig3
from qmf_lite import data as qdata
from qmf_lite.training import run_grid

VALIDATE = os.path.abspath(_validate.__file__)
DOOR = {"training.py", "fig3.py"}


def _small_digits():
    """96 training and 32 test images of the digits: enough for a step of SGD, in milliseconds."""
    full = qdata.load_digits()
    return dataclasses.replace(full, x_train=full.x_train[:96], y_train=full.y_train[:96],
                               x_test=full.x_test[:32], y_test=full.y_test[:32])


def _checks(call):
    """Run ``call()``; the calls into ``_validate`` it made, as two Counters of ``(check, argument name)``:
    those made in the door's modules and those made in the modules they call."""
    door, inner = collections.Counter(), collections.Counter()

    def profile(frame, event, arg):
        if event != "call" or os.path.abspath(frame.f_code.co_filename) != VALIDATE:
            return
        caller = frame.f_back
        if caller is None or os.path.abspath(caller.f_code.co_filename) == VALIDATE:
            return                                      # a check made by a check: part of the first
        name = frame.f_locals.get("name")
        if frame.f_code.co_name == "check_sigmas":      # checks the pair (sigma_w, sigma_b)
            name = "sigma_w, sigma_b"
        where = door if os.path.basename(caller.f_code.co_filename) in DOOR else inner
        where[(frame.f_code.co_name, name)] += 1

    threading.setprofile(profile)
    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    return door, inner


#: the checks of a Fig. 3 run: every argument of the grid that fig3.produce hands on (run_grid's door), and the
#: output path; ``lr`` is the rate's value, checked at each depth (a rule such as "bgs19" gives each its own)
FIG3_CHECKS = {("check_choice", "layout"), ("check_sequence", "levels"), ("check_levels", "levels"),
               ("check_int_sequence", "depths"), ("check_int_sequence", "steps"), ("check_int_range", "width"),
               ("check_choice", "precision"), ("check_positive", "lr"), ("check_int_sequence", "seeds"),
               ("check_int_range", "batch_size"), ("check_momentum", "momentum"), ("check_seed", "seed"),
               ("check_choice", "dataset"), ("check_bool", "cache"), ("check_bool", "progress"),
               ("check_choice", "seeding"), ("check_choice", "update"), ("check_path", "out")}
#: calls into _validate made inside the modules the grid calls to build each network (the activation, its
#: fixed point, the straight-through slope, the staircase tables, the optimal initialization): those modules'
#: own doors. Measured for the run below when training stopped checking again (20); they may only fall.
INNER_AT_MOST = 20


def test_a_tiny_fig3_run_checks_each_argument_once(tmp_path, monkeypatch):
    """fig3.produce on one network (N = 4, depth 2, width 8, one step, 96 images, CPU): before the door, the
    same run made 81 calls into _validate, 57 of them from training and fig3 (steps, layout, width, batch size,
    seed, momentum, depth, ... each checked two to four times); now 17, each argument once."""
    monkeypatch.setenv("QMF_LITE_CACHE", str(tmp_path / "cache"))
    config = {**fig3.profile_config("fast"), "levels": [4], "depths": [2], "seeds": [0], "steps": [1], "width": 8,
              "batch_size": 16}
    data = _small_digits()
    out = tmp_path / "fig3.json"
    door, inner = _checks(lambda: fig3.produce("fast", out, config=config, device="cpu", progress=False, data=data,
                                               max_memory=None))
    assert fig3.load(out)[0].n_nets == 1                  # the run did train and write its network
    assert set(door) == FIG3_CHECKS
    assert {k: n for k, n in door.items() if n != 1} == {}
    assert sum(inner.values()) <= INNER_AT_MOST, inner


def test_a_grid_checks_each_argument_once_whatever_its_size(tmp_path, monkeypatch):
    """run_grid over 2 levels x 2 depths x 2 seeds (8 networks, in two chunks and, on a CPU with several
    threads, in two worker threads): the same checks as one network, except the two that are per entry:
    each level of ``levels`` (2) and the learning rate of each depth (2)."""
    monkeypatch.setenv("QMF_LITE_CACHE", str(tmp_path / "cache"))
    data = _small_digits()
    result = []
    door, _ = _checks(lambda: result.append(run_grid([3, 4], [2, 3], seeds=(0, 1), steps=(1,), width=8, lr=0.015,
                                                     batch_size=16, device="cpu", progress=False, data=data,
                                                     max_memory=None, layout="bgs19")))
    assert result[0].n_nets == 8
    per_entry = {("check_levels", "levels"): 2, ("check_positive", "lr"): 2}
    assert set(door) == FIG3_CHECKS - {("check_path", "out")}
    assert {k: n for k, n in door.items() if n != 1} == per_entry


@pytest.mark.parametrize("bad, message", [({"width": 0}, "^width must be"), ({"lr": -1.0}, "^lr must be"),
                                          ({"seeds": [-1]}, "^seeds must be")])
def test_bad_grid_arguments_are_refused_before_any_training(tmp_path, monkeypatch, bad, message):
    """The door comes first: a bad argument is refused before a data set is loaded or a network is built."""
    monkeypatch.setenv("QMF_LITE_CACHE", str(tmp_path / "cache"))
    config = {**fig3.profile_config("fast"), "levels": [4], "depths": [2], "seeds": [0], "steps": [1], "width": 8,
              "batch_size": 16, **bad}
    monkeypatch.setattr(fig3, "_load_data", lambda *a, **k: pytest.fail("data loaded before the checks"))
    with pytest.raises(ValueError, match=message):
        fig3.run(config, device="cpu", progress=False)
