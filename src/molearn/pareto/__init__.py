"""Pareto fronts: quality indicators (and, as they land, test problems and front exploration)."""

from ._indicators import GD, IGD, GDPlus, Hypervolume, IGDPlus, Indicator, Spacing, Spread

__all__ = ["GD", "IGD", "GDPlus", "Hypervolume", "IGDPlus", "Indicator", "Spacing", "Spread"]
