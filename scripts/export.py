"""Export a checkpoint: ``python scripts/export.py ckpt_path=PATH format=onnx|pt2 output=PATH``.

See ``configs/export.yaml`` for what the graphs take and what the JSON beside them holds (seq2seq and the
conditional generator: an encoder graph and a one-step decoder graph).
"""

from __future__ import annotations

import cpu_threads  # scripts/cpu_threads.py, standard library only

cpu_threads.prepare_environment()  # before anything imports torch: libgomp reads its settings once

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from seqforge.exporting import export_from_config  # noqa: E402


@hydra.main(version_base="1.3", config_path="../configs", config_name="export")
def main(cfg: DictConfig) -> None:
    print(export_from_config(cfg))


if __name__ == "__main__":
    main()
