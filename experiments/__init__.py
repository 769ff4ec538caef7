"""The experiments of molearn's seed papers, one folder each (``experiments/<name>/run.py``, its README
and its committed outputs), on molearn's public API; :mod:`experiments.common` is what they share.

Not part of the installed package. Run one with ``python experiments/<name>/run.py [options]`` or
``scripts/experiment.sh <name> [options]`` (which also installs what it needs).
"""
