"""seqforge's Optuna sweeper for Hydra: ``hydra/sweeper=seqforge_optuna`` (used by ``configs/hparams_search``).

A namespace-package plugin (``hydra_plugins`` has no ``__init__.py``), shipped with seqforge. It imports
only Hydra, so that Hydra's plugin scan works without Optuna installed; the sweep itself lives in
``seqforge.utils.optuna_sweep`` and needs the ``sweep`` extra.
"""
