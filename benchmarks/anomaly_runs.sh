#!/usr/bin/env bash
# The anomaly-detection rows of benchmarks/RESULTS.md: seeds 1-3 of each experiment, one run at a time, then
# the baselines on the same split. Run from the repository root:  nice -n 10 bash benchmarks/anomaly_runs.sh
# (about 35 minutes on 2 shared CPU cores). Each run's metrics.json is kept as
# benchmarks/results/runs/<experiment>-seed<k>.json; `python scripts/results.py summary <experiment>` averages.
set -euo pipefail
export OMP_NUM_THREADS=1
experiments=("${@:-anomaly_yahoo anomaly_yahoo_residual anomaly_mitdb anomaly_mitdb_residual}")
for experiment in ${experiments[@]}; do
    sweep="logs/results/${experiment}"
    rm -rf "${sweep}"
    python scripts/train.py -m "+experiment=${experiment}" trainer.accelerator=cpu seed=1,2,3 \
        "hydra.sweep.dir=${sweep}" extras.print_config=false callbacks.rich_progress_bar=null
    for job in 0 1 2; do
        python scripts/results.py keep "${sweep}/${job}" "${experiment}" "$((job + 1))"
    done
    python scripts/results.py summary "${experiment}"
done
python benchmarks/anomaly_baselines.py
