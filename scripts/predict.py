"""Predict from a checkpoint alone: ``python scripts/predict.py ckpt_path=PATH input="..."``.

See ``configs/predict.yaml`` for the options (``input_file``, ``output_file``, ``max_len`` ...).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from seqforge.predict import predict_from_config


@hydra.main(version_base="1.3", config_path="../configs", config_name="predict")
def main(cfg: DictConfig) -> None:
    predict_from_config(cfg)


if __name__ == "__main__":
    main()
