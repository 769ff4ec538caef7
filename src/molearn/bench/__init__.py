"""Benchmarks and toy problems that drive molearn's public API (the ``molearn`` command line uses them)."""

from . import toy

__all__ = ["toy"]
