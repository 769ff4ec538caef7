"""Pareto fronts: test problems with known fronts, quality indicators and Pareto set learning.

Indicators are computed on request (``Hypervolume(ref).do(F)``), never silently during training.
"""

from ._conditioned import (
    ConditionedLog,
    FiLM,
    FixedPreference,
    PreferenceAsInput,
    PreferenceConditioned,
    append_preference,
    evaluate_conditioned,
    train_conditioned,
)
from ._indicators import GD, IGD, GDPlus, Hypervolume, IGDPlus, Indicator, Spacing, Spread
from ._problems import (
    DTLZ1,
    DTLZ2,
    DTLZ3,
    DTLZ4,
    DTLZ7,
    VLMOP1,
    VLMOP2,
    ZDT1,
    ZDT2,
    ZDT3,
    ZDT4,
    ZDT6,
    Problem,
    problem,
    problem_names,
)
from ._psl import ParetoSetModel, evaluate_psl, evaluation_preferences, train_psl
from ._sweep import SweepResult, make_preference_method, preference_sweep, uniform_preferences

__all__ = [
    "DTLZ1",
    "DTLZ2",
    "DTLZ3",
    "DTLZ4",
    "DTLZ7",
    "GD",
    "IGD",
    "VLMOP1",
    "VLMOP2",
    "ZDT1",
    "ZDT2",
    "ZDT3",
    "ZDT4",
    "ZDT6",
    "ConditionedLog",
    "FiLM",
    "FixedPreference",
    "GDPlus",
    "Hypervolume",
    "IGDPlus",
    "Indicator",
    "ParetoSetModel",
    "PreferenceAsInput",
    "PreferenceConditioned",
    "Problem",
    "Spacing",
    "Spread",
    "SweepResult",
    "append_preference",
    "evaluate_conditioned",
    "evaluate_psl",
    "evaluation_preferences",
    "make_preference_method",
    "preference_sweep",
    "problem",
    "problem_names",
    "train_conditioned",
    "train_psl",
    "uniform_preferences",
]
