"""Mean ± half-width of the two-sided 95 % Student-t interval over seeds, for reports and tables.

The t quantile comes from SciPy (``pip install molearn[cli]``), imported when an interval is computed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["fmt_cell", "mean_ci", "t_quantile"]


def t_quantile(df: int, level: float = 0.95) -> float:
    """The two-sided ``level`` quantile of Student's t with ``df`` degrees of freedom; NaN for ``df < 1``."""
    if df < 1:
        return math.nan
    try:
        from scipy import stats
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("confidence intervals need SciPy: pip install molearn[cli]") from exc
    return float(stats.t.ppf(0.5 + level / 2, df))


def mean_ci(values: Iterable[float], level: float = 0.95) -> tuple[float, float, int]:
    """``(mean, half-width of the t-interval, n)`` over the finite values: NaN mean for none, NaN
    half-width for one (no spread can be estimated from a single seed)."""
    vals = [float(v) for v in values if math.isfinite(v)]
    n = len(vals)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(vals) / n
    if n == 1:
        return mean, math.nan, 1
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    return mean, t_quantile(n - 1, level) * sd / math.sqrt(n), n


def fmt_cell(v: object) -> str:
    """A table cell: floats with 4 decimals (1 from 100 on), NaN as empty, anything else as ``str``."""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)
