"""Evaluate a checkpoint on its test set: ``python scripts/eval.py ckpt_path=PATH``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from seqforge.evaluate import evaluate


@hydra.main(version_base="1.3", config_path="../configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
