"""Run a Ray Tune sweep of a spec in configs/sweeps/ (train-reid or train-casl trials).

    python jobs/sweep.py ognet_k [--smoke] [--name N] [--max_concurrent_trials 2]
    ray job submit --working-dir . -- python jobs/sweep.py casl_learning --cpus_per_trial 4 \
        --max_concurrent_trials 8 --out_dir /mnt/shared/runs/sweep

On a cluster, out_dir must be storage every node sees (NFS): the trials write their run
directories there. Results: <out_dir>/<name>/summary.md, trials.parquet, best.yaml, curves.
"""

import sys

from mirror3d.cli import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
