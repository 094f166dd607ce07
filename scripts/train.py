"""Train: ``python scripts/train.py +experiment=ucr_lstm [key=value ...]``; ``-m`` sweeps.

SIGTERM and SIGINT (Ctrl-C) stop at the end of the running batch, write ``on_exception.ckpt`` (resume with
``ckpt_path=last``) and exit with ``128 + signal``: 143 and 130.
"""

from __future__ import annotations

import sys

import hydra
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from seqforge.callbacks import interrupt_exit_code
from seqforge.train import get_metric_value, train


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    if not cfg.train and cfg.get("optimized_metric") is None:
        return None  # a test-only run has no validation metric to report to a sweeper
    return get_metric_value(metrics, cfg.get("optimized_metric"))


if __name__ == "__main__":
    try:
        main()
    except (SIGTERMException, KeyboardInterrupt) as interrupt:
        sys.exit(interrupt_exit_code(interrupt))
