"""Train OG-Net (or the 2D baseline) on Ray Train and evaluate it.

    python jobs/train_ognet.py [--smoke] [--config FILE] [--model.name og-net-small] ...
    ray job submit --working-dir . -- python jobs/train_ognet.py --data.shards data/lifted/flat
"""

import sys

from mirror3d.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-reid", *sys.argv[1:]]))
