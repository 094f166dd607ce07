"""Predict from a checkpoint alone: ``python scripts/predict.py ckpt_path=PATH input="..."``.

See ``configs/predict.yaml`` for the options (``input_file``, ``output_file``, ``max_len`` ...).
"""

from __future__ import annotations

import cpu_threads  # scripts/cpu_threads.py, standard library only

cpu_threads.prepare_environment()  # before anything imports torch: libgomp reads its settings once

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from seqforge.predict import predict_from_config  # noqa: E402


@hydra.main(version_base="1.3", config_path="../configs", config_name="predict")
def main(cfg: DictConfig) -> None:
    cpu_threads.set_threads(cfg.get("threads"))
    predict_from_config(cfg)


if __name__ == "__main__":
    main()
