"""Train: ``python scripts/train.py +experiment=ucr_lstm [key=value ...]``; ``-m`` sweeps.

SIGTERM and SIGINT (Ctrl-C) stop at the end of the running batch, write ``on_exception.ckpt`` (resume with
``ckpt_path=last``) and exit with ``128 + signal``: 143 and 130. A command refused for its config (a wrong
key, a refused resume) leaves no run folder behind (one that already held a run is kept as it was).
"""

from __future__ import annotations

import cpu_threads  # scripts/cpu_threads.py, standard library only

cpu_threads.prepare_environment()  # before anything imports torch: libgomp reads its settings once

import sys  # noqa: E402

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from lightning.pytorch.utilities.exceptions import SIGTERMException  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from seqforge.callbacks import interrupt_exit_code  # noqa: E402
from seqforge.train import get_metric_value, remove_unused_run_folder, train, validated  # noqa: E402
from seqforge.utils.config import ConfigError  # noqa: E402


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    cpu_threads.set_threads(cfg.get("threads"))
    try:
        metrics = train(cfg)
    except ConfigError:
        if HydraConfig.get().mode == RunMode.RUN:  # a sweep's job folders are the sweeper's record
            remove_unused_run_folder(HydraConfig.get().runtime.output_dir, cfg.task_name, cfg.paths.log_dir)
        raise
    if not cfg.train and cfg.get("optimized_metric") is None:
        return None  # a test-only run has no validation metric to report to a sweeper
    if not validated(metrics) and HydraConfig.get().mode == RunMode.RUN:
        return None  # stopped before the first validation (train() said so); no sweeper waits for a value
    return get_metric_value(metrics, cfg.get("optimized_metric"))


if __name__ == "__main__":
    try:
        main()
    except (SIGTERMException, KeyboardInterrupt) as interrupt:
        sys.exit(interrupt_exit_code(interrupt))
