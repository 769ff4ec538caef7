"""Model selection: the epoch of the best validation Δm% is chosen, on constructed histories."""

from __future__ import annotations

import math

import pytest

from molearn.compare import EpochScores, select_epoch, select_single_task_epoch
from molearn.compare._select import BEST_VAL, LAST

HIB = {"acc": True, "err": False}
W = {"acc": 1.0, "err": 1.0}
BASE = {"acc": 0.8, "err": 2.0}


def _h(vals: list[tuple[float, float]], tests: list[tuple[float, float]] | None = None) -> list[EpochScores]:
    tests = tests or [(0.0, 0.0)] * len(vals)
    return [
        EpochScores(i + 1, {"acc": t[0], "err": t[1]}, {"acc": v[0], "err": v[1]})
        for i, (v, t) in enumerate(zip(vals, tests))
    ]


def test_best_validation_delta_m_by_hand() -> None:
    # validation Δm% per epoch (acc ↑ against 0.8, err ↓ against 2.0), (100/2)(-(a-0.8)/0.8 + (e-2)/2):
    # epoch 1: acc 0.7, err 2.0 -> +6.25; epoch 2: acc 0.8, err 1.6 -> -10;
    # epoch 3: acc 0.88, err 1.9 -> -7.5; epoch 4: acc 0.9, err 2.4 -> +3.75.
    # Best: epoch 2, although the accuracy is best at epoch 4.
    hist = _h([(0.7, 2.0), (0.8, 1.6), (0.88, 1.9), (0.9, 2.4)])
    assert select_epoch(hist, BASE, HIB, W) == (1, BEST_VAL)
    # weights move the choice: with err not counted, the best accuracy wins
    assert select_epoch(hist, BASE, HIB, {"acc": 1.0, "err": 0.0}) == (3, BEST_VAL)


def test_ties_take_the_first_and_nan_epochs_are_skipped() -> None:
    hist = _h([(math.nan, 1.0), (0.8, 1.6), (0.8, 1.6), (0.7, 3.0)])
    assert select_epoch(hist, BASE, HIB, W) == (1, BEST_VAL)


def test_last_epoch_without_validation_or_baselines() -> None:
    hist = [EpochScores(1, {"acc": 0.5, "err": 1.0}), EpochScores(2, {"acc": 0.6, "err": 1.0})]
    assert select_epoch(hist, BASE, HIB, W) == (1, LAST)
    assert select_epoch(_h([(0.9, 1.0), (0.1, 9.0)]), None, HIB, W) == (1, LAST)
    assert select_epoch(_h([(math.nan, 1.0), (math.nan, 9.0)]), BASE, HIB, W) == (1, LAST)
    with pytest.raises(ValueError, match="no epochs"):
        select_epoch([], BASE, HIB, W)


def test_single_task_runs_pick_their_own_task_best() -> None:
    hist = _h([(0.5, 9.0), (0.9, 9.0), (0.7, 0.1)])
    assert select_single_task_epoch(hist, ["acc"], HIB, W) == (1, BEST_VAL)  # only acc counts
    assert select_single_task_epoch(hist, ["err"], HIB, W) == (2, BEST_VAL)
    zero = _h([(0.5, 3.0), (0.0, 1.0), (0.4, 2.0)])  # last-epoch reference 0.4 > 0, err 2.0 > 0
    assert select_single_task_epoch(zero, ["err"], HIB, W) == (1, BEST_VAL)
    nonpositive = _h([(0.5, 3.0), (0.6, 1.0), (0.4, 0.0)])  # reference err 0: rank by err alone
    assert select_single_task_epoch(nonpositive, ["err"], HIB, W) == (2, BEST_VAL)
