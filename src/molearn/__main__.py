"""``python -m molearn``: the same as the ``molearn`` command."""

from .cli import run

run()
