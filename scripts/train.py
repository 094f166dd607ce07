"""Train: ``python scripts/train.py +experiment=ucr_lstm [key=value ...]``; ``-m`` sweeps."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from seqforge.train import get_metric_value, train


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float:
    metrics = train(cfg)
    return get_metric_value(metrics, cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
