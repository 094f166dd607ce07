"""Evaluate a checkpoint on its test set: ``python scripts/eval.py ckpt_path=PATH``."""

from __future__ import annotations

import cpu_threads  # scripts/cpu_threads.py, standard library only

cpu_threads.prepare_environment()  # before anything imports torch: libgomp reads its settings once

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from seqforge.evaluate import evaluate  # noqa: E402


@hydra.main(version_base="1.3", config_path="../configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    cpu_threads.set_threads(cfg.get("threads"))
    evaluate(cfg)


if __name__ == "__main__":
    main()
