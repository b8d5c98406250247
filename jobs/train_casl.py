"""Train CASL on Ray Train.

    python jobs/train_casl.py [--smoke] [--config FILE] [--optim.epochs 30] ...
    ray job submit --working-dir . -- python jobs/train_casl.py --data.root data/synthpeople/Market-HQ
"""

import sys

from mirror3d.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-casl", *sys.argv[1:]]))
