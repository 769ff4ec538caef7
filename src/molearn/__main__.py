"""``python -m molearn``: the same as the ``molearn`` command."""

import sys

from .cli import main

sys.exit(main())
