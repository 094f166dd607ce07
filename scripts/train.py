"""Train: ``python scripts/train.py +experiment=ucr_lstm [key=value ...]``; ``-m`` sweeps."""

from __future__ import annotations

import cpu_threads  # scripts/cpu_threads.py, standard library only

cpu_threads.prepare_environment()  # before anything imports torch: libgomp reads its settings once

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from seqforge.train import get_metric_value, train  # noqa: E402


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float:
    cpu_threads.set_threads(cfg.get("threads"))
    metrics = train(cfg)
    return get_metric_value(metrics, cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
