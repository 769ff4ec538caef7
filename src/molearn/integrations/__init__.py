"""Integrations with other training frameworks (each imports its framework only when imported itself).

- :mod:`molearn.integrations.lightning`: :class:`~molearn.integrations.lightning.BalancedModule`, a
  ``LightningModule`` base class that balances K losses with manual optimisation (``pip install
  'molearn[lightning]'``).
"""
