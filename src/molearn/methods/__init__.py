"""One class per multi-objective method; each declares what it needs (:class:`Needs`)."""

from ._base import Inputs, Method, Needs, Output, get, registry
from ._ew import EW
from ._mgda import MGDA

__all__ = ["EW", "MGDA", "Inputs", "Method", "Needs", "Output", "get", "registry"]
